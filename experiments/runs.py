"""Training runs on disk: config, checkpoints, resume, evaluation, learning curves.

A run directory holds ``config.yaml`` (what was asked for), ``settings.yaml`` (what that built: every
setting of the algorithm, policy, CPC, env and run), ``provenance.yaml`` (code, versions, machine and
command of each start or resume), ``command.txt``, ``status.json``,
``model.zip`` (when finished), ``checkpoints/``, ``monitor/`` (SB3 Monitor CSVs),
``logs/segment_*/`` (SB3's ``progress.csv`` and TensorBoard events; one segment per start or
resume), ``evaluations.csv`` and ``learning_curve.png``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import pickle
import shlex
import shutil
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import yaml
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import configure

from cpc_rl import envs
from cpc_rl.agents.factory import ALGORITHM_CLASSES, make_agent
from cpc_rl.experiments.config import (
    RunConfig,
    RunError,
    RunFailed,
    RunInterrupted,
    check_hyperparams,
    chosen_vec_env,
    learner_threads,
)
from cpc_rl.experiments.files import (
    save_figure_atomically,
    save_model_atomically,
    write_json,
    write_text_atomically,
    write_yaml,
)
from cpc_rl.experiments.record import (
    PROVENANCE_FILE,
    SETTINGS_FILE,
    SettingsError,
    agent_defining,
    differences,
    effective_settings,
    portable_command,
    provenance,
    resolve_references,
)
from cpc_rl.experiments.safety import (
    ActingThreads,
    FiniteGuard,
    FolderLock,
    NonFiniteError,
    ReleaseFreedMemory,
    close_vec_env,
    dead_workers,
    describe_exit,
    ignore_stop_signals,
    is_disk_full,
    non_finite_parameter,
    sigterm_as_interrupt,
)
from cpc_rl.experiments.stats import mean_ci, wilson_interval
from cpc_rl.sb3.config import SETTINGS_BEFORE_THE_KEY


def build_model(config: RunConfig, vec_env: Any) -> BaseAlgorithm:
    """The model of a fresh run (settings recorded by ``--like`` name their classes: they are imported here)."""
    try:
        hyperparams = resolve_references(config.hyperparams)
    except SettingsError as error:
        raise RunError(f"bad hyper-parameters for {config.algo}: {error}") from None
    try:
        return make_agent(
            config.algo,
            vec_env,
            aux=config.aux,
            seed=config.seed,
            device=config.device,
            precision=config.precision,
            cpc_kwargs=dict(config.cpc_kwargs) or None,
            **hyperparams,
        )
    except (ValueError, TypeError) as error:
        raise RunError(f"bad hyper-parameters for {config.algo}: {error}") from None


def read_settings(run_dir: Path) -> dict[str, Any] | None:
    """A run's effective settings (``settings.yaml``), or None for a run made before they were recorded."""
    path = Path(run_dir) / SETTINGS_FILE
    if not path.is_file():
        return None
    try:
        settings = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise RunError(f"{path} is not valid YAML ({error}); restore it from version control") from None
    if not isinstance(settings, dict) or not {"run", "algorithm", "env"} <= set(settings):
        raise RunError(f"{path} is not a settings file (it needs run, algorithm and env)")
    return settings


def like_config(run_dir: Path) -> RunConfig:
    """
    A config that builds the agent recorded in ``run_dir/settings.yaml`` whatever today's presets
    say: every algorithm argument, policy kwarg, CPC and env setting is given explicitly.
    Run settings (threads, vec env, device) are not replayed: they keep their defaults.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunError(f"run directory {run_dir} does not exist")
    settings = read_settings(run_dir)
    if settings is None:
        raise RunError(
            f"{run_dir} has no {SETTINGS_FILE} (a run made before runs recorded their settings, or not a run "
            "directory): nothing exact to replay"
        )
    run, env = settings["run"], settings["env"]
    arguments = dict(settings["algorithm"]["arguments"])
    cpc_kwargs = arguments.pop("cpc_kwargs", None)
    try:
        resolve_references(arguments)  # an unknown or untrusted class fails here, before anything starts
    except SettingsError as error:
        raise RunError(f"{run_dir / SETTINGS_FILE}: {error}") from None
    kept = ("env", "algo", "aux", "steps", "seed", "eval_freq", "eval_episodes", "save_freq", "keep_checkpoints")
    return RunConfig(
        **{key: run[key] for key in kept},
        n_envs=env["n_envs"],
        precision=run.get("precision", "float32"),
        hyperparams=arguments,
        # Settings recorded before a CPC key existed were trained as SETTINGS_BEFORE_THE_KEY says, not
        # as today's default would.
        cpc_kwargs={**SETTINGS_BEFORE_THE_KEY, **cpc_kwargs} if cpc_kwargs else {},
        env_kwargs=env.get("kwargs") or {},
    )


def _record_settings(run: Run, model: BaseAlgorithm, vec_env: Any, resume: bool) -> None:
    """
    Write ``settings.yaml`` (a fresh run, or a run from before it existed) and add this segment to
    ``provenance.yaml``. A resumed run whose recorded settings today's code would not build from
    the same config is refused, before anything is written.
    """
    config, run_dir = run.config, run.dir
    recorded = read_settings(run_dir)
    if resume and recorded is not None:
        with torch.random.fork_rng():
            fresh = build_model(config, vec_env)
        today = effective_settings(config.to_dict(), fresh, vec_env, run.setup)
        del fresh
        changed = differences(agent_defining(recorded), agent_defining(today))
        if changed:
            raise RunError(
                f"today's code would build a different agent from {run_dir}/config.yaml ({'; '.join(changed[:3])}"
                f"{f'; {len(changed) - 3} more' if len(changed) > 3 else ''}): resume it with the code in its "
                f"provenance.yaml, or start a run with its settings: train --like {run_dir} --run-dir NEW_DIR"
            )
    if recorded is None:
        settings = effective_settings(config.to_dict(), model, vec_env, run.setup)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        late = " at a resume (the run began before settings were recorded)" if resume else ""
        settings = {"recorded": f"{stamp}{late}", **settings}
        write_yaml(run_dir / SETTINGS_FILE, settings)
    path = run_dir / PROVENANCE_FILE
    earlier = yaml.safe_load(path.read_text()) if path.is_file() else None
    segments = earlier.get("segments", []) if isinstance(earlier, dict) else []
    write_yaml(path, {**(earlier or {}), "segments": [*segments, provenance()]})


def load_model(config: RunConfig, path: Path, vec_env: Any = None) -> BaseAlgorithm:
    """Load a saved model, turning a corrupt or truncated file into a :class:`RunError`."""
    try:
        return ALGORITHM_CLASSES[config.algo].load(path, env=vec_env, device=config.device)
    except (zipfile.BadZipFile, EOFError, KeyError, ValueError, RuntimeError, pickle.UnpicklingError, OSError) as error:
        raise RunError(
            f"checkpoint {path} is corrupt or unreadable ({type(error).__name__}: {error}); "
            "move it away to resume from an earlier checkpoint"
        ) from None


def checkpoints(run_dir: Path) -> list[Path]:
    """Checkpoints of a run, oldest first."""
    return sorted((run_dir / "checkpoints").glob("step_*.zip"))


def read_config(run_dir: Path) -> RunConfig:
    path = run_dir / "config.yaml"
    if not path.is_file():
        raise RunError(f"{run_dir} is not a run directory (no config.yaml); check the path")
    try:
        return RunConfig.from_dict(yaml.safe_load(path.read_text()))
    except (yaml.YAMLError, TypeError) as error:
        raise RunError(f"{path} is not a valid run config ({error})") from None


def resume_config(run_dir: Path) -> RunConfig:
    """
    The config that resumes ``run_dir``: how it runs (steps, evaluations, checkpoints, threads...)
    from its ``config.yaml``, the agent from its ``settings.yaml`` (as ``--like`` replays it), so a
    run continues as the agent it is even after a default it relied on has changed. Runs from before
    settings were recorded resume from ``config.yaml`` alone.
    """
    config = read_config(run_dir)
    if not (run_dir / SETTINGS_FILE).is_file():  # like_config reads and checks it
        return config
    how_it_runs = ("steps", "eval_freq", "eval_episodes", "save_freq", "keep_checkpoints")
    how_it_runs += ("device", "vec_env", "threads")
    return dataclasses.replace(like_config(run_dir), **{key: getattr(config, key) for key in how_it_runs})


def read_status(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "status.json"
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return {}


def monitor_tables(run_dir: Path) -> list[pd.DataFrame]:
    """The run's Monitor CSVs (one per env) by file name, less the empty or unreadable (a run killed mid-write)."""
    tables = []
    for path in sorted((run_dir / "monitor").glob("*.monitor.csv")):
        try:
            table = pd.read_csv(path, comment="#")
        except (pd.errors.EmptyDataError, pd.errors.ParserError):
            continue
        if not table.empty:
            tables.append(table)
    return tables


def cpu_hours(run_dir: Path) -> float:
    """
    CPU hours a run has cost so far: its CPU time from ``status.json`` where recorded, else its
    wall time (runs from before CPU time was recorded ran on one core each), else its Monitor clocks.
    """
    status = read_status(run_dir)
    if status.get("state") in ("finished", "interrupted", "failed"):
        if "cpu_seconds" in status:
            return status["cpu_seconds"] / 3600
        if "wall_seconds" in status:
            return status["wall_seconds"] / 3600
    clocks = [float(table["t"].max()) for table in monitor_tables(run_dir) if "t" in table.columns]
    return max(clocks, default=status.get("wall_seconds", 0.0)) / 3600


def run_episodes(
    model: BaseAlgorithm,
    config: RunConfig,
    episodes: int,
    seed: int,
    record: bool = False,
    deterministic: bool = False,
) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """
    Roll out ``model`` for whole episodes on a fresh env (stochastic policy by default, as in
    training: MiniWorld agents acting greedily often turn in place forever).

    :return: episode returns, episode lengths, and the frames if ``record``.
    """
    env = envs.make_env(config.env, seed=seed, **config.env_kwargs)
    returns, lengths, frames = [], [], []
    try:
        for _ in range(episodes):
            obs, _ = env.reset()
            if record:
                frames.append(obs)
            state, start, done, total, length = None, True, False, 0.0, 0
            while not done:
                action, state = model.predict(
                    obs, state=state, episode_start=np.array([start]), deterministic=deterministic
                )
                obs, reward, terminated, truncated, _ = env.step(int(action))
                start, done = False, terminated or truncated
                total, length = total + reward, length + 1
                if record:
                    frames.append(obs)
            returns.append(total)
            lengths.append(length)
    finally:
        env.close()
    return np.array(returns), np.array(lengths), frames


def summarise_episodes(returns: np.ndarray) -> dict[str, float]:
    """Mean return with its 95% CI half-width, and success rate (return > 0) with its Wilson CI."""
    mean, half_width = mean_ci(returns)
    successes = int((returns > 0).sum())
    low, high = wilson_interval(successes, len(returns))
    return {
        "mean_return": mean,
        "return_ci95": half_width,
        "success_rate": successes / len(returns),
        "success_low": low,
        "success_high": high,
        "episodes": len(returns),
    }


def episode_curve(run_dir: Path) -> pd.DataFrame:
    """Training episodes from the Monitor CSVs: ``step`` (env steps of all envs) and ``return``."""
    n_envs = len(list((run_dir / "monitor").glob("*.monitor.csv")))
    # The envs step in lockstep, so env i's step count times the number of envs is the run's.
    frames = [
        pd.DataFrame({"step": table["l"].cumsum() * n_envs, "return": table["r"]})
        for table in monitor_tables(run_dir)
        if {"r", "l"} <= set(table.columns)
    ]
    if not frames:
        return pd.DataFrame({"step": [], "return": []})
    return pd.concat(frames).sort_values("step").reset_index(drop=True)


def training_log(run_dir: Path) -> pd.DataFrame:
    """SB3's ``progress.csv`` of all of a run's segments, in order (empty if none logged a row)."""
    # A segment stopped before SB3's first dump leaves an empty file: it logged nothing.
    paths = (run_dir / "logs").glob("segment_*/progress.csv")
    paths = sorted(paths, key=lambda path: int(path.parent.name.removeprefix("segment_")))
    frames = [pd.read_csv(path) for path in paths if path.stat().st_size > 0]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def plot_learning_curve(run_dir: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 3.6))
    episodes = episode_curve(run_dir)
    if len(episodes):
        window = max(1, min(50, len(episodes) // 5))
        axis.plot(episodes["step"], episodes["return"], ".", alpha=0.15, color="tab:blue", markersize=3)
        axis.plot(
            episodes["step"],
            episodes["return"].rolling(window, min_periods=1).mean(),
            color="tab:blue",
            label=f"training episodes (mean of {window})",
        )
    evaluations_path = run_dir / "evaluations.csv"
    if evaluations_path.is_file():
        evaluations = pd.read_csv(evaluations_path)
        if len(evaluations):
            axis.errorbar(
                evaluations["step"],
                evaluations["mean_return"],
                yerr=evaluations["return_ci95"],
                color="tab:orange",
                marker="o",
                capsize=3,
                label="evaluation (95% CI)",
            )
    axis.set_xlabel("env steps")
    axis.set_ylabel("episode return")
    axis.set_title(title, fontsize=10)
    axis.grid(alpha=0.3)
    if axis.get_legend_handles_labels()[0]:
        axis.legend(fontsize=8, loc="upper left")
    path = run_dir / "learning_curve.png"
    save_figure_atomically(figure, path)
    plt.close(figure)
    return path


def _cpu_seconds() -> float:
    """
    CPU time of this process and of its children that have exited (env workers once closed).
    Beside other work a run's wall time overstates what it used; this does not.
    """
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


class Run:
    """One training run in its directory."""

    def __init__(self, run_dir: Path, config: RunConfig) -> None:
        self.dir = Path(run_dir)
        self.config = config
        self.title = f"{config.env} {config.algo} aux={config.aux} seed={config.seed}"
        # Wall and CPU time of earlier segments (a resumed run), so that the costs cover the whole run.
        previous = read_status(self.dir)
        self._earlier_seconds = previous.get("wall_seconds", 0.0)
        self._earlier_cpu_seconds = previous.get("cpu_seconds", 0.0)
        self.eval_seconds = previous.get("eval_seconds", 0.0)
        self._started = time.perf_counter()
        self._started_cpu = _cpu_seconds()
        self.setup: dict[str, Any] = {}  # how this segment runs (threads, vec env): in every status
        self.last_evaluation: dict[str, float] | None = None

    def write_status(self, state: str, steps: int, **extra: Any) -> None:
        wall = self._earlier_seconds + time.perf_counter() - self._started
        cpu = self._earlier_cpu_seconds + _cpu_seconds() - self._started_cpu
        costs = {
            "wall_seconds": wall,
            "cpu_seconds": cpu,
            "eval_seconds": self.eval_seconds,
            "train_seconds": wall - self.eval_seconds,
        }
        write_json(
            self.dir / "status.json",
            {"state": state, "num_timesteps": steps, "updated": time.time(), **costs, **self.setup, **extra},
        )

    def save_checkpoint(self, model: BaseAlgorithm) -> Path:
        """Save a checkpoint and drop the oldest beyond ``keep_checkpoints``; never one with NaN/inf weights."""
        bad = non_finite_parameter(model.policy)
        if bad is not None:
            raise NonFiniteError(f"weight {bad} is non-finite at step {model.num_timesteps}")
        path = self.dir / "checkpoints" / f"step_{model.num_timesteps:010d}.zip"
        save_model_atomically(model, path)
        for old in checkpoints(self.dir)[: -self.config.keep_checkpoints]:
            old.unlink(missing_ok=True)
        return path

    def evaluate(self, model: BaseAlgorithm) -> dict[str, float]:
        started = time.perf_counter()
        returns, _, _ = run_episodes(model, self.config, self.config.eval_episodes, seed=self.config.seed + 10_000)
        self.eval_seconds += time.perf_counter() - started
        row = {"step": model.num_timesteps, **summarise_episodes(returns)}
        self.last_evaluation = row
        path = self.dir / "evaluations.csv"
        table = pd.read_csv(path) if path.is_file() else pd.DataFrame()
        table = pd.concat([table[table["step"] < row["step"]] if len(table) else table, pd.DataFrame([row])])
        write_text_atomically(path, table.to_csv(index=False))
        plot_learning_curve(self.dir, self.title)
        return row


class _RunCallback(BaseCallback):
    """Periodic evaluation and checkpoints, by env steps."""

    def __init__(self, run: Run) -> None:
        super().__init__()
        self.run = run
        self.next_eval = self.next_save = math.inf

    def _on_training_start(self) -> None:
        config = self.run.config
        if config.eval_freq > 0:
            self.next_eval = (self.num_timesteps // config.eval_freq + 1) * config.eval_freq
        if config.save_freq > 0:
            self.next_save = (self.num_timesteps // config.save_freq + 1) * config.save_freq

    def _on_step(self) -> bool:
        if self.num_timesteps >= self.next_eval:
            self.run.evaluate(self.model)
            self.next_eval += self.run.config.eval_freq
        if self.num_timesteps >= self.next_save:
            self.run.save_checkpoint(self.model)
            self.run.write_status("running", self.num_timesteps)
            self.next_save += self.run.config.save_freq
        return True


class _ProgressCallback(BaseCallback):
    """
    Progress of the whole run (also after a resume): a bar on a terminal, else a plain line every
    ``every_seconds`` (steps, steps/s, ETA, last evaluation, CPC accuracy) that reaches a log file.
    """

    def __init__(self, run: Run, every_seconds: float) -> None:
        super().__init__()
        self.run = run
        self.every_seconds = every_seconds
        self.bar: Any = None

    def _on_training_start(self) -> None:
        self.first_step, self.started = self.num_timesteps, time.perf_counter()
        self.last_line = self.started
        if sys.stdout.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=self.run.config.steps, initial=self.num_timesteps, unit="step", dynamic_ncols=True)

    def _on_step(self) -> bool:
        if self.bar is not None:
            self.bar.update(self.num_timesteps - self.bar.n)
        elif time.perf_counter() - self.last_line >= self.every_seconds:
            self.last_line = time.perf_counter()
            print(self.line(), flush=True)
        return True

    def line(self) -> str:
        total, done = self.run.config.steps, self.num_timesteps
        rate = (done - self.first_step) / max(time.perf_counter() - self.started, 1e-9)
        eta = (total - done) / rate if rate > 0 else math.inf
        parts = [f"{done}/{total} steps ({done / total:.0%})", f"{rate:.0f} steps/s", f"ETA {format_duration(eta)}"]
        if self.run.last_evaluation is not None:
            parts.append(f"last evaluation return {self.run.last_evaluation['mean_return']:.2f}")
        figures = getattr(self.model, "cpc_figures", None)
        if figures:
            accuracy, first = figures["train/cpc_accuracy"], figures["train/cpc_accuracy_k1"]
            parts.append(f"CPC accuracy {accuracy:.1%} (k=1 {first:.1%})")
        return "progress: " + ", ".join(parts)

    def _on_training_end(self) -> None:
        if self.bar is not None:
            self.bar.close()


def format_duration(seconds: float) -> str:
    """``12m05s`` or ``1h02m``; ``?`` for an unknown (infinite) duration."""
    if not math.isfinite(seconds):
        return "?"
    minutes, seconds = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s"


def validate(config: RunConfig) -> None:
    """
    Every check that needs no env worker: the config, the hyper-parameters against the
    algorithm's signature, and one env made in this process with the env settings.

    :raises RunError: for the first thing that cannot work, saying how to fix it.
    """
    config.check()
    check_hyperparams(config)
    try:
        envs.make_env(config.env, **config.env_kwargs).close()
    except (ValueError, TypeError) as error:
        raise RunError(f"cannot make {config.env} with env settings {config.env_kwargs}: {error}") from None


def train(
    config: RunConfig,
    run_dir: Path,
    progress: bool = True,
    resume: bool = False,
    validated: bool = False,
    progress_seconds: float = 30.0,
) -> dict[str, Any]:
    """
    Train (or resume) a run. Ctrl-C saves a checkpoint and raises :class:`RunInterrupted`.

    :param progress: a bar on a terminal, else a line every ``progress_seconds``.
    :param validated: :func:`validate` has already passed for ``config``.
    :return: the final evaluation, with ``run_dir`` and ``num_timesteps``.
    """
    run_dir = Path(run_dir)
    if not validated:
        validate(config)
    run = Run(run_dir, config)
    if resume:
        if read_status(run_dir).get("state") == "finished":
            raise RunError(f"the run in {run_dir} has already finished ({config.steps} steps)")
        if not checkpoints(run_dir):
            raise RunError(f"{run_dir} holds no checkpoint to resume from; start it again with train --run-dir")
    elif (run_dir / "config.yaml").exists():
        raise RunError(f"{run_dir} already holds a run; resume it with: train --resume {run_dir} (or use another dir)")
    created = not run_dir.exists()
    lock = FolderLock(run_dir, "training run").acquire()
    try:
        return _train_locked(run, resume, created, progress, progress_seconds)
    finally:
        lock.release()


def _train_locked(run: Run, resume: bool, created: bool, progress: bool, progress_seconds: float) -> dict[str, Any]:
    config, run_dir = run.config, run.dir
    torch.set_num_threads(learner_threads(config))
    vec_kind = chosen_vec_env(config)
    vec_env = envs.make_vec_env(
        config.env,
        config.num_envs,
        seed=config.seed,
        vec_env=vec_kind,
        monitor_dir=str(run_dir / "monitor"),
        **config.env_kwargs,
    )
    model = None
    try:
        try:
            model = load_model(config, checkpoints(run_dir)[-1], vec_env) if resume else build_model(config, vec_env)
        except RunError:
            if created:  # nothing was trained: leave no half-made run behind
                shutil.rmtree(run_dir, ignore_errors=True)
            raise
        run.setup = {"threads": torch.get_num_threads(), "vec_env": vec_kind}
        try:
            _record_settings(run, model, vec_env, resume)
        except RunError:
            if created:
                shutil.rmtree(run_dir, ignore_errors=True)
            raise
        if not resume:  # config.yaml stays what the user asked for; settings.yaml says what it built
            write_yaml(run_dir / "config.yaml", config.to_dict())
        with open(run_dir / "command.txt", "a") as file:
            file.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {shlex.join(portable_command())}\n")
        remaining = config.steps - model.num_timesteps
        run.write_status("running", model.num_timesteps)
        with sigterm_as_interrupt():
            if remaining > 0:  # a run stopped after its last step only evaluates: no log segment
                segment = len(list((run_dir / "logs").glob("segment_*"))) if (run_dir / "logs").exists() else 0
                model.set_logger(configure(str(run_dir / "logs" / f"segment_{segment}"), ["csv", "tensorboard"]))
                callbacks = [FiniteGuard(), ReleaseFreedMemory(), _RunCallback(run)]
                callbacks += [ActingThreads(torch.get_num_threads())]
                callbacks += [_ProgressCallback(run, progress_seconds)] if progress else []
                model.learn(remaining, callback=callbacks, reset_num_timesteps=not resume)
            save_model_atomically(model, run_dir / "model.zip")
            torch.set_num_threads(1)  # evaluating only acts (see ActingThreads)
            final = run.evaluate(model)
        run.write_status("finished", model.num_timesteps, final=final)
    except KeyboardInterrupt:
        if model is None:
            raise
        # A second Ctrl-C or SIGTERM must not cut the checkpoint short.
        with ignore_stop_signals():
            path = run.save_checkpoint(model)
            run.write_status("interrupted", model.num_timesteps, checkpoint=str(path.relative_to(run_dir)))
        raise RunInterrupted(
            f"interrupted at {model.num_timesteps} steps; checkpoint {path}; "
            f"resume with: python run_agent.py train --resume {run_dir}"
        ) from None
    except (EOFError, ConnectionError, BrokenPipeError) as error:
        dead = dead_workers(vec_env)
        if not dead:
            raise
        index, pid, code = dead[0]
        path = run.save_checkpoint(model)  # the weights of the last completed update
        reason = f"env worker {index} ({config.env}, seed {config.seed + index}, pid {pid}) died: {describe_exit(code)}"
        run.write_status("failed", model.num_timesteps, reason=reason, checkpoint=str(path.relative_to(run_dir)))
        raise RunFailed(
            f"{reason}, at step {model.num_timesteps}; checkpoint {path}; "
            f"resume with: python run_agent.py train --resume {run_dir}"
        ) from error
    except (NonFiniteError, ValueError) as error:
        # torch's distributions refuse NaN logits with a ValueError in the middle of an update.
        if isinstance(error, ValueError):
            if model is None or "found invalid values" not in str(error):
                raise
            bad = non_finite_parameter(model.policy)
            what = f"weight {bad} became non-finite" if bad else "the policy's outputs became NaN (weights overflowed)"
            error = NonFiniteError(f"{what} during the update at step {model.num_timesteps}")
        saved = checkpoints(run_dir)
        last = f"the last good checkpoint {saved[-1]} is kept" if saved else "no checkpoint was saved before it"
        run.write_status("failed", model.num_timesteps if model is not None else 0, reason=str(error))
        raise RunFailed(f"stopped: {error}; {last}; nothing was saved with non-finite weights") from None
    except OSError as error:
        if not is_disk_full(error):
            raise
        saved = checkpoints(run_dir)
        last = f"the last checkpoint {saved[-1].name}" if saved else "no checkpoint"
        raise RunFailed(
            f"the disk is full (or a file size limit was reached) writing {error.filename or 'a result'}: "
            f"{error.strerror}. Nothing already written was overwritten ({last}, config.yaml and the CSVs are intact); "
            f"free space and resume with: python run_agent.py train --resume {run_dir}"
        ) from None
    finally:
        close_vec_env(vec_env)
    return {"run_dir": str(run_dir), "num_timesteps": model.num_timesteps, **final}


def latest_model_path(run_dir: Path) -> Path:
    """``model.zip`` of a finished run, else its newest checkpoint."""
    if (run_dir / "model.zip").is_file():
        return run_dir / "model.zip"
    saved = checkpoints(run_dir)
    if not saved:
        raise RunError(f"{run_dir} holds no model.zip and no checkpoint; train it first")
    return saved[-1]
