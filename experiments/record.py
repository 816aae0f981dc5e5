"""What a run ran: its effective settings and its provenance (code, versions, machine), kept in its folder.

``settings.yaml`` holds every argument the algorithm was built with (after the presets, ``--set``
and the CPC defaults), the policy's constructor arguments, the env and the run settings.
``provenance.yaml`` holds, per start or resume of the run, the code (git commit and whether it had
uncommitted changes), the package versions, the machine and the command line. Both are written
before training starts. Classes and functions are written as ``<class module.Name>`` so that the
files stay plain YAML; :func:`resolve_references` turns them back into objects for ``--like``.

This module imports torch-free names only at the top, so that it can also describe runs made with
older code from inside a checkout of it (as the first study's runs were described afterwards).
"""

from __future__ import annotations

import datetime
import hashlib
import importlib
import inspect
import os
import platform
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import cpc_rl

SETTINGS_FILE = "settings.yaml"
PROVENANCE_FILE = "provenance.yaml"
CODE_PATHS = ("cpc_rl", "agents", "envs", "experiments", "run_agent.py", "setup.cfg", "pyproject.toml")
PACKAGES = ("torch", "stable-baselines3", "sb3-contrib", "gymnasium", "miniworld", "vizdoom", "numpy", "pyglet")

# Arguments of the algorithm's signature that are not settings of the agent: the run gives them
# (env, seed, device) or they only change what is printed.
_RUN_ARGUMENTS = {"env", "seed", "device", "verbose", "tensorboard_log", "_init_setup_model"}
# Constructor parameters of the policy that the algorithm passes itself.
_ALGORITHM_GIVEN = {"observation_space", "action_space", "lr_schedule", "use_sde", "cpc_kwargs"}
# Run settings that do not change what the agent computes: never a reason to call two runs different.
RUN_ONLY = ("seed", "threads", "vec_env", "device", "eval_freq", "save_freq", "keep_checkpoints")
# Modules whose classes and functions a settings file may name (importing another could run any code).
_TRUSTED_MODULES = ("torch", "stable_baselines3", "sb3_contrib", "cpc_rl", "gymnasium", "numpy")
_REFERENCE = re.compile(r"^<(class|function) ([A-Za-z_][\w.]*)>$")
# Packages that were top-level before 0.2 (settings files recorded then name them so).
_MOVED_INTO_CPC_RL = ("agents", "envs", "experiments")
_OLD_NAME = re.compile(rf"^<(class|function) ({'|'.join(_MOVED_INTO_CPC_RL)})\.")


def current_name(value: Any) -> Any:
    """A recorded reference as today's code names it: ``<class agents.X>`` is ``<class cpc_rl.agents.X>``."""
    if isinstance(value, dict):
        return {key: current_name(item) for key, item in value.items()}
    if isinstance(value, list):
        return [current_name(item) for item in value]
    return _OLD_NAME.sub(r"<\1 cpc_rl.\2.", value) if isinstance(value, str) else value


class SettingsError(ValueError):
    """A settings file that cannot be replayed (an unknown or untrusted reference)."""


def reference(value: Any) -> Any:
    """A YAML-safe copy of ``value``: classes and functions as ``<class module.Name>``, tuples as lists."""
    if isinstance(value, dict):
        return {str(key): reference(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [reference(item) for item in value]
    if isinstance(value, type) or inspect.isfunction(value) or inspect.isbuiltin(value):
        kind = "class" if isinstance(value, type) else "function"
        name = f"{value.__module__}.{value.__qualname__}"
        if "<" in name:  # a lambda or a local function cannot be imported again
            return f"<unreplayable {kind} {name}>"
        return f"<{kind} {name}>"
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if hasattr(value, "item") and callable(value.item):  # numpy / torch scalars
        return value.item()
    return f"<unreplayable {type(value).__name__} {value!r}>"


def resolve_references(value: Any) -> Any:
    """
    Undo :func:`reference`: ``<class module.Name>`` becomes the class.

    :raises SettingsError: for a name outside the trusted packages or one that does not import.
    """
    if isinstance(value, dict):
        return {key: resolve_references(item) for key, item in value.items()}
    if isinstance(value, list):
        return [resolve_references(item) for item in value]
    if not isinstance(value, str):
        return value
    if value.startswith("<unreplayable "):
        raise SettingsError(f"the recorded setting {value} cannot be rebuilt (it was not an importable object)")
    match = _REFERENCE.match(current_name(value))
    if match is None:
        return value
    name = match.group(2)
    if name.split(".")[0] not in _TRUSTED_MODULES:
        raise SettingsError(f"{name} is outside the packages a settings file may name ({', '.join(_TRUSTED_MODULES)})")
    module_name, _, attribute = name.rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as error:
        raise SettingsError(f"cannot import {name} ({error}); the run used code this checkout does not have") from None


def signature_defaults(cls: type) -> dict[str, Any]:
    """Keyword defaults of ``cls.__init__`` and of the parents it passes ``**kwargs`` to."""
    found: dict[str, Any] = {}
    for klass in cls.__mro__:
        if "__init__" not in vars(klass) or klass is object:
            continue
        parameters = inspect.signature(vars(klass)["__init__"]).parameters
        for name, parameter in parameters.items():
            if name == "self" or parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
                continue
            if parameter.default is not inspect.Parameter.empty:
                found.setdefault(name, parameter.default)
        if not any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
            break
    return found


def algorithm_arguments(config: dict[str, Any], model: Any) -> dict[str, Any]:
    """
    Every keyword argument the algorithm of ``model`` was built with: its signature's defaults,
    then the preset, then the run's overrides; the policy kwargs as the built policy holds them
    (all its constructor arguments) and the CPC settings as the algorithm resolved them.

    :param config: the run's config (``RunConfig.to_dict()``).
    """
    from cpc_rl.agents.presets import preset

    chosen = preset(config["algo"], config["aux"])
    given = {**chosen["algo_kwargs"], **{k: v for k, v in config["hyperparams"].items() if k != "policy_kwargs"}}
    arguments = {**signature_defaults(type(model)), **given}
    arguments["policy"] = config["hyperparams"].get("policy", chosen["policy"])
    for name in _RUN_ARGUMENTS | {"policy_kwargs", "cpc_kwargs"}:
        arguments.pop(name, None)
    # The policy's signature, what the algorithm passed (sb3-contrib's LSTM sizes are only there),
    # then what the built policy reports of itself (net_arch resolved, A2C's RMSprop).
    # SB3 reports the SDE-only full_std, use_expln and squash_output as None when SDE is off: their
    # signature defaults are what the policy used.
    defaults = signature_defaults(type(model.policy))
    reported = model.policy._get_constructor_parameters()
    built = {
        **defaults,
        **model.policy_kwargs,
        **{k: v for k, v in reported.items() if v is not None or defaults.get(k) is None},
    }
    policy_kwargs = {k: v for k, v in built.items() if k not in _ALGORITHM_GIVEN}
    extractor = policy_kwargs.get("features_extractor_class")
    if isinstance(extractor, type):  # its own defaults too (the encoder's precision, ...)
        defaults = {k: v for k, v in signature_defaults(extractor).items() if k != "observation_space"}
        given = policy_kwargs.get("features_extractor_kwargs") or {}
        policy_kwargs["features_extractor_kwargs"] = {**defaults, **given}
    arguments["policy_kwargs"] = dict(sorted(policy_kwargs.items()))
    arguments["cpc_kwargs"] = getattr(model, "cpc_kwargs", None)
    return reference(dict(sorted(arguments.items())))


def env_settings(config: dict[str, Any], vec_env: Any) -> dict[str, Any]:
    """The env: its id, the kwargs it was made with (the registration's and the run's), and what it gives."""
    import gymnasium as gym

    from cpc_rl.envs.factory import factory_defaults

    spec = gym.spec(config["env"])
    space = vec_env.observation_space
    actions = vec_env.action_space
    return reference(
        {
            "id": config["env"],
            "kwargs": {**(spec.kwargs or {}), **factory_defaults(config["env"]), **config["env_kwargs"]},
            "n_envs": vec_env.num_envs,
            "observation_shape": list(space.shape) if space.shape else None,
            "observation_dtype": str(space.dtype) if space.dtype else None,
            "action_space": str(actions),
            "max_episode_steps": _episode_limit(vec_env),
        }
    )


def _episode_limit(vec_env: Any) -> int | None:
    """The steps before truncation: MiniWorld's own limit, or a shorter ``TimeLimit`` that gym.make added."""
    limits = []
    for name in ("max_episode_steps", "_max_episode_steps"):  # the env's; TimeLimit's
        # Asked first: get_attr of a missing attribute kills a SubprocVecEnv's worker instead of raising.
        if vec_env.has_attr(name):
            limits += [value for value in vec_env.get_attr(name, [0]) if isinstance(value, int)]
    return min(limits, default=None)


def effective_settings(config: dict[str, Any], model: Any, vec_env: Any, setup: dict[str, Any]) -> dict[str, Any]:
    """
    What a run trains with: :func:`algorithm_arguments`, :func:`env_settings` and the run settings.

    :param config: the run's config (``RunConfig.to_dict()``).
    :param setup: what the run chose when it started (``threads``, ``vec_env``).
    """
    run = {key: value for key, value in config.items() if key not in ("hyperparams", "cpc_kwargs", "env_kwargs")}
    run.update(setup)
    run["n_envs"] = vec_env.num_envs
    run["device"] = str(model.device)
    return {
        "run": reference(run),
        "algorithm": {
            "class": reference(type(model)),
            "arguments": algorithm_arguments(config, model),
            "trainable_parameters": int(sum(p.numel() for p in model.policy.parameters() if p.requires_grad)),
        },
        "env": env_settings(config, vec_env),
    }


def _git(root: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(root), *args], capture_output=True, text=True, check=True, timeout=30
    ).stdout.strip()


def code_state(root: Path | None = None) -> dict[str, Any]:
    """
    The code a run ran: the git commit of the checkout ``root`` (default: the one holding this
    package) and whether its code (not its results) had uncommitted changes, with a hash of them.
    """
    root = Path(root) if root else cpc_rl.CHECKOUT_ROOT
    installed = "not a git checkout: an installed cpc-rl, whose version below is all that is known"
    if root is None or not (root / "setup.cfg").is_file():  # a wheel may sit inside another repository
        return {"git": installed}
    try:
        commit = _git(root, "rev-parse", "HEAD")
        changed = _git(root, "diff", "--name-only", "HEAD", "--", *CODE_PATHS).splitlines()
        changed += _git(root, "ls-files", "--others", "--exclude-standard", "--", *CODE_PATHS).splitlines()
        diff = _git(root, "diff", "HEAD", "--", *CODE_PATHS)
    except (OSError, subprocess.SubprocessError):
        return {"git": installed}
    state: dict[str, Any] = {"commit": commit, "uncommitted_changes": bool(changed)}
    if changed:
        state["changed_files"] = changed
        state["diff_sha256"] = hashlib.sha256(diff.encode()).hexdigest()
    return state


def _package_version(name: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _gpu() -> str | None:
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available():
        return None
    return ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))


def portable_command(argv: list[str] | None = None, cwd: Path | None = None) -> list[str]:
    """
    The command line as one would type it again in the folder it ran from: ``python`` for the
    interpreter, ``cpc-rl`` for the command-line module, and paths inside that folder relative to
    it, so that no machine's paths go into a run folder (the interpreter's version is recorded beside).

    :param argv: the arguments, ``sys.argv`` by default.
    :param cwd: the folder it ran from, the working directory by default.
    """
    argv = list(sys.argv if argv is None else argv)
    cwd = Path.cwd() if cwd is None else Path(cwd)

    def relative(arg: str) -> str:
        key, equals, value = arg.rpartition("=") if "=" in arg else ("", "", arg)
        if not os.path.isabs(value):
            return arg
        try:
            return key + equals + str(Path(value).relative_to(cwd))
        except ValueError:
            return arg

    program = Path(argv[0]) if argv else Path("cpc-rl")
    if program.suffix != ".py":
        head = [program.name]  # a console script
    elif program.parent.name == "experiments" and program.name == "cli.py":
        head = ["cpc-rl"]  # python -m cpc_rl.experiments.cli, as comparisons start their runs
    else:
        head = ["python", relative(str(program))]
    return [*head, *map(relative, argv[1:])]


def provenance(command: list[str] | None = None) -> dict[str, Any]:
    """Where and with what a run segment ran: cpc-rl's version and code, packages, machine, command line."""
    from cpc_rl import __version__

    return {
        "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "cpc_rl": __version__,
        "code": code_state(),
        "python": platform.python_version(),
        "packages": {name: _package_version(name) for name in PACKAGES},
        "machine": {
            "cpu": _cpu_model(),
            "cores": os.cpu_count(),
            "gpu": _gpu(),
            "system": f"{platform.system()} {platform.release()} {platform.machine()}",
        },
        "command": list(command if command is not None else portable_command()),
    }


def flatten(settings: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists stay values."""
    flat: dict[str, Any] = {}
    for key, value in settings.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def agent_defining(settings: dict[str, Any]) -> dict[str, Any]:
    """The flattened settings that decide what a run computes (not its seed, threads, evaluation spacing...)."""
    flat = flatten({key: settings.get(key, {}) for key in ("run", "algorithm", "env")})
    flat.pop("algorithm.trainable_parameters", None)
    for key in RUN_ONLY:
        flat.pop(f"run.{key}", None)
    return flat


def differences(recorded: dict[str, Any], today: dict[str, Any]) -> list[str]:
    """``key: recorded -> today`` for each key of both whose value differs (old module names read as today's)."""
    return [
        f"{key}: {recorded[key]!r} -> {today[key]!r}"
        for key in sorted(recorded.keys() & today.keys())
        if current_name(recorded[key]) != current_name(today[key])
    ]
