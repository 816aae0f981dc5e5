"""The report of a comparison, written from its folder alone: tables per task and across tasks,
the arms by their settings, learning curves, performance profiles, cost and pre-registered goals."""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from cpc_rl.envs.vizdoom import VIZDOOM_KINDS
from cpc_rl.experiments.compare import Job, probe_table
from cpc_rl.experiments.config import RunError
from cpc_rl.experiments.files import save_figure_atomically, write_text_atomically
from cpc_rl.experiments.goals import goals_section, read_goals
from cpc_rl.experiments.record import PROVENANCE_FILE, agent_defining
from cpc_rl.experiments.runs import cpu_hours, episode_curve, read_settings, read_status, training_log
from cpc_rl.experiments.stats import bootstrap_ci, difference_ci, iqm, probability_of_improvement

CURVE_BINS = 20
ARM_COLOURS = ("tab:gray", "tab:blue", "tab:red", "tab:green", "tab:purple", "tab:orange", "tab:brown", "tab:pink")

NOT_RECORDED = "settings not recorded"
# Keys that differ from task to task by design (a comparison gives each env its budget).
_PER_TASK = ("env.", "run.env", "run.steps")


def _short(key: str) -> str:
    return key.removeprefix("algorithm.arguments.").removeprefix("run.")


def _flat_settings(job: Job) -> dict[str, Any] | None:
    settings = read_settings(job.run_dir)
    return None if settings is None else agent_defining(settings)


def _differing(first: dict[str, Any], second: dict[str, Any]) -> list[str]:
    """Keys both settings hold with different values. A key only one holds is a setting that a newer
    version of the code added (recorded at its default), not a difference between the runs."""
    return sorted(key for key in first.keys() & second.keys() if first[key] != second[key])


def split_mixed_arms(jobs: list[Job]) -> tuple[list[Job], list[str]]:
    """
    Runs that share an arm name on a task but whose recorded settings differ are reported as
    separate arms: the settings most runs share keep the name, the others get the differing
    values after it (``cpc [cpc_kwargs.horizon=30]``). Runs without recorded settings stay in
    their arm.

    :return: the jobs (arm names changed where split) and one line per split, naming the keys.
    """
    notes = []
    for key in dict.fromkeys((job.config.env, job.arm) for job in jobs):
        group = [job for job in jobs if (job.config.env, job.arm) == key]
        flats = {id(job): _flat_settings(job) for job in group}
        variants: list[dict[str, Any]] = []
        members: list[list[Job]] = []
        for job in group:
            flat = flats[id(job)]
            if flat is None:
                continue
            same = next((i for i, variant in enumerate(variants) if not _differing(flat, variant)), None)
            if same is None:
                variants.append(flat)
                members.append([job])
            else:
                members[same].append(job)
        if len(variants) < 2:
            continue
        main = int(np.argmax([len(runs) for runs in members]))
        described, differing = [], set()
        for index, (variant, runs) in enumerate(zip(variants, members, strict=True)):
            changed = _differing(variants[main], variant)
            differing.update(changed)
            label = ", ".join(f"{_short(k)}={variant[k]}" for k in changed[:2]) + (", ..." if len(changed) > 2 else "")
            name = key[1] if index == main else f"{key[1]} [{label}]"
            described.append(f"`{name}` ({len(runs)} runs)")
            for job in runs:
                job.arm = name
        notes.append(
            f"Arm `{key[1]}` on {key[0]} holds runs with different settings "
            f"({', '.join(map(_short, sorted(differing)))}): reported apart as {', '.join(described)}."
        )
    return jobs, notes


def settings_table(jobs: list[Job], arms: list[str]) -> str:
    """Markdown: one row per arm, one column per setting whose value is not the same for every arm."""
    per_arm: dict[str, dict[str, Any] | None] = {}
    for arm in arms:
        flats = [_flat_settings(job) for job in jobs if job.arm == arm]
        recorded = [flat for flat in flats if flat is not None]
        per_arm[arm] = {k: v for k, v in recorded[0].items() if not k.startswith(_PER_TASK)} if recorded else None
    known = [flat for flat in per_arm.values() if flat is not None]
    keys = sorted({k for flat in known for k in flat})
    # A key only some arms have (CPC's, for `none`) is shown where its values differ between those arms.
    differing = [k for k in keys if len({repr(flat[k]) for flat in known if k in flat}) > 1]
    unrecorded = [arm for arm, flat in per_arm.items() if flat is None]
    lines = []
    if len(known) > 1 and not differing:
        lines.append("Every arm whose settings were recorded has the same settings.")
    if differing:
        lines += [
            "| arm | " + " | ".join(f"`{_short(k)}`" for k in differing) + " |",
            "|---|" + "---|" * len(differing),
        ]
        for arm, flat in per_arm.items():
            cells = [NOT_RECORDED] * len(differing) if flat is None else [str(flat.get(k, "–")) for k in differing]
            lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    elif unrecorded:
        lines.append(f"Arms {', '.join(f'`{arm}`' for arm in unrecorded)}: {NOT_RECORDED}.")
    lines += [
        "",
        "Each run's `settings.yaml` holds all of its settings (algorithm arguments, policy, CPC, env, run); "
        "seeds, threads and evaluation spacing are not compared.",
    ]
    return "\n".join(lines)


def code_lines(jobs: list[Job], arms: list[str]) -> list[str]:
    """Which code and package versions each arm's runs ran (from ``provenance.yaml``), when not all the same."""
    described: dict[str, set[str]] = {}
    for arm in arms:
        for job in jobs:
            if job.arm != arm:
                continue
            path = job.run_dir / PROVENANCE_FILE
            if not path.is_file():
                described.setdefault(arm, set()).add("not recorded")
                continue
            segments = (yaml.safe_load(path.read_text()) or {}).get("segments") or [{}]
            for segment in segments:
                code = segment.get("code", {})
                commit = code.get("commit", code.get("git", "unknown"))[:10]
                dirty = " with uncommitted changes" if code.get("uncommitted_changes") else ""
                packages = segment.get("packages") if isinstance(segment.get("packages"), dict) else {}
                versions = ", ".join(f"{k} {v}" for k, v in packages.items() if k in ("torch", "stable-baselines3"))
                described.setdefault(arm, set()).add(f"{commit}{dirty}" + (f" ({versions})" if versions else ""))
    every = set().union(*described.values()) if described else set()
    if len(every) <= 1:
        return [f"Code: every run ran {next(iter(every))}.", ""] if every else []
    lines = ["Code the runs ran (`provenance.yaml`; a commit per start or resume):", ""]
    lines += [f"- `{arm}`: {'; '.join(sorted(values))}" for arm, values in described.items()]
    return lines + [""]


def training_curve(run_dir: Path, total_steps: int, bins: int = CURVE_BINS) -> np.ndarray:
    """Mean training-episode return in ``bins`` equal spans of the run's steps (NaN where none ended)."""
    episodes = episode_curve(run_dir)
    edges = np.linspace(0, total_steps, bins + 1)
    which = np.clip(np.searchsorted(edges, episodes["step"].to_numpy(), side="right") - 1, 0, bins - 1)
    returns = episodes["return"].to_numpy(float)
    return np.array([returns[which == i].mean() if (which == i).any() else np.nan for i in range(bins)])


def cpc_figures(run_dir: Path, last_fraction: float = 0.1) -> dict[str, float]:
    """The CPC figures logged over the last ``last_fraction`` of a run's updates: accuracy at k=1 and K, MI bound."""
    progress = training_log(Path(run_dir))
    if "train/cpc_accuracy" not in progress:
        return {}
    progress = progress.dropna(subset=["train/cpc_accuracy"])
    horizons = [int(m.group(1)) for c in progress for m in [re.fullmatch(r"train/cpc_accuracy_k(\d+)", c)] if m]
    tail = progress.iloc[-max(1, int(len(progress) * last_fraction)) :]
    return {
        "cpc_accuracy_k1": float(tail["train/cpc_accuracy_k1"].mean()),
        "cpc_accuracy_kK": float(tail[f"train/cpc_accuracy_k{max(horizons)}"].mean()),
        "cpc_mi_bound": float(tail["train/cpc_mi_bound"].mean()),
    }


def gradient_figures(run_dir: Path) -> dict[str, float]:
    """
    CPC's gradient over RL's at the shared representation (``c_t``, else ``z_t``) and their cosine,
    mean over a run's updates, if it logged them (``train/*_grad_*``).
    """
    progress = training_log(Path(run_dir))
    if "train/cpc_grad_norm_z" not in progress:
        return {}
    figures = {}
    for where in ("c", "z"):
        if f"train/cpc_grad_norm_{where}" not in progress:
            continue
        ratio = progress[f"train/cpc_grad_norm_{where}"] / progress[f"train/rl_grad_norm_{where}"]
        ratio = ratio.replace([np.inf, -np.inf], np.nan)
        figures[f"grad_ratio_{where}"] = float(ratio.mean()) if ratio.notna().any() else float("nan")
        figures[f"grad_cosine_{where}"] = float(progress[f"train/grad_cosine_{where}"].mean())
    return figures


def gradient_table(scores: pd.DataFrame, env_id: str, arms: list[str]) -> str:
    """Markdown: per arm, CPC's gradient over RL's and their cosine at c_t and z_t (means over updates and seeds)."""
    columns = [key for key in ("grad_ratio_c", "grad_cosine_c", "grad_ratio_z", "grad_cosine_z") if key in scores]
    of_env = scores[scores["env"] == env_id]
    if not columns or of_env[columns].isna().all(axis=None):
        return ""
    names = {"grad_ratio_c": "CPC/RL at c", "grad_cosine_c": "cosine at c", "grad_ratio_z": "CPC/RL at z"}
    names["grad_cosine_z"] = "cosine at z"
    rows = ["| arm | " + " | ".join(names[key] for key in columns) + " |", "|---|" + "---|" * len(columns)]
    for arm in arms:
        group = of_env[of_env["arm"] == arm]
        if group.empty or group[columns].isna().all(axis=None):
            continue
        cells = [f"{group[key].mean():.3f}" if group[key].notna().any() else "–" for key in columns]
        rows.append(f"| {arm} | " + " | ".join(cells) + " |")
    return "\n".join(
        [
            "Gradients where CPC and RL meet (norm of CPC's weighted gradient over RL's, and their cosine; "
            "means over updates, then seeds; `c`: the LSTM output, `z`: the encoder output):",
            "",
            *rows,
        ]
    )


# What reports show of a run's probes (``run_agent.py probe``): where the agent is and which way it
# faces, from c_t; on memory tasks probed with ``--policy explore``, the cue from z_t and from c_t.
PROBED_TARGETS = ("position", "heading", "heading_sector")


def probe_scores(run_dir: Path) -> dict[str, float]:
    """
    A probed run's ``probe_c_<target>`` scores (its own policy), and ``explore_z_cue``,
    ``explore_c_cue`` where a memory task's run was probed on an exploring policy.
    """
    scores = {}
    path = probe_table(run_dir)
    if path.is_file():
        table = pd.read_csv(path)
        of_c = table[table["features"] == "c"].set_index("target")["score"]
        scores.update({f"probe_c_{target}": float(of_c[target]) for target in PROBED_TARGETS if target in of_c})
    path = probe_table(run_dir, "explore")
    if path.is_file():
        cue = pd.read_csv(path).query("target == 'cue'").set_index("features")["score"]
        scores.update({f"explore_{features}_cue": float(score) for features, score in cue.items()})
    return scores


def _has_explore_cue(scores: pd.DataFrame) -> bool:
    """Whether any run of these scores was probed for the cue on an exploring policy."""
    return "explore_c_cue" in scores and scores["explore_c_cue"].notna().any()


def run_scores(job: Job) -> dict[str, Any] | None:
    """
    Scores of a finished run: final evaluation return and success, the area under the training
    curve (mean training-episode return over the run's step bins), CPC figures, and costs.
    """
    status = read_status(job.run_dir)
    path = job.run_dir / "evaluations.csv"
    if status.get("state") != "finished" or not path.is_file():
        return None
    evaluations = pd.read_csv(path).sort_values("step")
    if evaluations.empty:
        return None
    curve = training_curve(job.run_dir, job.config.steps)
    return {
        "env": job.config.env,
        "arm": job.arm,
        "seed": job.config.seed,
        "final_return": float(evaluations["mean_return"].iloc[-1]),
        "final_success": float(evaluations["success_rate"].iloc[-1]),
        "auc": float(np.nanmean(curve)) if not np.isnan(curve).all() else float("nan"),
        "steps": int(evaluations["step"].iloc[-1]),
        **cpc_figures(job.run_dir),
        **gradient_figures(job.run_dir),
        **probe_scores(job.run_dir),
        "train_seconds": status.get("train_seconds", float("nan")),
        "eval_seconds": status.get("eval_seconds", float("nan")),
        "cpu_seconds": status.get("cpu_seconds", float("nan")),
    }


def cost_lines(jobs: list[Job], scores: pd.DataFrame, arms: list[str]) -> list[str]:
    """What the comparison has cost: CPU hours of all its runs, and CPU minutes per finished run by env and arm."""
    total = sum(cpu_hours(job.run_dir) for job in jobs)
    lines = [
        f"CPU time: {total:.2f} h over {len(jobs)} runs, unfinished ones included (each run's `status.json`; "
        "probes not included).",
        "",
    ]
    timed = scores.dropna(subset=["cpu_seconds"])
    if timed.empty:
        return lines
    minutes = (timed["cpu_seconds"] / 60).groupby([timed["env"], timed["arm"]]).mean().unstack()
    minutes = minutes.reindex(list(dict.fromkeys(timed["env"])))
    lines += ["| CPU minutes per finished run | " + " | ".join(arms) + " |", "|---" * (len(arms) + 1) + "|"]
    for env_id, row in minutes.iterrows():
        cells = [f"{row[arm]:.1f}" if arm in row and pd.notna(row[arm]) else "" for arm in arms]
        lines.append(f"| {env_id} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def _format(estimate: float, low: float, high: float) -> str:
    return f"{estimate:.3f} [{low:.3f}, {high:.3f}]"


def env_table(scores: pd.DataFrame, env_id: str, arms: list[str], baseline: str) -> str:
    """Markdown tables of one env: each arm across seeds, then each arm minus the baseline."""
    of_env = scores[scores["env"] == env_id]
    columns = ["cpc_accuracy_k1", "cpc_accuracy_kK", "cpc_mi_bound", "probe_c_position", "probe_c_heading"]
    header = "| CPC acc. k=1 | CPC acc. k=K | MI bound (nats) | probe c→position R² | probe c→heading R² |"
    if _has_explore_cue(of_env):
        columns += ["explore_z_cue", "explore_c_cue"]
        header += " cue from z, explore policy | cue from c, explore policy |"
    rows = [
        "| arm | seeds | final return, mean [95% CI] | final return, IQM [95% CI] | AUC, mean [95% CI] "
        "| AUC, IQM [95% CI] | final success " + header,
        "|" + "---|" * (7 + len(columns)),
    ]
    for arm in arms:
        group = of_env[of_env["arm"] == arm]
        if group.empty:
            continue
        cpc = [f"{group[key].mean():.3f}" if key in group and group[key].notna().any() else "–" for key in columns]
        # A ViZDoom score counts kills, tics alive or medkits: a positive one is no goal reached.
        success = "–" if env_id in VIZDOOM_KINDS else f"{group['final_success'].mean():.2f}"
        rows.append(
            f"| {arm} | {len(group)} | {_format(*bootstrap_ci(group['final_return']))} | "
            f"{_format(*bootstrap_ci(group['final_return'], iqm))} | {_format(*bootstrap_ci(group['auc']))} | "
            f"{_format(*bootstrap_ci(group['auc'], iqm))} | "
            f"{success} | {' | '.join(cpc)} |"
        )
    base = of_env[of_env["arm"] == baseline]
    differences = [
        "",
        f"Difference to the baseline `{baseline}` (mean over seeds, 95% bootstrap CI), and the probability that a "
        "run of the arm beats a run of the baseline (ties count half; 95% bootstrap CI):",
        "",
        f"| arm − baseline | final return | AUC | P(arm > {baseline}), final return | P(arm > {baseline}), AUC |",
        "|---|---|---|---|---|",
    ]
    for arm in arms:
        group = of_env[of_env["arm"] == arm]
        if arm == baseline or group.empty or base.empty:
            continue
        differences.append(
            f"| {arm} − {baseline} | {_format(*difference_ci(group['final_return'], base['final_return']))} | "
            f"{_format(*difference_ci(group['auc'], base['auc']))} | "
            f"{_format(*probability_of_improvement(group['final_return'], base['final_return']))} | "
            f"{_format(*probability_of_improvement(group['auc'], base['auc']))} |"
        )
    return "\n".join(rows + (differences if len(differences) > 5 else []))


def score_matrices(scores: pd.DataFrame, metric: str, arms: list[str]) -> dict[str, np.ndarray]:
    """rliable's layout: per arm a ``(seeds, envs)`` matrix, seeds cut to the fewest any (env, arm) has."""
    env_ids = sorted(scores["env"].unique())
    seeds = int(scores.groupby(["env", "arm"]).size().min())
    return {
        arm: np.stack(
            [
                scores[(scores["env"] == e) & (scores["arm"] == arm)].sort_values("seed")[metric].to_numpy()[:seeds]
                for e in env_ids
            ],
            axis=1,
        )
        for arm in arms
    }


def scaled_for_aggregate(scores: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """Scores on one scale across envs, as rliable's IQM and profiles need, and a sentence saying which.

    MiniWorld's returns lie in [0, 1] and are kept. Other engines' (ViZDoom's kills, tics alive)
    differ in range from task to task: each env's final return and AUC are min-max normalised over
    the comparison's own runs, all arms together, which leaves every P(arm > baseline) as it was.

    :param scores: one row per run, with ``env``, ``final_return`` and ``auc``
    :return: the scores to aggregate, and the sentence for the report
    """
    metrics = ["final_return", "auc"]
    values = scores[metrics].to_numpy(dtype=float)
    values = values[~np.isnan(values)]  # a missing score says nothing about the scale
    if ((values >= 0.0) & (values <= 1.0)).all():
        return scores, "returns of these tasks lie in [0, 1]."
    scaled = scores.copy()
    for metric in metrics:
        by_env = scores.groupby("env")[metric]
        low, high = by_env.transform("min"), by_env.transform("max")
        scaled[metric] = (scores[metric] - low) / (high - low).where(high > low, 1.0)
    return scaled, (
        "returns of these tasks do not lie in [0, 1], so the IQMs and the profiles below are of each env's "
        "scores min-max normalised over this comparison's runs (0: its lowest run, 1: its highest)."
    )


@contextmanager
def _seeded_rliable_draws() -> Iterator[None]:
    """rliable resamples with numpy's global generator (its random_state argument does not reach the
    draws): seed it, and give it back, so that a report rebuilt from a folder is the same."""
    global_state = np.random.get_state()
    np.random.seed(0)
    try:
        yield
    finally:
        np.random.set_state(global_state)


def aggregate_table(scores: pd.DataFrame, arms: list[str], baseline: str, reps: int = 2000) -> str:
    """rliable across envs and seeds: IQM with stratified bootstrap CIs, and P(arm > baseline) with its CI."""
    rows = ["| metric | arm | IQM [95% stratified bootstrap CI] | P(arm > baseline) [95% CI] |", "|---|---|---|---|"]
    with _seeded_rliable_draws():
        for metric in ("final_return", "auc"):
            rows += _aggregate_rows(score_matrices(scores, metric, arms), metric, arms, baseline, reps)
    return "\n".join(rows)


def _aggregate_rows(
    matrices: dict[str, np.ndarray], metric: str, arms: list[str], baseline: str, reps: int
) -> list[str]:
    from rliable import library as rly
    from rliable import metrics

    estimates, intervals = rly.get_interval_estimates(
        matrices, lambda x: np.array([metrics.aggregate_iqm(x)]), reps=reps
    )
    pairs = {f"{arm},{baseline}": (matrices[arm], matrices[baseline]) for arm in arms if arm != baseline}
    improvement, improvement_ci = (
        rly.get_interval_estimates(pairs, metrics.probability_of_improvement, reps=reps // 2) if pairs else ({}, {})
    )
    rows = []
    for arm in arms:
        key = f"{arm},{baseline}"
        probability = _format(float(improvement[key]), *np.ravel(improvement_ci[key])) if key in improvement else "–"
        rows.append(f"| {metric} | {arm} | {_format(estimates[arm][0], *intervals[arm][:, 0])} | {probability} |")
    return rows


def plot_curves(jobs: list[Job], env_ids: list[str], arms: list[str], path: Path) -> Path:
    """Training-episode return against env steps: mean over seeds with a 95% bootstrap band, per env and arm."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = min(3, len(env_ids))
    rows = (len(env_ids) + columns - 1) // columns
    figure, axes = plt.subplots(rows, columns, figsize=(4.8 * columns, 3.4 * rows), squeeze=False)
    for axis, env_id in zip(axes.flat, env_ids, strict=False):
        for colour, arm in zip(ARM_COLOURS * 4, arms, strict=False):
            runs = [job for job in jobs if job.config.env == env_id and job.arm == arm and job.finished]
            if not runs:
                continue
            total = runs[0].config.steps
            curves = np.stack([training_curve(job.run_dir, total) for job in runs])
            centres = (np.arange(CURVE_BINS) + 0.5) * total / CURVE_BINS
            bands = np.array(
                [
                    bootstrap_ci(column[~np.isnan(column)], reps=300) if (~np.isnan(column)).any() else (np.nan,) * 3
                    for column in curves.T
                ]
            )
            axis.plot(centres, bands[:, 0], color=colour, label=f"{arm} ({len(runs)} seeds)")
            axis.fill_between(centres, bands[:, 1], bands[:, 2], color=colour, alpha=0.15)
        axis.set_title(env_id.removeprefix("MiniWorld-"), fontsize=10)
        axis.set_xlabel("env steps")
        axis.set_ylabel("training-episode return")
        axis.grid(alpha=0.3)
        if axis.get_legend_handles_labels()[0]:
            axis.legend(fontsize=7)
    for axis in list(axes.flat)[len(env_ids) :]:
        axis.axis("off")
    figure.tight_layout()
    save_figure_atomically(figure, path)
    plt.close(figure)
    return path


def plot_profiles(scores: pd.DataFrame, arms: list[str], path: Path, xlabel: str = "final evaluation return τ") -> Path:
    """rliable's performance profiles of the final return (fraction of runs above each score)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from rliable import library as rly
    from rliable import plot_utils

    matrices = score_matrices(scores, "final_return", arms)
    thresholds = np.linspace(0.0, 1.0, 51)
    with _seeded_rliable_draws():
        distributions, bands = rly.create_performance_profile(matrices, thresholds, reps=500)
    colours = dict(zip(arms, ARM_COLOURS * 4, strict=False))
    figure, axis = plt.subplots(figsize=(5.5, 3.6))
    plot_utils.plot_performance_profiles(
        distributions,
        thresholds,
        performance_profile_cis=bands,
        colors=colours,
        xlabel=xlabel,
        ax=axis,
    )
    # Labels alone would go to the first artists drawn, a line and its band, not to one line per arm.
    axis.legend(handles=[Line2D([], [], color=colours[arm], label=arm) for arm in arms], fontsize=7)
    save_figure_atomically(figure, path)
    plt.close(figure)
    return path


def _existing_title(report: Path) -> str | None:
    """The title of a report written before, so that rebuilding it (``report`` without ``--title``) keeps it."""
    if not report.is_file():
        return None
    first = report.read_text().split("\n", 1)[0]
    if not first.startswith("# "):
        return None
    return first[2:].strip() or None


def write_report(jobs: list[Job], out_dir: Path, baseline: str | None = None, title: str | None = None) -> Path:
    """
    Write ``report/README.md``, ``report/scores.csv``, ``report/curves.png`` and (with every
    (env, arm) present) ``report/profiles.png`` from the finished runs; return the markdown path.
    Unfinished runs are listed, never counted. Without ``title`` the report keeps the one it had.
    """
    if not jobs:
        raise RunError(f"no run in {out_dir} has started yet: nothing to report")
    report_dir = Path(out_dir) / "report"
    title = title or _existing_title(report_dir / "README.md")
    jobs, mixed = split_mixed_arms(jobs)
    for line in mixed:
        print(f"report: {line}", file=sys.stderr)
    env_ids = list(dict.fromkeys(job.config.env for job in jobs))
    arms = list(dict.fromkeys(job.arm for job in jobs))
    baseline = baseline or ("none" if "none" in arms else arms[0])
    if baseline not in arms:
        raise RunError(f"baseline {baseline!r} is not an arm of this comparison; arms: {', '.join(arms)}")
    records = [score for score in (run_scores(job) for job in jobs) if score is not None]
    if not records:
        raise RunError(f"no run in {out_dir} has finished yet")
    report_dir.mkdir(parents=True, exist_ok=True)
    scores = pd.DataFrame(records)
    write_text_atomically(report_dir / "scores.csv", scores.to_csv(index=False))
    plot_curves(jobs, env_ids, arms, report_dir / "curves.png")
    config = jobs[0].config
    eval_share = scores["eval_seconds"] / (scores["train_seconds"] + scores["eval_seconds"])
    lines = [
        f"# {title or 'Comparison of arms'}",
        "",
        f"algo `{config.algo}`; baseline arm `{baseline}`; {len(scores)} finished runs. Final return: the last "
        f"evaluation ({config.eval_episodes} episodes); AUC: mean training-episode return over {CURVE_BINS} equal "
        "spans of the run (the area under the training curve divided by its length). CIs: 95% percentile "
        "bootstrap over seeds; IQM: interquartile mean. Final success: the share of those episodes with a "
        "positive return (a MiniWorld goal reached; – on ViZDoom). CPC figures: mean over the last 10% of updates.",
        "",
        "![learning curves](curves.png)",
        "",
    ]
    if _has_explore_cue(scores):
        lines += [
            "Cue from z, c (explore policy): held-out accuracy of linear probes telling the episode's cue from the "
            "agent's `z_t` and `c_t` on frames of a policy blind to the task (`probe --policy explore`): `z_t` sees "
            "the cue only while it is in view, so what `c_t` adds is memory.",
            "",
        ]
    if eval_share.notna().any():
        lines += [f"Evaluation took {eval_share.mean():.1%} of the runs' wall time on average.", ""]
    lines += cost_lines(jobs, scores, arms)
    lines += ["## Arms by their settings", ""]
    lines += [item for line in mixed for item in (f"**{line}**", "")]
    lines += [settings_table(jobs, arms), "", *code_lines(jobs, arms)]
    for env_id in env_ids:
        lines += [f"## {env_id}", "", env_table(scores, env_id, arms, baseline), ""]
        gradients = gradient_table(scores, env_id, arms)
        lines += [gradients, ""] if gradients else []
    present = scores.groupby(["env", "arm"]).size()
    # A bootstrap over seeds needs two of them; a calibration of one seed per task gets none.
    if len(present) == len(env_ids) * len(arms) and len(env_ids) > 1 and present.min() > 1:
        aggregated, scale = scaled_for_aggregate(scores)
        normalised = " (min-max normalised per task)" if aggregated is not scores else ""
        plot_profiles(aggregated, arms, report_dir / "profiles.png", f"final evaluation return τ{normalised}")
        lines += [
            "## Aggregate over envs (rliable)",
            "",
            f"{int(present.min())} seeds per (env, arm) enter; {scale}",
            "",
            aggregate_table(aggregated, arms, baseline),
            "",
            "![performance profiles](profiles.png)",
            "",
        ]
    lines += goals_section(read_goals(out_dir), scores)
    unfinished = [job for job in jobs if not job.finished]
    if unfinished:
        lines += ["## Not finished (not in the statistics)", ""]
        lines += [
            f"- `{job.run_dir.relative_to(out_dir)}`: {read_status(job.run_dir).get('state', 'not started')}"
            for job in unfinished
        ]
        lines.append("")
    path = report_dir / "README.md"
    write_text_atomically(path, "\n".join(lines))
    return path
