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

from cpc_rl.envs.rendering import RendererUnavailableError, import_miniworld

#: The colours of MiniWorld-SignMemory-v0's sign; ``info["sign_color"]`` indexes it.
SIGN_COLORS = ("blue", "red", "green")

#: Memory tasks whose ``info`` names the episode's cue (:func:`envs.exploration.memory_cue`): probes of
#: them fit the cue too, and ``compare --probe`` also probes them on an exploring policy.
CUE_TASKS = (
    "MiniWorld-SignMemory-v0",
    "MiniWorld-CueCorridor-v0",
    "MiniWorld-CueTMaze-v0",
    "MiniWorld-CueMatch-v0",
)

#: What each task of the suite tests, as ``envs.list_envs(with_kinds=True)`` shows it.
TASK_KINDS: dict[str, str] = {
    "MiniWorld-SignMemory-v0": "memory: read a sign, turn away, go to the box of its colour",
    "MiniWorld-CueCorridor-v0": "memory over a delay: see a colour, walk a corridor, touch the box of that colour",
    "MiniWorld-CueTMaze-v0": "memory at a choice: see a colour, walk a T's stem, take the arm it names",
    "MiniWorld-CueMatch-v0": "memory + matching: see a colour, walk a corridor, find the box of that colour "
    "(its side drawn at every reset)",
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
            self.sign_color = 0
            MiniWorldEnv.__init__(
                self, params=_sign_moves(), max_episode_steps=max_episode_steps, domain_rand=False, **kwargs
            )
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
            return _step_to_a_box(self, super().step(action), "sign_color", self.sign_color)

    return SignMemory


def _sign_moves() -> Any:
    """MiniWorld's physics with the moves of its Sign task: forward 0.7, turns of 45 degrees, no randomness."""
    from miniworld.params import DEFAULT_PARAMS

    params = DEFAULT_PARAMS.no_random()
    params.set("forward_step", 0.7)
    params.set("turn_step", 45)
    return params


def _step_to_a_box(env: Any, stepped: tuple, key: str, cue: int) -> tuple[np.ndarray, float, bool, bool, dict]:
    """
    The outcome of a step of a task whose episode ends at the first box touched: the nearest box
    touched decides, ``env.box`` pays ``1 - 0.2 t/T`` and any other 0; the cue goes in ``info[key]``.
    """
    obs, reward, terminated, truncated, info = stepped
    touched = [box for box in env.boxes if env.near(box)]
    if touched:
        nearest = min(touched, key=lambda box: np.linalg.norm(box.pos - env.agent.pos))
        reward = env._reward() if nearest is env.box else 0.0
        terminated, truncated = True, False
    return obs, reward, terminated, truncated, {**info, key: cue}


#: The cues of MiniWorld-CueCorridor-v0, -CueTMaze-v0 and -CueMatch-v0; ``info["cue"]`` indexes it.
CUE_COLORS = ("red", "blue")


@functools.cache
def _cue_task_classes() -> tuple[type, type, type]:
    import_miniworld()
    from miniworld.entity import Box
    from miniworld.miniworld import MiniWorldEnv

    class _CueTask(MiniWorldEnv, utils.EzPickle):
        """
        The agent starts facing a panel of a colour from :data:`CUE_COLORS` (the cue, drawn at every
        reset) on the west wall, with its back to where it must go. Two boxes wait at the far end,
        out of sight of the cue; the one the cue names pays ``1 - 0.2 t/T``, the other 0, and
        touching either ends the episode. An agent that cannot remember the cue succeeds 1 time in
        2 at best. Actions and moves as MiniWorld's Sign (turn 45 degrees, forward 0.7).
        ``info["cue"]`` holds the cue's index.
        """

        def __init__(self, max_episode_steps: int = 40, **kwargs: Any) -> None:
            self.cue = 0
            MiniWorldEnv.__init__(
                self, params=_sign_moves(), max_episode_steps=max_episode_steps, domain_rand=False, **kwargs
            )
            utils.EzPickle.__init__(self, max_episode_steps=max_episode_steps, **kwargs)
            self.action_space = gym.spaces.Discrete(self.actions.move_forward + 1)

        def _build_rooms(self) -> None:
            raise NotImplementedError

        def _box_positions(self) -> tuple[np.ndarray, np.ndarray]:
            raise NotImplementedError

        def _gen_world(self) -> None:
            self._build_rooms()
            self.cue = int(self.np_random.integers(len(CUE_COLORS)))
            colours = self._box_colours()
            self.boxes = [
                self.place_entity(Box(color=colour, size=0.8), pos=position, dir=0.0)
                for colour, position in zip(colours, self._box_positions(), strict=True)
            ]
            self.box = self.boxes[self.cue]
            cue = Box(color=CUE_COLORS[self.cue], size=[0.1, 1.2, 1.6])
            self.place_entity(cue, pos=np.array([0.1, 0.4, 0.0]), dir=0.0)
            # Facing the cue (west), give or take 15 degrees.
            heading = math.pi + self.np_random.uniform(-math.pi / 12, math.pi / 12)
            self.place_agent(dir=heading, min_x=1.6, max_x=2.2, min_z=-0.4, max_z=0.4)

        def _box_colours(self) -> tuple[str, str]:
            return CUE_COLORS

        def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
            obs, info = super().reset(seed=seed, options=options)
            return obs, {**info, "cue": self.cue}

        def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict]:
            return _step_to_a_box(self, super().step(action), "cue", self.cue)

    class CueCorridor(_CueTask):
        """
        A cue, then a delay: a corridor ``length`` units long and 4 wide; the red and the blue box
        stand at its east end (red south, blue north). The agent reads the cue, turns round and
        walks the corridor; the box of the cue's colour pays.

        :param length: of the corridor (the delay grows with it). At 6, a random policy touches a box
            in 29% of episodes (the named one in 14%), about as often as in SignMemory (28%, 8%);
            at 9 it did so in under 10%, and neither plain agent learned in 60k steps.
        """

        def __init__(self, length: float = 6.0, max_episode_steps: int = 40, **kwargs: Any) -> None:
            self.length = length
            super().__init__(max_episode_steps=max_episode_steps, **kwargs)
            utils.EzPickle.__init__(self, length=length, max_episode_steps=max_episode_steps, **kwargs)

        def _build_rooms(self) -> None:
            self.add_rect_room(min_x=0, max_x=self.length, min_z=-2, max_z=2)

        def _box_positions(self) -> tuple[np.ndarray, np.ndarray]:
            return np.array([self.length - 0.7, 0, -1.3]), np.array([self.length - 0.7, 0, 1.3])

    class CueMatch(CueCorridor):
        """
        :class:`CueCorridor` with the boxes' sides drawn at every reset (``info["boxes_swapped"]``):
        where the named box stands is known only at the far end, so the agent must match the colour
        it remembers to the box it sees, not turn to a side the cue maps to.
        """

        swapped = False

        def _box_positions(self) -> tuple[np.ndarray, np.ndarray]:
            self.swapped = bool(self.np_random.integers(2))
            south, north = super()._box_positions()
            return (north, south) if self.swapped else (south, north)

        def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
            obs, info = super().reset(seed=seed, options=options)
            return obs, {**info, "boxes_swapped": self.swapped}

    class CueTMaze(_CueTask):
        """
        A cue, then a T: a stem ``stem_length`` units long and 2 wide, and a crossbar whose two arms
        (``arm_length`` each) end in grey boxes. A red cue means the south arm, a blue cue the
        north arm. From the junction both boxes look the same: only the remembered cue tells them
        apart. At the default sizes a random policy touches a box in 35% of episodes (the named
        one in 16%).
        """

        def __init__(
            self, stem_length: float = 3.0, arm_length: float = 2.5, max_episode_steps: int = 40, **kwargs: Any
        ) -> None:
            self.stem_length, self.arm_length = stem_length, arm_length
            super().__init__(max_episode_steps=max_episode_steps, **kwargs)
            sizes = {"stem_length": stem_length, "arm_length": arm_length}
            utils.EzPickle.__init__(self, **sizes, max_episode_steps=max_episode_steps, **kwargs)

        def _build_rooms(self) -> None:
            stem = self.add_rect_room(min_x=0, max_x=self.stem_length, min_z=-1, max_z=1)
            end = self.stem_length + 2
            crossbar = self.add_rect_room(
                min_x=self.stem_length, max_x=end, min_z=-self.arm_length, max_z=self.arm_length
            )
            self.connect_rooms(stem, crossbar, min_z=-1, max_z=1)

        def _box_positions(self) -> tuple[np.ndarray, np.ndarray]:
            x, z = self.stem_length + 1, self.arm_length - 0.7
            return np.array([x, 0, -z]), np.array([x, 0, z])

        def _box_colours(self) -> tuple[str, str]:
            return ("grey", "grey")

    return CueCorridor, CueTMaze, CueMatch


def make_cue_corridor(**kwargs: Any) -> gym.Env:
    """Entry point of ``MiniWorld-CueCorridor-v0``."""
    return _cue_task_classes()[0](**kwargs)


def make_cue_tmaze(**kwargs: Any) -> gym.Env:
    """Entry point of ``MiniWorld-CueTMaze-v0``."""
    return _cue_task_classes()[1](**kwargs)


def make_cue_match(**kwargs: Any) -> gym.Env:
    """Entry point of ``MiniWorld-CueMatch-v0``."""
    return _cue_task_classes()[2](**kwargs)


def make_sign_memory(**kwargs: Any) -> gym.Env:
    """Entry point of ``MiniWorld-SignMemory-v0`` (the class needs miniworld imported headless)."""
    return _sign_memory_class()(**kwargs)


def register_tasks() -> None:
    """
    Register cpc-rl's tasks with gymnasium (idempotent), and MiniWorld's by importing it headless:
    after ``import envs`` every id is known to ``gym.make`` and to tools such as the Zoo
    (``--gym-packages cpc_rl.envs``).
    """
    try:
        import_miniworld()
    except RendererUnavailableError:
        pass  # make_env says what to install when an env is made; importing envs still works
    for env_id, entry_point in (
        ("MiniWorld-SignMemory-v0", "make_sign_memory"),
        ("MiniWorld-CueCorridor-v0", "make_cue_corridor"),
        ("MiniWorld-CueTMaze-v0", "make_cue_tmaze"),
        ("MiniWorld-CueMatch-v0", "make_cue_match"),
    ):
        if env_id not in gym.registry:
            gym.register(env_id, entry_point=f"cpc_rl.envs.tasks:{entry_point}")
