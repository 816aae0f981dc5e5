"""Comparing agents with and without the CPC auxiliary loss: the grid of runs, and the report."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from agents.files import save_figure_atomically, write_text_atomically
from agents.runs import RunConfig, RunError, read_status
from agents.stats import bootstrap_ci, difference_ci, iqm

AUX_COMPARED = ("cpc", "none")
RUN_AGENT = Path(__file__).resolve().parent.parent / "run_agent.py"


@dataclass
class Job:
    """One (env, aux, seed) training run of a comparison."""

    config: RunConfig
    run_dir: Path

    @property
    def finished(self) -> bool:
        return read_status(self.run_dir).get("state") == "finished"

    def command(self) -> list[str]:
        """The ``run_agent.py train`` command that runs (or resumes) this job."""
        if (self.run_dir / "config.yaml").exists():
            return [sys.executable, str(RUN_AGENT), "train", "--resume", str(self.run_dir), "--no-progress"]
        config = self.config
        command = [
            sys.executable,
            str(RUN_AGENT),
            "train",
            "--env",
            config.env,
            "--algo",
            config.algo,
            "--aux",
            config.aux,
            "--steps",
            str(config.steps),
            "--seed",
            str(config.seed),
            "--device",
            config.device,
            "--run-dir",
            str(self.run_dir),
            "--no-progress",
        ]
        if config.n_envs:
            command += ["--n-envs", str(config.n_envs)]
        settings = {
            "vec_env": config.vec_env,
            "eval_freq": config.eval_freq,
            "eval_episodes": config.eval_episodes,
            "save_freq": config.save_freq,
        }
        settings.update(config.hyperparams)
        settings.update({f"cpc.{k}": v for k, v in config.cpc_kwargs.items()})
        settings.update({f"env.{k}": v for k, v in config.env_kwargs.items()})
        for key, value in settings.items():
            command += ["--set", f"{key}={value!r}"]
        return command


def plan_jobs(base: RunConfig, env_ids: list[str], seeds: int, out_dir: Path) -> list[Job]:
    """Every (env, aux, seed) of the comparison; a run dir holding a config but no checkpoint is moved aside."""
    jobs = []
    for env_id in env_ids:
        for aux in AUX_COMPARED:
            for seed in range(seeds):
                config = RunConfig(
                    **{
                        **base.to_dict(),
                        "env": env_id,
                        "aux": aux,
                        "seed": seed,
                        "cpc_kwargs": dict(base.cpc_kwargs) if aux != "none" else {},
                    }
                )
                config.check()
                run_dir = out_dir / "runs" / env_id / aux / f"seed_{seed}"
                started = (run_dir / "config.yaml").exists()
                if (
                    started
                    and not read_status(run_dir).get("state") == "finished"
                    and not any((run_dir / "checkpoints").glob("*.zip"))
                ):
                    run_dir.rename(run_dir.with_name(f"{run_dir.name}.stale-{int(time.time())}"))
                jobs.append(Job(config, run_dir))
    return jobs


def _run_job_locally(job: Job, threads: int) -> tuple[Job, int, str]:
    environ = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    job.run_dir.parent.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(job.command(), capture_output=True, text=True, env=environ)
    return job, result.returncode, result.stderr.strip().splitlines()[-1] if result.stderr.strip() else ""


def run_jobs(jobs: list[Job], workers: int, backend: str, progress: bool = True) -> list[str]:
    """
    Run the jobs that have not finished, ``workers`` at a time.

    :param backend: ``local`` (processes on this machine) or ``ray`` (Ray tasks; a cluster if
        ``RAY_ADDRESS`` is set, else a local Ray instance). Run dirs must be on storage that
        every Ray node sees.
    :return: one line per failed job.
    """
    pending = [job for job in jobs if not job.finished]
    if not pending:
        return []
    threads = max(1, (os.cpu_count() or 1) // workers)
    if backend == "ray":
        return _run_jobs_on_ray(pending, workers, threads)
    if backend != "local":
        raise RunError(f"unknown backend {backend!r}; choose local or ray")
    from tqdm import tqdm

    failures = []
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(_run_job_locally, job, threads) for job in pending]
        for future in tqdm(as_completed(futures), total=len(futures), desc="runs", disable=not progress):
            job, code, last_line = future.result()
            if code != 0:
                failures.append(f"{job.run_dir}: exit {code}: {last_line}")
    return failures


def _run_jobs_on_ray(jobs: list[Job], workers: int, threads: int) -> list[str]:
    try:
        import ray
    except ImportError:
        raise RunError("the ray backend needs Ray: pip install 'cpc-rl[ray]' (or pip install ray)") from None
    started_here = not ray.is_initialized()
    if started_here:
        if os.environ.get("RAY_ADDRESS"):
            ray.init(log_to_driver=False)
        else:
            ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)

    # max_calls=1: a fresh worker process per run, as with the local backend.
    @ray.remote(num_cpus=1, max_calls=1)
    def run_remote(job: Job) -> tuple[Job, int, str]:
        return _run_job_locally(job, threads)

    try:
        results = ray.get([run_remote.remote(job) for job in jobs])
    finally:
        if started_here:
            ray.shutdown()
    return [f"{job.run_dir}: exit {code}: {line}" for job, code, line in results if code != 0]


def run_scores(job: Job) -> dict[str, Any] | None:
    """Final return, area under the evaluation curve (mean return over training) and success rate."""
    path = job.run_dir / "evaluations.csv"
    if not path.is_file():
        return None
    evaluations = pd.read_csv(path).sort_values("step")
    if evaluations.empty:
        return None
    steps, returns = evaluations["step"].to_numpy(float), evaluations["mean_return"].to_numpy(float)
    if len(steps) > 1:
        area = float(np.sum((returns[1:] + returns[:-1]) / 2 * np.diff(steps)) / (steps[-1] - steps[0]))
    else:
        area = float(returns[0])
    return {
        "env": job.config.env,
        "aux": job.config.aux,
        "seed": job.config.seed,
        "final_return": float(returns[-1]),
        "auc": area,
        "final_success": float(evaluations["success_rate"].iloc[-1]),
        "steps": int(steps[-1]),
    }


def _format(estimate: float, low: float, high: float) -> str:
    return f"{estimate:.3f} [{low:.3f}, {high:.3f}]"


def env_table(scores: pd.DataFrame, env_id: str) -> str:
    """Markdown table of one env: mean [95% bootstrap CI] and IQM across seeds, and CPC minus none."""
    rows = [
        "| aux | seeds | final return, mean [95% CI] | final return, IQM | AUC, mean [95% CI] | AUC, IQM "
        "| final success rate |",
        "|---|---|---|---|---|---|---|",
    ]
    of_env = scores[scores["env"] == env_id]
    for aux in AUX_COMPARED:
        group = of_env[of_env["aux"] == aux]
        if group.empty:
            continue
        rows.append(
            f"| {aux} | {len(group)} | {_format(*bootstrap_ci(group['final_return']))} | "
            f"{iqm(group['final_return']):.3f} | {_format(*bootstrap_ci(group['auc']))} | {iqm(group['auc']):.3f} | "
            f"{group['final_success'].mean():.2f} |"
        )
    cpc, none = (of_env[of_env["aux"] == aux] for aux in AUX_COMPARED)
    if len(cpc) and len(none):
        rows.append(
            f"| cpc − none | | {_format(*difference_ci(cpc['final_return'], none['final_return']))} | | "
            f"{_format(*difference_ci(cpc['auc'], none['auc']))} | | |"
        )
    return "\n".join(rows)


def aggregate_table(scores: pd.DataFrame, reps: int = 2000) -> str:
    """rliable's IQM across envs and seeds with stratified bootstrap CIs, and P(cpc > none)."""
    from rliable import library as rly
    from rliable import metrics

    env_ids = sorted(scores["env"].unique())
    seeds = scores.groupby(["env", "aux"]).size().min()
    rows = ["| metric | aux | IQM [95% stratified bootstrap CI] |", "|---|---|---|"]
    for metric in ("final_return", "auc"):
        matrices = {
            aux: np.stack(
                [scores[(scores["env"] == e) & (scores["aux"] == aux)][metric].to_numpy()[:seeds] for e in env_ids],
                axis=1,
            )
            for aux in AUX_COMPARED
        }
        estimates, intervals = rly.get_interval_estimates(
            matrices, lambda x: np.array([metrics.aggregate_iqm(x)]), reps=reps
        )
        for aux in AUX_COMPARED:
            rows.append(f"| {metric} | {aux} | {_format(estimates[aux][0], *intervals[aux][:, 0])} |")
        improvement = metrics.probability_of_improvement(matrices["cpc"], matrices["none"])
        rows.append(f"| {metric} | P(cpc > none) | {improvement:.2f} |")
    return "\n".join(rows)


def _eval_curves(jobs: list[Job], env_id: str, aux: str) -> tuple[np.ndarray, np.ndarray] | None:
    curves = []
    for job in jobs:
        path = job.run_dir / "evaluations.csv"
        if job.config.env == env_id and job.config.aux == aux and path.is_file():
            table = pd.read_csv(path).sort_values("step")
            if len(table):
                curves.append(table)
    if not curves:
        return None
    grid = np.unique(np.concatenate([c["step"].to_numpy() for c in curves]))
    values = np.stack([np.interp(grid, c["step"], c["mean_return"]) for c in curves])
    return grid, values


def plot_curves(jobs: list[Job], env_ids: list[str], path: Path) -> Path:
    """Evaluation return against env steps: mean over seeds with a 95% bootstrap band, per env."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = min(3, len(env_ids))
    rows = (len(env_ids) + columns - 1) // columns
    figure, axes = plt.subplots(rows, columns, figsize=(4.6 * columns, 3.3 * rows), squeeze=False)
    colours = {"cpc": "tab:red", "none": "tab:gray"}
    for axis, env_id in zip(axes.flat, env_ids, strict=False):
        for aux in AUX_COMPARED:
            curve = _eval_curves(jobs, env_id, aux)
            if curve is None:
                continue
            steps, values = curve
            bands = np.array([bootstrap_ci(values[:, i], reps=500) for i in range(values.shape[1])])
            axis.plot(steps, bands[:, 0], color=colours[aux], label=f"{aux} ({len(values)} seeds)")
            axis.fill_between(steps, bands[:, 1], bands[:, 2], color=colours[aux], alpha=0.2)
        axis.set_title(env_id.removeprefix("MiniWorld-"), fontsize=10)
        axis.set_xlabel("env steps")
        axis.set_ylabel("evaluation return")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    for axis in list(axes.flat)[len(env_ids) :]:
        axis.axis("off")
    figure.tight_layout()
    save_figure_atomically(figure, path)
    plt.close(figure)
    return path


def write_report(jobs: list[Job], env_ids: list[str], out_dir: Path) -> Path:
    """Write ``report/README.md``, ``report/scores.csv`` and ``report/curves.png``; return the markdown path."""
    report_dir = out_dir / "report"
    report_dir.mkdir(parents=True, exist_ok=True)
    records = [score for score in (run_scores(job) for job in jobs) if score is not None]
    if not records:
        raise RunError(f"no run in {out_dir} has evaluation results yet")
    scores = pd.DataFrame(records)
    write_text_atomically(report_dir / "scores.csv", scores.to_csv(index=False))
    plot_curves(jobs, env_ids, report_dir / "curves.png")
    config = jobs[0].config
    lines = [
        "# CPC vs no auxiliary loss",
        "",
        f"algo `{config.algo}`, {config.steps} env steps per run, {scores['seed'].nunique()} seeds, "
        f"{config.eval_episodes} evaluation episodes per point. Final return: the last evaluation; "
        "AUC: mean evaluation return over training (area under the curve / steps). "
        "CIs: 95% percentile bootstrap over seeds; IQM: interquartile mean.",
        "",
        "![learning curves](curves.png)",
        "",
    ]
    for env_id in env_ids:
        lines += [f"## {env_id}", "", env_table(scores, env_id), ""]
    complete = scores.groupby(["env", "aux"]).size()
    if len(env_ids) > 0 and len(complete) == 2 * len(env_ids):
        lines += ["## Aggregate over envs (rliable)", "", aggregate_table(scores), ""]
    path = report_dir / "README.md"
    write_text_atomically(path, "\n".join(lines))
    return path
