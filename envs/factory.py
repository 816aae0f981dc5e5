"""Env factories for MiniWorld and ViZDoom: single envs, SB3 vector envs, and the ids they accept."""

from __future__ import annotations

import contextlib
import difflib
import functools
import io
import math
import multiprocessing
import os
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np

from cpc_rl.envs.rendering import configure_headless, free_frame_buffers, give_own_display_list, import_miniworld
from cpc_rl.envs.vizdoom import VIZDOOM_KINDS, VIZDOOM_PREFIX, make_vizdoom_env, vizdoom_available

configure_headless()

#: Tasks whose reward is reaching one goal object, held as ``env.box``: their ``info`` has ``goal_pos``.
GOAL_TASKS = (
    "SignMemory",
    "CueCorridor",
    "CueTMaze",
    "CueMatch",
    "Hallway",
    "OneRoom",
    "FourRooms",
    "Maze",
    "Sidewalk",
    "ThreeRooms",
    "TMaze",
    "WallGap",
    "YMaze",
)

#: The benchmark suite: one MiniWorld task for each kind of DeepMind Lab task of the CPC paper.
SUITE = (
    "MiniWorld-SignMemory-v0",
    "MiniWorld-TMaze-v0",
    "MiniWorld-MazeS3Fast-v0",
    "MiniWorld-FourRooms-v0",
    "MiniWorld-PickupObjects-v0",
    "MiniWorld-OneRoomS6Fast-v0",
)

VEC_ENV_KINDS = ("subproc", "dummy")
START_METHODS = ("forkserver", "spawn", "fork")

_UNGUARDED = (
    "make_vec_env(vec_env='subproc') starts worker processes, which import your script again: if your code "
    "makes envs at the top level of a script, put it under `if __name__ == \"__main__\":` (or use vec_env='dummy')."
)

# The human-view window is never drawn by agents; at MiniWorld's 800x600 with 16 samples it
# leaks ~36 MB per create/close, at this size next to nothing.
_SMALL_WINDOW = {"window_width": 32, "window_height": 24}


# Registered MiniWorld ids that cpc-rl agents cannot take, and why.
UNSUPPORTED = {
    "MiniWorld-Sign-v0": (
        "returns a Dict observation (image + goal) whose sign colour is never re-drawn, so it needs no memory; "
        "use MiniWorld-SignMemory-v0, cpc-rl's Sign task with the colour drawn at every reset"
    ),
}


def list_envs(with_kinds: bool = False) -> list[str] | dict[str, str]:
    """
    The ids that :func:`make_env` accepts: those of the installed miniworld, cpc-rl's own (see
    :mod:`envs.tasks`) and, when vizdoom is installed, its scenarios (see :mod:`envs.vizdoom`).

    :param with_kinds: return ``{id: what it tests}`` for the ids whose kind is known.
    """
    import_miniworld()
    ids = sorted(env_id for env_id in gym.registry if env_id.startswith("MiniWorld-") and env_id not in UNSUPPORTED)
    if vizdoom_available():
        ids += list(VIZDOOM_KINDS)
    if with_kinds:
        from cpc_rl.envs.tasks import TASK_KINDS

        kinds = {**TASK_KINDS, **VIZDOOM_KINDS}
        return {env_id: kinds.get(env_id, "") for env_id in ids}
    return ids


def check_env_id(env_id: str) -> None:
    """Raise ``ValueError`` naming the closest valid ids if ``env_id`` is not an id :func:`make_env` takes."""
    if env_id in UNSUPPORTED:
        raise ValueError(f"{env_id} is not supported: it {UNSUPPORTED[env_id]}")
    if env_id.startswith(VIZDOOM_PREFIX) and not vizdoom_available():
        from cpc_rl.envs.vizdoom import INSTALL_HINT

        raise ValueError(f"{env_id}: {INSTALL_HINT}")
    known = list_envs()
    if env_id in known:
        return
    close = difflib.get_close_matches(env_id, known, n=3, cutoff=0.4)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise ValueError(f"unknown env id {env_id!r}.{hint} Valid ids: {', '.join(known)}")


def factory_defaults(env_id: str) -> dict[str, Any]:
    """The env settings :func:`make_env` adds to the registration's for ``env_id`` unless given."""
    if env_id.startswith(VIZDOOM_PREFIX):
        from cpc_rl.envs.vizdoom import vizdoom_defaults

        return vizdoom_defaults(env_id)
    return {}


def _check_obs_size(obs_size: Any) -> tuple[int, int] | None:
    if obs_size is None:
        return None
    if (
        not isinstance(obs_size, (tuple, list))
        or len(obs_size) != 2
        or not all(isinstance(side, (int, np.integer)) and 8 <= side <= 1024 for side in obs_size)
    ):
        raise ValueError(f"obs_size must be (height, width), integers in [8, 1024]; got {obs_size!r}")
    return int(obs_size[0]), int(obs_size[1])


class MiniWorldAgentEnv(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """
    A MiniWorld env made for agents: its own display list, ground truth in ``info``, a seed that
    applies to the first reset, and a ``close`` that frees what the env took.

    ``info`` holds, at reset and every step, ``agent_pos`` (x, z), ``agent_dir`` (heading in
    radians, wrapped to ``[-pi, pi)``) and, for tasks with one goal object, ``goal_pos`` (x, z).

    :param env: a MiniWorld env made by ``gymnasium.make``.
    :param seed: seed of the first reset unless that reset is given one (and of the action space).
    """

    #: The action of each single move (for exploring policies; :class:`envs.vizdoom.VizdoomAgentEnv` has its own).
    moves = {"turn_left": 0, "turn_right": 1, "move_forward": 2}

    def __init__(self, env: gym.Env, seed: int | None = None) -> None:
        gym.utils.RecordConstructorArgs.__init__(self, seed=seed)
        gym.Wrapper.__init__(self, env)
        self._first_seed = seed
        self._free_display_list = give_own_display_list(env.unwrapped)
        self._has_goal = any(cls.__name__ in GOAL_TASKS for cls in type(env.unwrapped).__mro__)
        if seed is not None:
            self.action_space.seed(seed)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        # The first reset takes the seed it is given (SB3 gives one when the model has a seed), else
        # the env's own; later resets continue that stream. A seed held back for later would
        # reseed the second episode and replay the first.
        if seed is None:
            seed = self._first_seed
        self._first_seed = None
        obs, info = self.env.reset(seed=seed, options=options)
        return obs, self._add_ground_truth(info)

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        return obs, float(reward), bool(terminated), bool(truncated), self._add_ground_truth(info)

    def _add_ground_truth(self, info: dict) -> dict:
        world = self.env.unwrapped
        info = dict(info)
        info["agent_pos"] = np.array([world.agent.pos[0], world.agent.pos[2]], dtype=np.float32)
        info["agent_dir"] = float((world.agent.dir + math.pi) % (2 * math.pi) - math.pi)
        if self._has_goal:
            info["goal_pos"] = np.array([world.box.pos[0], world.box.pos[2]], dtype=np.float32)
        return info

    def close(self) -> None:
        world = self.env.unwrapped
        if getattr(world, "shadow_window", None) is None:
            return
        self._free_display_list()
        free_frame_buffers(world)
        self.env.close()
        world.shadow_window.close()
        world.shadow_window = None


def make_env(
    env_id: str,
    *,
    seed: int | None = None,
    obs_size: tuple[int, int] | None = None,
    **env_kwargs: Any,
) -> gym.Env:
    """
    Make one env, headless, ready for an agent: a MiniWorld task or a ViZDoom scenario.

    :param env_id: a MiniWorld or ViZDoom id (see :func:`list_envs`).
    :param seed: seed of the first reset; later resets continue its random stream.
    :param obs_size: ``(height, width)`` of observations; the default is ``(60, 80)``.
    :param env_kwargs: passed to the env: MiniWorld's (``max_episode_steps``, ``domain_rand``, ...) or
        :func:`envs.vizdoom.make_vizdoom_env`'s (``frame_skip``, ``screen_resolution``, ...).
    :return: a gymnasium env with ``uint8`` channel-last image observations.
    """
    check_env_id(env_id)
    size = _check_obs_size(obs_size)
    if env_id.startswith(VIZDOOM_PREFIX):
        return make_vizdoom_env(env_id, seed=seed, obs_size=size, **env_kwargs)
    if size is not None:
        env_kwargs = {"obs_height": size[0], "obs_width": size[1], **env_kwargs}
    if env_kwargs.get("render_mode") is None:
        env_kwargs = {**_SMALL_WINDOW, **env_kwargs}
    # miniworld prints "Falling back to num_samples=..." for every env it makes.
    with contextlib.redirect_stdout(io.StringIO()):
        env = gym.make(env_id, disable_env_checker=True, **env_kwargs)
    if not isinstance(env.observation_space, gym.spaces.Box) or env.observation_space.dtype != np.uint8:
        env.close()
        raise ValueError(
            f"{env_id} has {env.observation_space} observations; cpc-rl agents take uint8 images only "
            f"(MiniWorld-Sign-v0 returns a Dict with its goal). Choose another id from envs.list_envs()."
        )
    return MiniWorldAgentEnv(env, seed=seed)


def _make_monitored_env(
    env_id: str, seed: int, obs_size: tuple[int, int] | None, monitor_path: str | None, env_kwargs: dict
) -> gym.Env:
    from stable_baselines3.common.monitor import Monitor

    env = make_env(env_id, seed=seed, obs_size=obs_size, **env_kwargs)
    # Append to the CSV of an earlier run in the same folder (a resumed run) instead of erasing it.
    fresh = monitor_path is None or not os.path.exists(f"{monitor_path}.monitor.csv")
    return Monitor(env, filename=monitor_path, override_existing=fresh)


def make_vec_env(
    env_id: str,
    n_envs: int,
    *,
    seed: int = 0,
    vec_env: str = "subproc",
    start_method: str | None = None,
    obs_size: tuple[int, int] | None = None,
    monitor_dir: str | None = None,
    **env_kwargs: Any,
) -> Any:
    """
    Make ``n_envs`` envs (MiniWorld or ViZDoom) as an SB3 ``VecEnv``, each wrapped in SB3's ``Monitor``.

    :param env_id: a MiniWorld or ViZDoom id (see :func:`list_envs`).
    :param n_envs: number of envs (>= 1).
    :param seed: env ``i`` is seeded ``seed + i``.
    :param vec_env: ``"subproc"`` (one process per env; MiniWorld steps are single-threaded) or
        ``"dummy"`` (all envs in this process, stepped in turn).
    :param start_method: for ``"subproc"``: ``"forkserver"`` (default where available), ``"spawn"``
        or ``"fork"``.
    :param obs_size: ``(height, width)`` of observations.
    :param monitor_dir: folder for the ``Monitor`` CSVs (one per env), or None.
    :param env_kwargs: passed to the env (see :func:`make_env`).
    :return: a ``SubprocVecEnv`` or ``DummyVecEnv``.
    """
    from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv

    if not isinstance(n_envs, (int, np.integer)) or isinstance(n_envs, bool) or n_envs < 1:
        raise ValueError(f"n_envs must be an integer >= 1; got {n_envs!r}")
    if vec_env not in VEC_ENV_KINDS:
        raise ValueError(f"vec_env must be one of {VEC_ENV_KINDS}; got {vec_env!r}")
    if start_method is not None and start_method not in START_METHODS:
        raise ValueError(f"start_method must be one of {START_METHODS} or None; got {start_method!r}")
    check_env_id(env_id)
    size = _check_obs_size(obs_size)
    if monitor_dir is not None:
        os.makedirs(monitor_dir, exist_ok=True)
    env_fns: list[Callable[[], gym.Env]] = [
        functools.partial(
            _make_monitored_env,
            env_id,
            seed + rank,
            size,
            None if monitor_dir is None else os.path.join(monitor_dir, str(rank)),
            env_kwargs,
        )
        for rank in range(n_envs)
    ]
    if vec_env == "dummy":
        return DummyVecEnv(env_fns)
    if getattr(multiprocessing.current_process(), "_inheriting", False):
        raise RuntimeError(_UNGUARDED)
    try:
        return SubprocVecEnv(env_fns, start_method=start_method)
    except (EOFError, ConnectionError, BrokenPipeError) as error:
        raise RuntimeError(
            f"env worker processes exited while starting ({type(error).__name__}). {_UNGUARDED}"
        ) from None
