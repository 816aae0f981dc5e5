"""The RL Baselines3 Zoo with the CPC algorithms registered (``pip install -e ".[zoo]"``).

    python -m cpc_rl.zoo train --algo cpc_ppo_lstm --env MiniWorld-SignMemory-v0 --gym-packages cpc_rl.envs \\
        --conf-file agents/zoo/cpc_ppo_lstm.yml
    python -m cpc_rl.zoo train --algo cpc_ppo_lstm ... -optimize --n-trials 20 --sampler tpe --pruner median
    python -m cpc_rl.zoo enjoy --algo cpc_ppo_lstm --env MiniWorld-SignMemory-v0 --gym-packages cpc_rl.envs -f logs
    python -m cpc_rl.zoo record --algo cpc_ppo_lstm --env MiniWorld-SignMemory-v0 --gym-packages cpc_rl.envs -f logs

``cpc_a2c``, ``cpc_ppo`` and ``cpc_ppo_lstm`` are :class:`~cpc_rl.sb3.CPCA2C`, :class:`~cpc_rl.sb3.CPCPPO`
and :class:`~cpc_rl.sb3.CPCRecurrentPPO` with CPC on (``cpc_kwargs`` from the hyper-parameter
file, else the defaults). ``-optimize`` samples the parent's settings with the Zoo's own sampler
and the CPC settings with :func:`sample_cpc_params`. Nothing here is copied from the Zoo: the
algorithms and samplers are registered into its tables and its own commands run.
"""

from __future__ import annotations

import importlib
import runpy
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cpc_rl.sb3 import CPCA2C, CPCPPO, CPCRecurrentPPO

# Zoo name -> (algorithm, the Zoo name of its parent, whose sampler and hyper-parameter file serve as defaults).
ZOO_ALGORITHMS: dict[str, tuple[type, str]] = {
    "cpc_a2c": (CPCA2C, "a2c"),
    "cpc_ppo": (CPCPPO, "ppo"),
    "cpc_ppo_lstm": (CPCRecurrentPPO, "ppo_lstm"),
}
CPC_HORIZONS = (4, 8, 16)
COMMANDS = ("train", "enjoy", "record")


def _cpc_on_by_default(algorithm: type) -> type:
    """The algorithm with ``cpc_kwargs={}`` (CPC with its defaults) when none is given."""

    class WithCPC(algorithm):
        def __init__(self, *args: Any, cpc_kwargs: dict[str, Any] | None = None, **kwargs: Any) -> None:
            super().__init__(*args, cpc_kwargs={} if cpc_kwargs is None else cpc_kwargs, **kwargs)

    WithCPC.__name__ = WithCPC.__qualname__ = algorithm.__name__
    return WithCPC


ZOO_CLASSES = {name: _cpc_on_by_default(algorithm) for name, (algorithm, _) in ZOO_ALGORITHMS.items()}


def sample_cpc_params(trial: Any, n_steps: int | None = None, batch_size: int | None = None) -> dict[str, Any]:
    """
    Sample the CPC settings for Optuna: the loss weight on a log scale, the horizon, the
    negatives, and CPC vs CPC|A. A horizon that does not fit the sampled rollout prunes the trial.

    :return: ``{"cpc_kwargs": {...}}``.
    """
    import optuna

    settings = {
        "coef": trial.suggest_float("cpc_coef", 0.01, 1.0, log=True),
        "horizon": trial.suggest_categorical("cpc_horizon", list(CPC_HORIZONS)),
        "negatives": trial.suggest_categorical("cpc_negatives", ["all", "same_sequence", "other_sequences"]),
        "action_conditioned": trial.suggest_categorical("cpc_action_conditioned", [False, True]),
    }
    longest = min(value for value in (n_steps, batch_size) if value) if (n_steps or batch_size) else None
    if longest is not None and settings["horizon"] >= longest:
        raise optuna.TrialPruned(f"CPC horizon {settings['horizon']} does not fit sequences of {longest} steps")
    return {"cpc_kwargs": settings}


def _with_cpc_sampler(sampler: Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
    def sample(trial: Any, n_actions: int, n_envs: int, additional_args: dict) -> dict[str, Any]:
        params = sampler(trial, n_actions, n_envs, additional_args)
        return {**params, **sample_cpc_params(trial, params.get("n_steps"), params.get("batch_size"))}

    return sample


def _with_cpc_converter(converter: Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
    """For ``--trial-id``: turn a finished trial's parameters back into hyper-parameters, CPC's included."""

    def convert(sampled: dict[str, Any]) -> dict[str, Any]:
        cpc = {key.removeprefix("cpc_"): sampled[key] for key in list(sampled) if key.startswith("cpc_")}
        params = converter({key: value for key, value in sampled.items() if not key.startswith("cpc_")})
        return {**params, "cpc_kwargs": cpc} if cpc else params

    return convert


def _sampled_over_the_files_policy_kwargs(objective: Callable[..., float]) -> Callable[..., float]:
    """
    The Zoo's ``ExperimentManager.objective``, where a sampled ``policy_kwargs`` updates the
    hyper-parameter file's instead of replacing it: the Zoo's samplers draw ``net_arch`` and
    activations, and replacing would drop the file's features extractor (the MiniWorld agents'
    ``FrameEncoder``), so a trial would tune another network than the one it then trains.
    """
    from rl_zoo3 import hyperparams_opt

    def run_trial(manager: Any, trial: Any) -> float:
        given = manager._hyperparams.get("policy_kwargs")
        sampler = hyperparams_opt.HYPERPARAMS_SAMPLER.get(manager.algo)
        if manager.algo not in ZOO_ALGORITHMS or not isinstance(given, dict) or sampler is None:
            return objective(manager, trial)

        def sample(*args: Any) -> dict[str, Any]:
            params = sampler(*args)
            if isinstance(params.get("policy_kwargs"), dict):
                params = {**params, "policy_kwargs": {**given, **params["policy_kwargs"]}}
            return params

        hyperparams_opt.HYPERPARAMS_SAMPLER[manager.algo] = sample
        try:
            return objective(manager, trial)
        finally:
            hyperparams_opt.HYPERPARAMS_SAMPLER[manager.algo] = sampler

    run_trial.keeps_files_policy_kwargs = True
    return run_trial


def register() -> None:
    """Register the CPC algorithms, samplers and converters in the Zoo's tables (idempotent)."""
    try:
        from rl_zoo3 import hyperparams_opt, utils
        from rl_zoo3.exp_manager import ExperimentManager
    except ImportError:
        raise SystemExit('cpc_rl.zoo needs the RL Baselines3 Zoo: pip install -e ".[zoo]" (or rl_zoo3)') from None
    for name, (_, parent) in ZOO_ALGORITHMS.items():
        utils.ALGOS[name] = ZOO_CLASSES[name]
        hyperparams_opt.HYPERPARAMS_SAMPLER[name] = _with_cpc_sampler(hyperparams_opt.HYPERPARAMS_SAMPLER[parent])
        hyperparams_opt.HYPERPARAMS_CONVERTER[name] = _with_cpc_converter(hyperparams_opt.HYPERPARAMS_CONVERTER[parent])
    if not getattr(ExperimentManager.objective, "keeps_files_policy_kwargs", False):
        ExperimentManager.objective = _sampled_over_the_files_policy_kwargs(ExperimentManager.objective)


def _default_conf(argv: list[str]) -> list[str]:
    """Without ``--conf-file``, use the Zoo's file of the parent algorithm (its ``default`` entry, with CPC on)."""
    if "--conf-file" in argv or "-conf" in argv or "--algo" not in argv:
        return argv
    algo = argv[argv.index("--algo") + 1] if argv.index("--algo") + 1 < len(argv) else ""
    if algo not in ZOO_ALGORITHMS:
        return argv
    import rl_zoo3

    parent_file = Path(rl_zoo3.__file__).parent / "hyperparams" / f"{ZOO_ALGORITHMS[algo][1]}.yml"
    return [*argv, "--conf-file", str(parent_file)]


def _option(argv: list[str], *names: str, default: str | None = None) -> str | None:
    for name in names:
        if name in argv and argv.index(name) + 1 < len(argv):
            return argv[argv.index(name) + 1]
    return default


def _import_gym_packages(argv: list[str]) -> list[str]:
    """Import the modules after ``--gym-packages`` and drop the option from ``argv``."""
    if "--gym-packages" not in argv:
        return argv
    start = argv.index("--gym-packages") + 1
    end = start
    while end < len(argv) and not argv[end].startswith("-"):
        importlib.import_module(argv[end])
        end += 1
    return argv[: start - 1] + argv[end:]


def _fail(message: str) -> None:
    print(f"cpc_rl.zoo: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def main(argv: list[str] | None = None) -> None:
    """``python -m cpc_rl.zoo COMMAND ARGS``: the Zoo's train, enjoy or record_video with CPC registered."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in COMMANDS:
        given = " ".join(argv[:1]) or "nothing"
        _fail(f"usage: python -m cpc_rl.zoo {{{','.join(COMMANDS)}}} [Zoo arguments]; got {given}")
    register()
    from rl_zoo3.utils import ALGOS

    command, rest = argv[0], argv[1:]
    algo = _option(rest, "--algo", default="ppo")
    if algo not in ALGOS:
        close = ", ".join(sorted(ZOO_ALGORITHMS))
        _fail(f"unknown algorithm {algo!r}: the CPC algorithms are {close}; the Zoo's own: {', '.join(ALGOS)}")
    if command == "train":
        rest = _default_conf(rest)
    sys.argv = [f"cpc_rl.zoo {command}", *rest]
    if command != "train":
        if command == "enjoy":
            from rl_zoo3.enjoy import enjoy

            enjoy()
        else:
            # record_video has no --gym-packages: import them here, as train and enjoy do.
            rest = _import_gym_packages(rest)
            sys.argv = [f"cpc_rl.zoo {command}", *rest]
            runpy.run_module("rl_zoo3.record_video", run_name="__main__")
        return
    from rl_zoo3.train import train

    # A run refused before training must not leave a folder that looks like a run.
    log_folder = Path(_option(rest, "-f", "--log-folder", default="logs")) / algo
    before = set(log_folder.glob("*")) if log_folder.is_dir() else set()
    try:
        train()
    except (ValueError, TypeError) as error:
        for path in set(log_folder.glob("*")) - before if log_folder.is_dir() else ():
            shutil.rmtree(path, ignore_errors=True)
        _fail(f"{type(error).__name__}: {error}".splitlines()[0])


if __name__ == "__main__":
    main()
