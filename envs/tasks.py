"""cpc-rl's own MiniWorld tasks, registered as gymnasium ids when ``envs`` is imported.

``MiniWorld-SignMemory-v0`` is MiniWorld's Sign task made into a memory task: MiniWorld's
``MiniWorld-Sign-v0`` takes the sign's colour as a constructor argument and never draws it again,
so one reactive policy solves every episode. Here the sign's word is drawn at every reset, and
the agent cannot see it once it faces the boxes.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import utils

from envs.rendering import RendererUnavailableError, import_miniworld

SIGN_COLORS = ("blue", "red", "green")

# What each task of the suite tests, as envs.list_envs(with_kinds=True) shows it.
TASK_KINDS: dict[str, str] = {
    "MiniWorld-SignMemory-v0": "memory: read a sign, turn away, go to the box of its colour",
    "MiniWorld-TMaze-v0": "exploration + memory: look down the arms of a T, remember where the box is",
    "MiniWorld-YMaze-v0": "exploration + memory: as TMaze, arms at 120 degrees",
    "MiniWorld-MazeS3Fast-v0": "exploration: a new 3x3 maze each episode",
    "MiniWorld-FourRooms-v0": "exploration: the box can be in any of four rooms",
    "MiniWorld-PickupObjects-v0": "collection: find and pick up several objects",
    "MiniWorld-OneRoomS6Fast-v0": "reactive: the box is usually in view",
    "MiniWorld-Hallway-v0": "reactive: walk down a corridor to the box (smoke tests)",
}


@functools.cache
def _sign_memory_class() -> type:
    import_miniworld()
    from miniworld.entity import Box, TextFrame
    from miniworld.miniworld import MiniWorldEnv
    from miniworld.params import DEFAULT_PARAMS

    class SignMemory(MiniWorldEnv, utils.EzPickle):
        """
        A room with a sign on the south wall and three boxes (blue, red, green, west to east)
        along the north wall. The agent starts facing the sign, a panel of a colour with its
        word (BLUE, RED or GREEN) above, drawn at every reset. Touching a box ends the episode:
        the box of the sign's colour gives ``1 - 0.2 t/T``, another gives 0. Facing the boxes,
        the sign is behind the agent: an agent without memory succeeds 1 time in 3 at best.

        Actions: turn left, turn right, move forward (0.7 units, 45 degree turns, as MiniWorld's Sign).
        ``info["sign_color"]`` holds the index of the word in :data:`SIGN_COLORS`.

        :param max_episode_steps: steps before truncation (about 10 are needed).
        """

        def __init__(self, max_episode_steps: int = 30, **kwargs: Any) -> None:
            params = DEFAULT_PARAMS.no_random()
            params.set("forward_step", 0.7)
            params.set("turn_step", 45)
            self.sign_color = 0
            MiniWorldEnv.__init__(self, params=params, max_episode_steps=max_episode_steps, domain_rand=False, **kwargs)
            utils.EzPickle.__init__(self, max_episode_steps, **kwargs)
            self.action_space = gym.spaces.Discrete(self.actions.move_forward + 1)

        def _gen_world(self) -> None:
            self.add_rect_room(min_x=0, max_x=9, min_z=0, max_z=7)
            self.sign_color = int(self.np_random.integers(len(SIGN_COLORS)))
            self.boxes = [
                self.place_entity(Box(color=color, size=0.8), pos=np.array([1.5 + 3.0 * i, 0, 1.0]), dir=0.0)
                for i, color in enumerate(SIGN_COLORS)
            ]
            self.box = self.boxes[self.sign_color]
            # The sign: a panel of the colour with its word above, on the wall behind the agent's back
            # once it faces the boxes. (A word alone, grey glyphs a few pixels high, took the plain
            # recurrent agent past 120k steps just to reach the 1-in-3 rate of going to any box.)
            colour = SIGN_COLORS[self.sign_color]
            self.place_entity(Box(color=colour, size=[2.4, 1.2, 0.1]), pos=np.array([4.5, 0.4, 6.9]), dir=0.0)
            self.entities.append(TextFrame(pos=[4.5, 2.0, 7.0], dir=math.pi / 2, str=colour.upper(), height=0.5))
            # Facing +z (the sign), give or take 15 degrees: the whole word is in view.
            heading = -math.pi / 2 + self.np_random.uniform(-math.pi / 12, math.pi / 12)
            self.place_agent(dir=heading, min_x=4.0, max_x=5.0, min_z=3.5, max_z=4.5)

        def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
            obs, info = super().reset(seed=seed, options=options)
            return obs, {**info, "sign_color": self.sign_color}

        def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict]:
            obs, reward, terminated, truncated, info = super().step(action)
            touched = [box for box in self.boxes if self.near(box)]
            if touched:
                nearest = min(touched, key=lambda box: np.linalg.norm(box.pos - self.agent.pos))
                reward = self._reward() if nearest is self.box else 0.0
                terminated, truncated = True, False
            return obs, reward, terminated, truncated, {**info, "sign_color": self.sign_color}

    return SignMemory


def make_sign_memory(**kwargs: Any) -> gym.Env:
    """Entry point of ``MiniWorld-SignMemory-v0`` (the class needs miniworld imported headless)."""
    return _sign_memory_class()(**kwargs)


def register_tasks() -> None:
    """
    Register cpc-rl's tasks with gymnasium (idempotent), and MiniWorld's by importing it headless:
    after ``import envs`` every id is known to ``gym.make`` and to tools such as the Zoo
    (``--gym-packages envs``).
    """
    try:
        import_miniworld()
    except RendererUnavailableError:
        pass  # make_env says what to install when an env is made; importing envs still works
    if "MiniWorld-SignMemory-v0" not in gym.registry:
        gym.register("MiniWorld-SignMemory-v0", entry_point="envs.tasks:make_sign_memory")
