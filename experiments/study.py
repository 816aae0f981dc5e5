"""The with/without-CPC study as one document, rebuilt from the results committed under docs/results.

The study has three parts, each a folder of runs laid out as a comparison
(``runs/ENV/ARM/seed_S``): ``calibration`` (single runs that chose the budgets and showed the
memory task needs memory), ``pilot`` (the CPC settings, on tuning seeds) and ``study`` (the
arms at the chosen settings, on fresh seeds). :func:`write_study_document` writes
``rl_study.md`` with their tables and figures, the hand-written notes of ``study_notes.md``,
and the CPU hours each part took.
"""

from __future__ import annotations

import json
import platform
from pathlib import Path

import numpy as np
import pandas as pd

from cpc_rl.experiments.compare import find_jobs
from cpc_rl.experiments.config import RunError
from cpc_rl.experiments.files import save_figure_atomically, write_text_atomically
from cpc_rl.experiments.report import write_report
from cpc_rl.experiments.runs import cpu_hours, episode_curve, read_status

PARTS = ("calibration", "pilot", "study")
CALIBRATION_BIN = 25_000


def part_hours(folder: Path) -> tuple[int, float]:
    """Number of runs and their CPU hours (each run uses one core: one torch thread, envs in-process)."""
    # Set-aside (stale) runs cost hours too.
    run_dirs = [path.parent for path in folder.glob("runs/*/*/seed_*/config.yaml")]
    return len(run_dirs), sum(cpu_hours(run_dir) for run_dir in run_dirs)


def calibration_table(folder: Path, bin_steps: int = CALIBRATION_BIN) -> tuple[str, pd.DataFrame]:
    """Success rate of the training episodes per ``bin_steps`` span, one row per calibration run."""
    records, reached = [], {}
    for job in find_jobs(folder):
        episodes = episode_curve(job.run_dir)
        if episodes.empty:
            continue
        key = (job.config.env.removeprefix("MiniWorld-"), f"{job.arm} ({job.config.algo})")
        reached[key] = f"{int(episodes['step'].max())} ({read_status(job.run_dir).get('state', '?')})"
        # An episode that ends past the budget (the last rollout) counts in the last span.
        last_span = max(int(job.config.steps // bin_steps) - 1, 0)
        spans = (episodes["step"] // bin_steps).astype(int).clip(upper=last_span)
        for span, rate in episodes["return"].gt(0).groupby(spans).mean().items():
            records.append(
                {"env": job.config.env, "run": job.arm, "until_step": (span + 1) * bin_steps, "success": rate}
            )
    table = pd.DataFrame(records)
    if table.empty:
        return "No calibration run has episodes yet.", table
    table["task"] = table["env"].str.removeprefix("MiniWorld-")
    table["label"] = [f"{run} ({algo})" for run, algo in zip(table["run"], _algos(folder, table), strict=True)]
    wide = table.pivot_table(index=["task", "label"], columns="until_step", values="success", sort=False)
    columns = list(wide.columns)
    lines = ["| task | run | steps reached | " + " | ".join(f"≤{c // 1000}k" for c in columns) + " |"]
    lines.append("|" + "---|" * (3 + len(columns)))
    for (task, label), values in wide.iterrows():
        cells = " | ".join("–" if np.isnan(v) else f"{v:.2f}" for v in values)
        lines.append(f"| {task} | {label} | {reached[(task, label)]} | {cells} |")
    return "\n".join(lines), table


def _algos(folder: Path, table: pd.DataFrame) -> list[str]:
    algos = {(job.config.env, job.arm): job.config.algo for job in find_jobs(folder)}
    return [algos[(env_id, run)] for env_id, run in zip(table["env"], table["run"], strict=True)]


def plot_calibration(records: pd.DataFrame, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    env_ids = list(dict.fromkeys(records["env"]))
    figure, axes = plt.subplots(1, len(env_ids), figsize=(4.6 * len(env_ids), 3.3), squeeze=False)
    for axis, env_id in zip(axes[0], env_ids, strict=True):
        for run, group in records[records["env"] == env_id].groupby("run"):
            axis.plot(group["until_step"], group["success"], marker="o", label=run)
        if env_id.endswith("SignMemory-v0"):
            axis.axhline(1 / 3, color="black", linestyle=":", label="best without memory (1/3)")
        axis.set_title(env_id.removeprefix("MiniWorld-"), fontsize=10)
        axis.set_xlabel("env steps")
        axis.set_ylabel("training-episode success")
        axis.set_ylim(-0.02, 1.02)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7)
    figure.tight_layout()
    save_figure_atomically(figure, path)
    plt.close(figure)
    return path


def write_study_document(root: Path) -> Path:
    """
    Rebuild ``root/rl_study.md`` (and the reports of the pilot and the study) from ``root``.

    :param root: the results folder (``docs/results``), holding ``calibration/``, ``pilot/``, ``study/``.
    """
    root = Path(root)
    present = [part for part in PARTS if (root / part / "runs").is_dir()]
    if not present:
        raise RunError(f"{root} holds none of {', '.join(f'{part}/runs' for part in PARTS)}")
    notes = root / "study_notes.md"
    lines = ["# Does CPC help the agent? The with/without study", ""]
    lines += [notes.read_text().strip(), ""] if notes.is_file() else []
    hours = {part: part_hours(root / part) for part in present}
    lines += ["## Cost", "", "| part | runs | CPU hours |", "|---|---|---|"]
    lines += [f"| {part} | {count} | {spent:.1f} |" for part, (count, spent) in hours.items()]
    total = sum(spent for _, spent in hours.values())
    lines += [
        f"| all | {sum(count for count, _ in hours.values())} | {total:.1f} |",
        "",
        "CPU hours are the runs' wall hours: a run uses about one core (one torch thread, envs in-process; "
        f"the first calibration runs used subprocess envs). The machine: {platform.machine()}, 2 cores, no GPU.",
        "",
    ]
    if "calibration" in present:
        table, records = calibration_table(root / "calibration")
        plot_calibration(records, root / "calibration" / "calibration.png")
        lines += [
            "## Calibration: budgets, and a memory task that needs memory",
            "",
            f"Success rate of the training episodes in each {CALIBRATION_BIN // 1000}k-step span (plain agents, "
            "no CPC, seed 100; 'running' = stopped early once the answer was clear).",
            "",
            table,
            "",
            "![calibration](calibration/calibration.png)",
            "",
        ]
    for part, title in (("pilot", "Pilot: the CPC settings (tuning seeds)"), ("study", "The study (fresh seeds)")):
        if part not in present:
            continue
        jobs = find_jobs(root / part)
        lines += [f"## {title}", ""]
        try:
            write_report(jobs, root / part, title=title)
        except RunError as error:
            lines += [f"No finished run yet ({error}).", ""]
            continue
        finished = sum(job.finished for job in jobs)
        lines += [
            f"{finished} of {len(jobs)} runs finished; the full report with the per-task tables, "
            f"differences to the baseline and the aggregate: [{part}/report/README.md]({part}/report/README.md).",
            "",
            f"![{part} curves]({part}/report/curves.png)",
            "",
            _summary_table(root / part / "report" / "scores.csv"),
            "",
        ]
    path = root / "rl_study.md"
    write_text_atomically(path, "\n".join(lines))
    return path


def _summary_table(scores_path: Path) -> str:
    """
    Per task and arm: seeds, mean final return, AUC and success, CPC accuracy at k=1, and the probes
    of ``c_t`` (position and heading R², over the probed seeds).
    """
    scores = pd.read_csv(scores_path)
    rows = [
        "| task | arm | seeds | final return (mean) | AUC (mean) | final success | CPC acc. k=1 "
        "| probe c→position R² | probe c→heading R² |"
    ]
    rows.append("|---|---|---|---|---|---|---|---|---|")

    def mean_of(group: pd.DataFrame, key: str) -> str:
        values = group.get(key, pd.Series(dtype=float))
        return f"{values.mean():.2f}" if values.notna().any() else "–"

    for (env_id, arm), group in scores.groupby(["env", "arm"], sort=False):
        figures = " | ".join(mean_of(group, key) for key in ("cpc_accuracy_k1", "probe_c_position", "probe_c_heading"))
        rows.append(
            f"| {env_id.removeprefix('MiniWorld-')} | {arm} | {len(group)} | {group['final_return'].mean():.3f} | "
            f"{group['auc'].mean():.3f} | {group['final_success'].mean():.2f} | {figures} |"
        )
    return "\n".join(rows)


def status_summary(root: Path) -> str:
    """One line per part: finished / started runs (for the CLI)."""
    parts = []
    for part in PARTS:
        configs = [c for c in (Path(root) / part).glob("runs/*/*/seed_*/config.yaml") if ".stale-" not in c.parent.name]
        if configs:
            done = sum(
                json.loads((c.parent / "status.json").read_text()).get("state") == "finished"
                for c in configs
                if (c.parent / "status.json").is_file()
            )
            parts.append(f"{part}: {done}/{len(configs)} finished")
    return "; ".join(parts) if parts else "no runs"
