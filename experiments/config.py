"""What defines a training run, read and checked without importing torch (so errors and --help come at once)."""

from __future__ import annotations

import ast
import dataclasses
import difflib
import inspect
import os
from dataclasses import dataclass, field
from typing import Any

from cpc_rl.agents.presets import ALGORITHMS, AUX_CHOICES, PRECISIONS, preset

DEFAULT_ENV = "MiniWorld-Hallway-v0"
VEC_ENV_CHOICES = ("auto", "subproc", "dummy")
#: Whose steps ``run_agent.py probe`` fits on: the agent's own policy, or an exploring policy blind to the task.
PROBE_POLICIES = ("agent", "explore")
# Settings of how a run goes, not of the agent it trains.
RUN_SETTINGS = ("eval_freq", "eval_episodes", "save_freq", "keep_checkpoints", "threads", "vec_env")


class RunError(Exception):
    """A mistake the user can fix; the CLI prints it as one line and exits with code 2."""


class RunInterrupted(Exception):
    """Training stopped by Ctrl-C after saving a checkpoint."""


class RunFailed(Exception):
    """Training stopped by a fault (a dead env worker, non-finite numbers, a full disk); the CLI exits with 3."""


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
    :param vec_env: ``subproc`` (a process per env), ``dummy`` (envs in the learner's process) or
        ``auto``: ``subproc`` when the machine has more cores than envs, else ``dummy`` (see
        :func:`chosen_vec_env`).
    :param eval_freq: env steps between evaluations (0: only at the end).
    :param eval_episodes: episodes per evaluation.
    :param save_freq: env steps between checkpoints (0: only on interrupt).
    :param keep_checkpoints: how many of the newest checkpoints to keep (each is a whole model, ~25 MB).
    :param threads: torch threads of the learner; None: ``OMP_NUM_THREADS`` if set, else the cores
        that other processes leave free when the run starts (at least 1).
    :param precision: ``float32``, or ``bfloat16`` for the encoder's arithmetic (faster on CPUs with
        native bfloat16, results differ in the low bits; see :class:`agents.networks.FrameEncoder`).
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
    vec_env: str = "auto"
    eval_freq: int = 10_000
    eval_episodes: int = 10
    save_freq: int = 10_000
    keep_checkpoints: int = 1
    threads: int | None = None
    precision: str = "float32"
    hyperparams: dict[str, Any] = field(default_factory=dict)
    cpc_kwargs: dict[str, Any] = field(default_factory=dict)
    env_kwargs: dict[str, Any] = field(default_factory=dict)

    def check(self) -> None:
        """Raise :class:`RunError` for settings that cannot work (without importing torch)."""
        from cpc_rl import envs

        try:
            envs.check_env_id(self.env)
        except ValueError as error:
            raise RunError(str(error)) from None
        if self.algo not in ALGORITHMS:
            raise RunError(f"unknown algo {self.algo!r}; choose one of {', '.join(ALGORITHMS)}")
        if self.aux not in AUX_CHOICES:
            raise RunError(f"unknown aux {self.aux!r}; choose one of {', '.join(AUX_CHOICES)}")
        for name in ("steps", "eval_episodes", "keep_checkpoints"):
            if not _is_int(getattr(self, name)) or getattr(self, name) < 1:
                raise RunError(f"{name} must be an integer >= 1; got {getattr(self, name)!r}")
        for name in ("eval_freq", "save_freq"):
            if not _is_int(getattr(self, name)) or getattr(self, name) < 0:
                raise RunError(f"{name} must be an integer >= 0 (0: never); got {getattr(self, name)!r}")
        if self.vec_env not in VEC_ENV_CHOICES:
            raise RunError(f"vec_env must be one of {', '.join(VEC_ENV_CHOICES)}; got {self.vec_env!r}")
        if self.precision not in PRECISIONS:
            raise RunError(f"precision must be one of {', '.join(PRECISIONS)}; got {self.precision!r}")
        if self.threads is not None and (not _is_int(self.threads) or self.threads < 1):
            raise RunError(f"threads must be None or an integer >= 1; got {self.threads!r}")
        if self.n_envs is not None and (not _is_int(self.n_envs) or self.n_envs < 1):
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


_SET_PREFIX_ALIASES = {"cpc_kwargs": "cpc", "env_kwargs": "env", "policy_kwargs": "policy"}


def apply_overrides(config: RunConfig, assignments: list[str]) -> RunConfig:
    """
    Apply ``key=value`` overrides: ``cpc.KEY`` goes to ``cpc_kwargs``, ``env.KEY`` to
    ``env_kwargs``, ``policy.KEY`` to the policy kwargs (``cpc_kwargs.KEY``, ``env_kwargs.KEY``
    and ``policy_kwargs.KEY``, the names SB3 users know, work too), a run setting
    (``eval_freq``, ...) to the run, anything else to the algorithm's hyper-parameters.
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
        prefix = _SET_PREFIX_ALIASES.get(prefix, prefix)
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


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _init_parameters(cls: type) -> dict[str, inspect.Parameter]:
    """Keyword parameters of ``cls.__init__`` and of the parents it passes ``**kwargs`` to."""
    found: dict[str, inspect.Parameter] = {}
    for klass in cls.__mro__:
        if "__init__" not in vars(klass) or klass is object:
            continue
        parameters = inspect.signature(vars(klass)["__init__"]).parameters
        for name, parameter in parameters.items():
            if name != "self" and parameter.kind not in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
                found.setdefault(name, parameter)
        if not any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
            break
    return found


def _check_against(what: str, values: dict[str, Any], parameters: dict[str, inspect.Parameter]) -> None:
    for key, value in values.items():
        if key not in parameters:
            close = difflib.get_close_matches(key, parameters, n=2, cutoff=0.6)
            hint = f"; did you mean {' or '.join(close)}?" if close else f"; valid: {', '.join(sorted(parameters))}"
            raise RunError(f"unknown {what} {key!r}{hint}")
        default = parameters[key].default
        if default is inspect.Parameter.empty or default is None or callable(value):
            continue
        if isinstance(default, bool):
            expected, fits = "True or False", isinstance(value, bool)
        elif isinstance(default, (int, float)):
            integer = isinstance(default, int)
            fits = _is_int(value) if integer else isinstance(value, (int, float)) and not isinstance(value, bool)
            expected = "an integer" if integer else "a number"
        elif isinstance(default, str):
            expected, fits = "a string", isinstance(value, str)
        elif isinstance(default, dict):
            expected, fits = "a dict", isinstance(value, dict)
        else:
            continue
        if not fits:
            raise RunError(f"{what} {key} must be {expected} (default {default!r}); got {value!r}")


def check_hyperparams(config: RunConfig) -> None:
    """
    Check ``--set`` hyper-parameters and policy kwargs against the algorithm's and policy's
    signatures, and the CPC settings against the algorithm's, before any env worker starts.

    :raises RunError: naming the bad key (with close matches) or value.
    """
    from cpc_rl.agents.factory import ALGORITHM_CLASSES
    from cpc_rl.sb3.config import resolve_cpc_kwargs

    algorithm = ALGORITHM_CLASSES[config.algo]
    chosen = preset(config.algo, config.aux)
    hyperparams = dict(config.hyperparams)
    policy_kwargs = hyperparams.pop("policy_kwargs", {}) or {}
    _check_against(f"hyper-parameter of {config.algo}", hyperparams, _init_parameters(algorithm))
    policy = hyperparams.get("policy", chosen["policy"])
    policy_class = algorithm.policy_aliases.get(policy, policy) if isinstance(policy, str) else policy
    if not isinstance(policy_class, type):
        raise RunError(f"unknown policy {policy!r}; choose one of {', '.join(algorithm.policy_aliases)}")
    _check_against("policy setting", policy_kwargs, _init_parameters(policy_class))
    if chosen["cpc_kwargs"] is not None:
        n_steps = hyperparams.get("n_steps", chosen["algo_kwargs"]["n_steps"])
        try:
            resolve_cpc_kwargs({**chosen["cpc_kwargs"], **config.cpc_kwargs}, None, n_steps)
        except ValueError as error:
            raise RunError(str(error)) from None


def chosen_vec_env(config: RunConfig) -> str:
    """
    ``config.vec_env``, with ``auto`` made ``subproc`` when every env worker and the learner can
    have a core of their own, else ``dummy``.

    Stepping envs in worker processes pays a pipe round trip and a process wake-up per env and
    step; that buys parallel stepping only where there are cores to step on. On 2 cores, the
    main job (4 envs) trained at 256 steps/s in one process against 200 with 4 workers
    (docs/benchmarks.md).
    """
    if config.vec_env != "auto":
        return config.vec_env
    return "subproc" if _usable_cores() > config.num_envs else "dummy"


def _usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def learner_threads(config: RunConfig) -> int:
    """
    Torch threads for the learner: ``config.threads``, else ``OMP_NUM_THREADS``, else the cores
    this process may use minus the load other processes put on them (1-minute load average).

    Oversubscribed intra-op threads wait on each other: on a 2-core machine beside two busy
    processes, training with 2 threads took ~6x as long as with 1 (../shared/NOTES.md).
    """
    if config.threads is not None:
        return config.threads
    if os.environ.get("OMP_NUM_THREADS", "").isdigit():
        return max(1, int(os.environ["OMP_NUM_THREADS"]))
    cores = _usable_cores()
    return max(1, min(cores, round(cores - os.getloadavg()[0])))
