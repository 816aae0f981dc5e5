"""Frames with ground truth from an exploring policy, and the probe targets they give."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from cpc_rl.envs.factory import make_env

HEADING_SECTORS = 8


@dataclass
class Trajectories:
    """
    Steps of whole episodes, concatenated in time order (one row per observation).

    :param observations: ``(N, H, W, 3)`` uint8 frames.
    :param actions: ``(N,)`` action taken after each frame.
    :param episode_starts: ``(N,)`` True at each episode's first frame.
    :param episode_ids: ``(N,)`` episode of each frame.
    :param agent_pos: ``(N, 2)`` agent (x, z).
    :param agent_dir: ``(N,)`` heading, radians in ``[-pi, pi)``.
    :param goal_pos: ``(N, 2)`` goal (x, z), or None for tasks without one goal.
    :param cue: ``(N,)`` index of the episode's cue on memory tasks (see :func:`memory_cue`), else None.
    """

    observations: np.ndarray
    actions: np.ndarray
    episode_starts: np.ndarray
    episode_ids: np.ndarray
    agent_pos: np.ndarray
    agent_dir: np.ndarray
    goal_pos: np.ndarray | None
    cue: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.actions)


#: The ``info`` keys in which memory tasks name the episode's cue (the cue tasks; SignMemory's sign).
CUE_KEYS = ("cue", "sign_color")


def memory_cue(info: dict) -> int | None:
    """The cue a memory task's episode asks the agent to remember (an index), or None for other tasks."""
    return next((int(info[key]) for key in CUE_KEYS if key in info), None)


class TrajectoryRecorder:
    """Steps with their ground truth (from :class:`envs.MiniWorldAgentEnv`'s ``info``), as :class:`Trajectories`."""

    def __init__(self) -> None:
        self._rows: dict[str, list] = {
            name: [] for name in ("obs", "action", "start", "episode", "pos", "dir", "goal", "cue")
        }

    def __len__(self) -> int:
        return len(self._rows["obs"])

    def add(self, obs: np.ndarray, action: int, start: bool, episode: int, info: dict) -> None:
        """Record one observation, the action taken after it, and the ground truth ``info`` gave with it."""
        values = (
            obs,
            action,
            start,
            episode,
            info["agent_pos"],
            info["agent_dir"],
            info.get("goal_pos"),
            memory_cue(info),
        )
        for row, value in zip(self._rows.values(), values, strict=True):
            row.append(value)

    def trajectories(self) -> Trajectories:
        """Everything recorded, stacked (``goal_pos`` and ``cue`` None where the task has none)."""
        rows = self._rows
        return Trajectories(
            observations=np.stack(rows["obs"]),
            actions=np.array(rows["action"]),
            episode_starts=np.array(rows["start"]),
            episode_ids=np.array(rows["episode"]),
            agent_pos=np.stack(rows["pos"]).astype(np.float32),
            agent_dir=np.array(rows["dir"], dtype=np.float32),
            goal_pos=np.stack(rows["goal"]).astype(np.float32) if rows["goal"][0] is not None else None,
            cue=np.array(rows["cue"], dtype=np.int64) if rows["cue"][0] is not None else None,
        )


def explore(
    env_id: str,
    episodes: int,
    seed: int = 0,
    max_hold: int = 8,
    forward_share: float = 0.6,
    min_steps: int = 0,
    **env_kwargs,
) -> Trajectories:
    """
    Run an exploring policy: random actions held for 1..``max_hold`` steps, ``forward_share`` of
    them forward. Persistent actions cover a room far better than uniform random ones, which
    mostly turn in place.

    :param env_id: a MiniWorld or ViZDoom id.
    :param episodes: whole episodes to collect.
    :param seed: seed of the env and the policy.
    :param min_steps: more whole episodes until at least this many steps are collected.
    :param env_kwargs: passed to :func:`envs.make_env` (``max_episode_steps`` bounds episodes).
    """
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1; got {episodes}")
    rng = np.random.default_rng(seed)
    env = make_env(env_id, seed=seed, **env_kwargs)
    # MiniWorld and ViZDoom number their moves differently; each agent env names its own.
    if not {"move_forward", "turn_left", "turn_right"} <= set(env.moves):
        env.close()
        raise ValueError(f"the exploring policy walks and turns; {env_id} has only {', '.join(sorted(env.moves))}")
    forward, turns = env.moves["move_forward"], [env.moves["turn_left"], env.moves["turn_right"]]
    recorder = TrajectoryRecorder()
    try:
        episode = 0
        while episode < episodes or len(recorder) < min_steps:
            obs, info = env.reset()
            done, start, action, hold = False, True, forward, 0
            while not done:
                if hold == 0:
                    action = forward if rng.random() < forward_share else int(rng.choice(turns))
                    hold = int(rng.integers(1, max_hold + 1))
                recorder.add(obs, action, start, episode, info)
                obs, _, terminated, truncated, info = env.step(action)
                done, start, hold = terminated or truncated, False, hold - 1
            episode += 1
    finally:
        env.close()
    return recorder.trajectories()


def probe_targets(
    agent_pos: np.ndarray, agent_dir: np.ndarray, goal_pos: np.ndarray | None, cue: np.ndarray | None = None
) -> dict[str, tuple[np.ndarray, bool]]:
    """
    What a representation should hold, from the ground truth: ``{name: (targets, are_classes)}``.

    ``position`` (x, z); ``heading`` (sin, cos); ``heading_sector`` (one of 8 classes);
    ``goal_relative`` (the goal ahead of and to the left of the agent), for tasks with one goal;
    ``cue`` (the episode's cue, a class), on memory tasks: at every step, also where the cue is
    out of view, so a context ``c_t`` that remembers it beats the frame's ``z_t``.
    """
    targets = {
        "position": (np.asarray(agent_pos, dtype=np.float32), False),
        "heading": (np.stack([np.sin(agent_dir), np.cos(agent_dir)], axis=1).astype(np.float32), False),
        "heading_sector": (
            (
                np.floor((np.asarray(agent_dir) + math.pi) / (2 * math.pi) * HEADING_SECTORS).astype(np.int64)
                % HEADING_SECTORS
            ),
            True,
        ),
    }
    if goal_pos is not None:
        offset = np.asarray(goal_pos) - np.asarray(agent_pos)
        # MiniWorld's heading points along (cos, -sin) in (x, z); left of it is (-sin, -cos).
        ahead = offset[:, 0] * np.cos(agent_dir) - offset[:, 1] * np.sin(agent_dir)
        left = -offset[:, 0] * np.sin(agent_dir) - offset[:, 1] * np.cos(agent_dir)
        targets["goal_relative"] = (np.stack([ahead, left], axis=1).astype(np.float32), False)
    if cue is not None:
        targets["cue"] = (np.asarray(cue, dtype=np.int64), True)
    return targets
