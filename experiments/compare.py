"""Comparing arms (no auxiliary loss, a control, CPC settings) over envs and seeds: planning and running the runs.

An arm is written ``KIND`` or ``KIND:key=value,key=value`` with ``KIND`` one of :data:`ARM_KINDS`
and keys of ``cpc_kwargs``. ``control`` is the CPC head with ``coef=0``: the same minibatch layout
and compute as ``cpc``, no gradient from CPC. Runs live in ``OUT/runs/ENV/ARM/seed_S``;
:mod:`experiments.report` writes the report.
"""

from __future__ import annotations

import ast
import contextlib
import ctypes
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cpc_rl
from cpc_rl.envs.tasks import CUE_TASKS
from cpc_rl.experiments.config import PROBE_POLICIES, RunConfig, RunError, RunInterrupted, check_hyperparams
from cpc_rl.experiments.runs import format_duration, read_config, read_status
from cpc_rl.experiments.safety import FolderLock, sigterm_as_interrupt

# Arm kind -> the run's aux.
ARM_KINDS = {"none": "none", "control": "cpc", "cpc": "cpc", "cpca": "cpca"}
DEFAULT_ARMS = ("none", "control", "cpc")
# The command line as a module, so that a wheel (which has no run_agent.py) runs its jobs too.
CLI = ["-m", "cpc_rl.experiments.cli"]


@dataclass(frozen=True)
class Arm:
    """
    One arm of a comparison.

    :param kind: ``none``, ``control``, ``cpc`` or ``cpca``.
    :param settings: ``cpc_kwargs`` of the arm (``control`` adds ``coef=0``).
    """

    kind: str
    settings: tuple[tuple[str, Any], ...] = ()

    @property
    def name(self) -> str:
        """Readable and usable as a folder name: ``cpc``, ``cpc-coef0.1-horizon8``."""
        return "-".join([self.kind, *(f"{key}{_format_value(value)}" for key, value in self.settings)])

    @property
    def aux(self) -> str:
        return ARM_KINDS[self.kind]

    @property
    def cpc_kwargs(self) -> dict[str, Any]:
        settings = dict(self.settings)
        if self.kind == "control":
            settings["coef"] = 0.0
        return settings


def _format_value(value: Any) -> str:
    return re.sub(r"[^A-Za-z0-9.+_]", "", str(value))


def parse_arm(text: str) -> Arm:
    """
    Parse ``KIND[:key=value,...]``; values are Python literals.

    :raises RunError: for an unknown kind or key, or a malformed setting.
    """
    from cpc_rl.sb3.config import CPC_DEFAULTS

    kind, _, rest = text.strip().partition(":")
    if kind not in ARM_KINDS:
        raise RunError(f"unknown arm {kind!r} in --arm {text!r}; arms are {', '.join(ARM_KINDS)} (e.g. cpc:coef=0.1)")
    settings = []
    for item in filter(None, (part.strip() for part in rest.split(","))):
        key, separator, value = item.partition("=")
        if not separator or not key:
            raise RunError(f"--arm {text!r}: settings are key=value, separated by commas")
        if key not in CPC_DEFAULTS:
            raise RunError(f"--arm {text!r}: unknown CPC setting {key!r}; valid: {', '.join(sorted(CPC_DEFAULTS))}")
        try:
            settings.append((key, ast.literal_eval(value)))
        except (ValueError, SyntaxError):
            settings.append((key, value))
    if kind == "none" and settings:
        raise RunError(f"--arm {text!r}: the arm none has no CPC settings")
    if kind == "control" and any(key == "coef" for key, _ in settings):
        raise RunError(f"--arm {text!r}: control always has coef=0; use cpc:coef=... for another weight")
    return Arm(kind, tuple(settings))


@dataclass
class Job:
    """One (env, arm, seed) training run of a comparison."""

    config: RunConfig
    run_dir: Path
    arm: str = field(default="")
    probe_episodes: int = field(default=0)
    """Probe ``z_t`` and ``c_t`` with this many episodes right after training (0: no probe)."""

    @property
    def finished(self) -> bool:
        return read_status(self.run_dir).get("state") == "finished"

    @property
    def probe_policies(self) -> tuple[str, ...]:
        """
        Whose steps the probes take: the agent's own, and on memory tasks also an exploring policy's,
        since a trained agent that heads for the cued box shows the cue to ``z_t`` (see ``probe --policy``).
        """
        return PROBE_POLICIES if self.config.env in CUE_TASKS else ("agent",)

    @property
    def missing_probes(self) -> list[str]:
        """The probe policies asked for with no table on disk yet (a finished run without its model gets none)."""
        if not self.probe_episodes or (self.finished and not (self.run_dir / "model.zip").is_file()):
            return []
        return [policy for policy in self.probe_policies if not probe_table(self.run_dir, policy).is_file()]

    @property
    def needs_probe(self) -> bool:
        """Some probe asked for is still to be taken."""
        return bool(self.missing_probes)

    def probe_commands(self) -> list[list[str]]:
        """The ``run_agent.py probe`` commands that take this job's missing probes."""
        command = [sys.executable, *CLI, "probe", str(self.run_dir), "--episodes", str(self.probe_episodes)]
        return [[*command, "--policy", policy] for policy in self.missing_probes]

    def command(self) -> list[str]:
        """The ``run_agent.py train`` command that runs (or resumes) this job."""
        if (self.run_dir / "config.yaml").exists():
            return [sys.executable, *CLI, "train", "--resume", str(self.run_dir), "--no-progress"]
        config = self.config
        command = [sys.executable, *CLI, "train", "--env", config.env, "--algo", config.algo]
        command += ["--aux", config.aux, "--steps", str(config.steps), "--seed", str(config.seed)]
        command += ["--device", config.device, "--run-dir", str(self.run_dir), "--no-progress"]
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


def plan_jobs(
    base: RunConfig,
    budgets: dict[str, int],
    arms: list[Arm],
    seeds: list[int],
    out_dir: Path,
    per_run: dict[str, int] | None = None,
) -> list[Job]:
    """
    Every (seed, env, arm) of the comparison, seed by seed across all tasks, so that a comparison
    stopped half-way holds every arm of every task at the seeds it did; each config is checked.
    Nothing is written.

    :param budgets: env id -> env steps per run.
    :param per_run: run settings spaced by the budget, e.g. ``{"eval_freq": 4}`` evaluates 4 times per run.
    """
    names = [arm.name for arm in arms]
    if len(set(names)) != len(names):
        raise RunError(f"arms must differ; got {names}")
    jobs = []
    for seed in seeds:
        for env_id, steps in budgets.items():
            for arm in arms:
                cpc_kwargs = {**base.cpc_kwargs, **arm.cpc_kwargs} if arm.aux != "none" else {}
                config = RunConfig(**{**base.to_dict(), "env": env_id, "aux": arm.aux, "seed": seed, "steps": steps})
                config.cpc_kwargs = cpc_kwargs
                for key, count in (per_run or {}).items():
                    setattr(config, key, max(steps // count, 1))
                config.check()
                check_hyperparams(config)
                jobs.append(Job(config, out_dir / "runs" / env_id / arm.name / f"seed_{seed}", arm.name))
    return jobs


def set_aside_stale_runs(jobs: list[Job]) -> None:
    """Move aside run dirs that hold a config but neither a finished run nor a checkpoint to resume from."""
    for job in jobs:
        run_dir = job.run_dir
        if (run_dir / "config.yaml").exists() and not job.finished and not any((run_dir / "checkpoints").glob("*.zip")):
            run_dir.rename(run_dir.with_name(f"{run_dir.name}.stale-{int(time.time())}"))


def find_jobs(out_dir: Path) -> list[Job]:
    """The runs of a comparison folder, from what is on disk (``runs/ENV/ARM/seed_S/config.yaml``)."""
    jobs = []
    for config_path in sorted((Path(out_dir) / "runs").glob("*/*/seed_*/config.yaml")):
        run_dir = config_path.parent
        if ".stale-" in run_dir.name:  # set aside by set_aside_stale_runs: never part of a comparison
            continue
        jobs.append(Job(read_config(run_dir), run_dir, run_dir.parent.name))
    kinds = list(ARM_KINDS)

    def order(job: Job) -> tuple:
        kind = job.arm.split("-")[0]
        return kinds.index(kind) if kind in kinds else len(kinds), job.arm, job.config.env, job.config.seed

    return sorted(jobs, key=order)


_live_runs: set[subprocess.Popen] = set()
_live_lock = threading.Lock()


def _stop_with_parent() -> None:
    """In a run's process: receive SIGTERM (checkpoint, then exit) if the comparison dies, even by SIGKILL."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # not Linux: Ctrl-C and SIGTERM still stop the runs through stop_live_runs()


def _run_job_locally(job: Job, threads: int) -> tuple[Job, int, str]:
    """Train the job's run unless it finished, then probe it if asked; the exit code and last error line."""
    job.run_dir.parent.mkdir(parents=True, exist_ok=True)
    if not job.finished:
        code, last_line = _run_command(job.command(), threads)
        if code != 0:
            return job, code, last_line
    for command in job.probe_commands():
        code, last_line = _run_command(command, threads)
        if code != 0:
            return job, code, f"probe: {last_line}"
    return job, 0, ""


def child_environ(threads: int) -> dict[str, str]:
    """
    The environment of a run's process: ``threads`` threads, and, when this code runs from a
    checkout, that checkout first on the import path, so that ``python -m cpc_rl...`` runs the same
    code as the comparison from any working directory, whichever checkout pip installed.
    """
    environ = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    if cpc_rl.CHECKOUT_ROOT is not None:
        paths = [str(cpc_rl.CHECKOUT_ROOT), *filter(None, environ.get("PYTHONPATH", "").split(os.pathsep))]
        environ["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    return environ


def _run_command(command: list[str], threads: int) -> tuple[int, str]:
    """Run one command to its end; its exit code and the last line it wrote to stderr."""
    # stderr goes to a file, not a pipe: a pipe is read to its end, and a process the command
    # started and left behind (a ViZDoom engine of a run killed mid-episode) would hold it open forever.
    with tempfile.TemporaryFile(mode="w+") as stderr:
        process = subprocess.Popen(
            command,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            text=True,
            env=child_environ(threads),
            preexec_fn=_stop_with_parent,
            start_new_session=True,  # its own process group, so that what it leaves behind can be found
        )
        with _live_lock:
            _live_runs.add(process)
        try:
            process.wait()
        finally:
            with _live_lock:
                _live_runs.discard(process)
            _kill_left_behind(process)
        stderr.seek(0)
        lines = stderr.read().strip().splitlines()
    return process.returncode, lines[-1] if lines else ""


def _kill_left_behind(process: subprocess.Popen) -> None:
    """Kill what an ended command left in its process group: its own state is saved, theirs is not needed."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)


def stop_live_runs(timeout: float = 120.0) -> int:
    """
    Send SIGTERM to every run still going (each saves a checkpoint), wait, then kill stragglers;
    return how many. Not SIGINT: a process started in the background ignores it.
    """
    with _live_lock:
        live = list(_live_runs)
    for process in live:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for process in live:
        try:
            process.wait(timeout=max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            process.kill()
    return len(live)


def _progress_line(job: Job, code: int, done: int, total: int, elapsed: float) -> str:
    """One line per finished job for a log (stdout not a terminal): which run, how it ended, how far, ETA."""
    outcome = "done" if code == 0 else f"FAILED (exit {code})"
    eta = elapsed / done * (total - done)
    where = "/".join(job.run_dir.parts[-3:])
    times = f"elapsed {format_duration(elapsed)}, ETA {format_duration(eta)}"
    return f"progress: {done}/{total} runs, {where} {outcome}, {times}"


def run_jobs(jobs: list[Job], workers: int, backend: str, progress: bool = True) -> list[str]:
    """
    Run the jobs that have not finished, ``workers`` at a time, each probed after its training if it
    asks for a probe (a finished run that asks for one and has none is probed only).

    :param backend: ``local`` (processes on this machine) or ``ray`` (Ray tasks; a cluster if
        ``RAY_ADDRESS`` is set, else a local Ray instance). Run dirs must be on storage that
        every Ray node sees.
    :return: one line per failed job.
    """
    pending = [job for job in jobs if not job.finished or job.needs_probe]
    if not pending:
        return []
    # Each run gets its share of the cores, unless the user set OMP_NUM_THREADS (e.g. several comparisons at once).
    threads = int(os.environ.get("OMP_NUM_THREADS") or max(1, (os.cpu_count() or 1) // workers))
    if backend == "ray":
        return _run_jobs_on_ray(pending, workers, threads)
    if backend != "local":
        raise RunError(f"unknown backend {backend!r}; choose local or ray")
    from tqdm import tqdm

    failures = []
    pool = ThreadPoolExecutor(max_workers=workers)
    started = time.perf_counter()
    bar = progress and sys.stdout.isatty()
    try:
        with sigterm_as_interrupt():
            futures = [pool.submit(_run_job_locally, job, threads) for job in pending]
            completed = tqdm(as_completed(futures), total=len(futures), desc="runs", disable=not bar)
            for done, future in enumerate(completed, start=1):
                job, code, last_line = future.result()
                if code != 0:
                    failures.append(f"{job.run_dir}: exit {code}: {last_line}")
                if progress and not bar:
                    print(_progress_line(job, code, done, len(futures), time.perf_counter() - started), flush=True)
    except KeyboardInterrupt:
        pool.shutdown(wait=False, cancel_futures=True)
        stopped = stop_live_runs()
        raise RunInterrupted(
            f"comparison stopped; {stopped} runs saved a checkpoint and stopped; run the same command again to resume"
        ) from None
    finally:
        pool.shutdown(wait=True)
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
            # Ray starts its workers at niceness 15, so runs would crawl beside any other load on
            # the machine; the local backend's runs have the user's priority, and so do these.
            worker_niceness = {"worker_niceness": 0}
            ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False, _system_config=worker_niceness)

    # max_calls=1: a fresh worker process per run, as with the local backend. A task whose worker
    # dies is retried (max_retries), and its command resumes from the run's checkpoint.
    @ray.remote(num_cpus=1, max_calls=1, max_retries=3)
    def run_remote(job: Job) -> tuple[Job, int, str]:
        if job.run_dir.exists():
            # A retry: the killed attempt's run may still be saving its checkpoint (it got SIGTERM).
            FolderLock(job.run_dir, "training run").acquire(wait=300).release()
        return _run_job_locally(job, threads)

    try:
        results = ray.get([run_remote.remote(job) for job in jobs])
    finally:
        if started_here:
            ray.shutdown()
    return [f"{job.run_dir}: exit {code}: {line}" for job, code, line in results if code != 0]


def probe_table(run_dir: Path, policy: str = "agent") -> Path:
    """Where ``run_agent.py probe [--policy explore]`` leaves a run's probe scores."""
    return Path(run_dir) / "probe" / ("probe.csv" if policy == "agent" else f"{policy}.csv")
