"""Training runs on disk: config, checkpoints, resume, evaluation, learning curves.

A run directory holds ``config.yaml`` (the resolved config), ``command.txt``, ``status.json``,
``model.zip`` (when finished), ``checkpoints/``, ``monitor/`` (SB3 Monitor CSVs),
``logs/segment_*/`` (SB3's ``progress.csv`` and TensorBoard events; one segment per start or
resume), ``evaluations.csv`` and ``learning_curve.png``.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import math
import pickle
import shlex
import shutil
import sys
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import configure

import envs
from agents.factory import ALGORITHM_CLASSES, make_agent
from agents.presets import ALGORITHMS, AUX_CHOICES, preset
from experiments.files import (
    save_figure_atomically,
    save_model_atomically,
    write_json,
    write_text_atomically,
    write_yaml,
)
from experiments.stats import mean_ci, wilson_interval

DEFAULT_ENV = "MiniWorld-Hallway-v0"
KEEP_CHECKPOINTS = 3


class RunError(Exception):
    """A mistake the user can fix; the CLI prints it as one line and exits with code 2."""


class RunInterrupted(Exception):
    """Training stopped by Ctrl-C after saving a checkpoint."""


@dataclass
class RunConfig:
    """
    Everything that defines a training run (saved as ``config.yaml``).

    :param env: MiniWorld id.
    :param algo: ``a2c``, ``ppo`` or ``recurrent_ppo``.
    :param aux: ``cpc``, ``cpca`` or ``none``.
    :param steps: total env steps.
    :param seed: seed of the algorithm and envs.
    :param n_envs: parallel envs (None: the preset's).
    :param device: torch device (``auto``: the GPU if there is one).
    :param vec_env: ``subproc`` or ``dummy``.
    :param eval_freq: env steps between evaluations (0: only at the end).
    :param eval_episodes: episodes per evaluation.
    :param save_freq: env steps between checkpoints (0: only on interrupt).
    :param hyperparams: overrides of the algorithm's preset arguments.
    :param cpc_kwargs: overrides of the preset's CPC settings.
    :param env_kwargs: passed to the MiniWorld env (``max_episode_steps``, ...).
    """

    env: str = DEFAULT_ENV
    algo: str = "recurrent_ppo"
    aux: str = "cpc"
    steps: int = 50_000
    seed: int = 0
    n_envs: int | None = None
    device: str = "auto"
    vec_env: str = "subproc"
    eval_freq: int = 10_000
    eval_episodes: int = 10
    save_freq: int = 10_000
    hyperparams: dict[str, Any] = field(default_factory=dict)
    cpc_kwargs: dict[str, Any] = field(default_factory=dict)
    env_kwargs: dict[str, Any] = field(default_factory=dict)

    def check(self) -> None:
        """Raise :class:`RunError` for settings that cannot work."""
        try:
            envs.check_env_id(self.env)
        except ValueError as error:
            raise RunError(str(error)) from None
        if self.algo not in ALGORITHMS:
            raise RunError(f"unknown algo {self.algo!r}; choose one of {', '.join(ALGORITHMS)}")
        if self.aux not in AUX_CHOICES:
            raise RunError(f"unknown aux {self.aux!r}; choose one of {', '.join(AUX_CHOICES)}")
        for name in ("steps", "eval_episodes"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise RunError(f"{name} must be an integer >= 1; got {getattr(self, name)!r}")
        if self.n_envs is not None and (not isinstance(self.n_envs, int) or self.n_envs < 1):
            raise RunError(f"n_envs must be an integer >= 1; got {self.n_envs!r}")
        if self.aux == "none" and self.cpc_kwargs:
            raise RunError(f"CPC settings {self.cpc_kwargs} given with aux=none; use --aux cpc or cpca")

    @property
    def num_envs(self) -> int:
        return self.n_envs or preset(self.algo, self.aux)["n_envs"]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise RunError(f"unknown config keys {unknown}; valid keys: {sorted(known)}")
        return cls(**data)


def parse_value(text: str) -> Any:
    """A ``--set`` value: a Python literal (``ast.literal_eval``), else the string itself."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def apply_overrides(config: RunConfig, assignments: list[str]) -> RunConfig:
    """
    Apply ``key=value`` overrides: ``cpc.KEY`` goes to ``cpc_kwargs``, ``env.KEY`` to
    ``env_kwargs``, ``policy.KEY`` to the policy kwargs, a run setting (``eval_freq``, ...) to
    the run, anything else to the algorithm's hyper-parameters.
    """
    data = config.to_dict()
    run_keys = set(data) - {"hyperparams", "cpc_kwargs", "env_kwargs"}
    for assignment in assignments:
        key, separator, text = assignment.partition("=")
        key = key.strip()
        if not separator or not key:
            raise RunError(f"--set needs key=value; got {assignment!r}")
        value = parse_value(text.strip())
        prefix, _, rest = key.partition(".")
        if prefix == "cpc" and rest:
            data["cpc_kwargs"][rest] = value
        elif prefix == "env" and rest:
            data["env_kwargs"][rest] = value
        elif prefix == "policy" and rest:
            data["hyperparams"].setdefault("policy_kwargs", {})[rest] = value
        elif key in run_keys:
            data[key] = value
        else:
            data["hyperparams"][key] = value
    return RunConfig.from_dict(data)


def build_model(config: RunConfig, vec_env: Any) -> BaseAlgorithm:
    """The model of a fresh run."""
    try:
        return make_agent(
            config.algo,
            vec_env,
            aux=config.aux,
            seed=config.seed,
            device=config.device,
            cpc_kwargs=dict(config.cpc_kwargs) or None,
            **config.hyperparams,
        )
    except (ValueError, TypeError) as error:
        raise RunError(f"bad hyper-parameters for {config.algo}: {error}") from None


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


def read_status(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "status.json"
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return {}


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
    frames = []
    files = sorted((run_dir / "monitor").glob("*.monitor.csv"))
    for path in files:
        try:
            table = pd.read_csv(path, comment="#")
        except (pd.errors.EmptyDataError, pd.errors.ParserError):
            continue
        if table.empty or not {"r", "l"} <= set(table.columns):
            continue
        # The envs step in lockstep, so env i's step count times the number of envs is the run's.
        frames.append(pd.DataFrame({"step": table["l"].cumsum() * len(files), "return": table["r"]}))
    if not frames:
        return pd.DataFrame({"step": [], "return": []})
    return pd.concat(frames).sort_values("step").reset_index(drop=True)


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


class Run:
    """One training run in its directory."""

    def __init__(self, run_dir: Path, config: RunConfig) -> None:
        self.dir = Path(run_dir)
        self.config = config
        self.title = f"{config.env} {config.algo} aux={config.aux} seed={config.seed}"
        # Wall time of earlier segments (a resumed run), so that the costs cover the whole run.
        previous = read_status(self.dir)
        self._earlier_seconds = previous.get("wall_seconds", 0.0)
        self.eval_seconds = previous.get("eval_seconds", 0.0)
        self._started = time.perf_counter()

    def write_status(self, state: str, steps: int, **extra: Any) -> None:
        wall = self._earlier_seconds + time.perf_counter() - self._started
        costs = {"wall_seconds": wall, "eval_seconds": self.eval_seconds, "train_seconds": wall - self.eval_seconds}
        write_json(
            self.dir / "status.json",
            {"state": state, "num_timesteps": steps, "updated": time.time(), **costs, **extra},
        )

    def save_checkpoint(self, model: BaseAlgorithm) -> Path:
        path = self.dir / "checkpoints" / f"step_{model.num_timesteps:010d}.zip"
        save_model_atomically(model, path)
        for old in checkpoints(self.dir)[:-KEEP_CHECKPOINTS]:
            old.unlink(missing_ok=True)
        return path

    def evaluate(self, model: BaseAlgorithm) -> dict[str, float]:
        started = time.perf_counter()
        returns, _, _ = run_episodes(model, self.config, self.config.eval_episodes, seed=self.config.seed + 10_000)
        self.eval_seconds += time.perf_counter() - started
        row = {"step": model.num_timesteps, **summarise_episodes(returns)}
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


def train(config: RunConfig, run_dir: Path, progress_bar: bool = True, resume: bool = False) -> dict[str, Any]:
    """
    Train (or resume) a run. Ctrl-C saves a checkpoint and raises :class:`RunInterrupted`.

    :return: the final evaluation, with ``run_dir`` and ``num_timesteps``.
    """
    run_dir = Path(run_dir)
    config.check()
    run = Run(run_dir, config)
    if resume:
        saved = checkpoints(run_dir)
        if read_status(run_dir).get("state") == "finished":
            raise RunError(f"the run in {run_dir} has already finished ({config.steps} steps)")
        if not saved:
            raise RunError(f"{run_dir} holds no checkpoint to resume from; start it again with train --run-dir")
    elif (run_dir / "config.yaml").exists():
        raise RunError(f"{run_dir} already holds a run; resume it with: train --resume {run_dir} (or use another dir)")
    created = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    vec_env = envs.make_vec_env(
        config.env,
        config.num_envs,
        seed=config.seed,
        vec_env=config.vec_env,
        monitor_dir=str(run_dir / "monitor"),
        **config.env_kwargs,
    )
    try:
        try:
            model = load_model(config, saved[-1], vec_env) if resume else build_model(config, vec_env)
        except RunError:
            if created:  # nothing was trained: leave no half-made run behind
                shutil.rmtree(run_dir, ignore_errors=True)
            raise
        write_yaml(run_dir / "config.yaml", config.to_dict())
        with open(run_dir / "command.txt", "a") as file:
            file.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {shlex.join([sys.executable, *sys.argv])}\n")
        segment = len(list((run_dir / "logs").glob("segment_*"))) if (run_dir / "logs").exists() else 0
        model.set_logger(configure(str(run_dir / "logs" / f"segment_{segment}"), ["csv", "tensorboard"]))
        remaining = config.steps - model.num_timesteps
        run.write_status("running", model.num_timesteps)
        try:
            if remaining > 0:
                model.learn(
                    remaining, callback=_RunCallback(run), reset_num_timesteps=not resume, progress_bar=progress_bar
                )
        except KeyboardInterrupt:
            path = run.save_checkpoint(model)
            run.write_status("interrupted", model.num_timesteps, checkpoint=str(path))
            raise RunInterrupted(
                f"interrupted at {model.num_timesteps} steps; checkpoint {path}; "
                f"resume with: python run_agent.py train --resume {run_dir}"
            ) from None
        save_model_atomically(model, run_dir / "model.zip")
        final = run.evaluate(model)
        run.write_status("finished", model.num_timesteps, final=final)
    finally:
        try:
            vec_env.close()
        except (EOFError, BrokenPipeError, ConnectionResetError):
            pass  # workers already gone (Ctrl-C reaches them too)
    return {"run_dir": str(run_dir), "num_timesteps": model.num_timesteps, **final}


def latest_model_path(run_dir: Path) -> Path:
    """``model.zip`` of a finished run, else its newest checkpoint."""
    if (run_dir / "model.zip").is_file():
        return run_dir / "model.zip"
    saved = checkpoints(run_dir)
    if not saved:
        raise RunError(f"{run_dir} holds no model.zip and no checkpoint; train it first")
    return saved[-1]
