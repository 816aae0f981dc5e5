"""ViZDoom scenarios for cpc-rl agents: image observations, true truncations, ground truth for probes.

ViZDoom (``pip install -e ".[vizdoom]"``) ships its engine, WADs and scenarios in its wheel and runs
without a display. Its gymnasium wrapper needs three mends before SB3 agents can use it:

- observations are a ``Dict`` (``screen`` and sometimes ``gamevariables``): agents here get the
  screen alone, a uint8 ``(H, W, 3)`` image like MiniWorld's;
- at the episode timeout it reports ``terminated`` *and* ``truncated``, so SB3 does not bootstrap
  the value of a state that merely ran out of time: here a timeout is a truncation only;
- the observation after the last step is all zeros (the engine has no state then), which SB3 would
  bootstrap from at a timeout: here it is the last frame the engine rendered.
"""

from __future__ import annotations

import contextlib
import io
import math
from typing import Any

import gymnasium as gym
import numpy as np

#: Where ``make_env`` sends an id to this module.
VIZDOOM_PREFIX = "Vizdoom"

INSTALL_HINT = 'ViZDoom is not installed; install cpc-rl\'s extra: pip install -e ".[vizdoom]" (or pip install vizdoom)'

#: The ViZDoom scenarios cpc-rl agents take (one discrete action per step), and what each tests.
VIZDOOM_KINDS: dict[str, str] = {
    "VizdoomMyWayHome-v1": "exploration + navigation: find the vest in a maze of 8 rooms from a random start (sparse)",
    "VizdoomHealthGatheringSupreme-v1": "foraging + navigation: gather medkits, avoid poison, in a maze of rooms",
    "VizdoomHealthGathering-v1": "foraging: gather medkits on a floor that hurts, in one room (reactive)",
    "VizdoomDeadlyCorridor-v1": "combat + navigation: reach the vest at the end of a corridor of shooters",
    "VizdoomDefendCenter-v1": "reactive combat: turn and shoot monsters closing in on the centre",
    "VizdoomDefendLine-v1": "reactive combat: shoot monsters along a line in front",
    "VizdoomTakeCover-v1": "reactive: dodge fireballs by strafing",
    "VizdoomPredictPosition-v1": "prediction: fire a slow rocket where a moving monster will be",
    "VizdoomBasic-v1": "reactive: shoot the monster in front (smoke tests)",
}

#: Rewards are multiplied by this, per scenario, unless ``reward_scale`` is given. Scenarios that pay
#: one point per tic alive (or per map unit, or 100 per hit) give returns in the hundreds to
#: thousands; with the presets' value loss and gradient clipping (``max_grad_norm=0.5``), tuned for
#: returns near 1, their value function never learned (explained variance 0 over 400k steps) and
#: the policy did not move. Scaled, a good episode returns about 1-25. Returns in monitor files and
#: evaluations are in these scaled units: the game's score is the return divided by the scale.
REWARD_SCALES: dict[str, float] = {
    "VizdoomHealthGatheringSupreme-v1": 0.01,
    "VizdoomHealthGathering-v1": 0.01,
    "VizdoomDeadlyCorridor-v1": 0.01,
    "VizdoomTakeCover-v1": 0.01,
    "VizdoomBasic-v1": 0.01,
}

#: Observation size by default: the engine's smallest 4:3 screen (160x120), every second pixel.
DEFAULT_RESOLUTION = "RES_160X120"
DEFAULT_FRAME_SKIP = 4


def vizdoom_available() -> bool:
    """Whether ``vizdoom`` can be imported."""
    try:
        import vizdoom  # noqa: F401
    except ImportError:
        return False
    return True


def import_vizdoom() -> Any:
    """
    Import vizdoom and register its gymnasium ids.

    :raises ModuleNotFoundError: naming the extra to install.
    """
    try:
        import vizdoom
        import vizdoom.gymnasium_wrapper  # noqa: F401  (registers the Vizdoom* ids)
    except ImportError:
        raise ModuleNotFoundError(INSTALL_HINT) from None
    return vizdoom


def _resolution_size(vizdoom: Any, resolution: Any) -> tuple[int, int]:
    name = resolution if isinstance(resolution, str) else getattr(resolution, "name", str(resolution))
    name = name.upper().removeprefix("SCREENRESOLUTION.")
    if not hasattr(vizdoom.ScreenResolution, name):
        valid = [n for n in dir(vizdoom.ScreenResolution) if n.startswith("RES_")]
        raise ValueError(f"unknown screen_resolution {resolution!r}; valid: {', '.join(valid)}")
    width, height = name.removeprefix("RES_").split("X")
    return int(height), int(width)


class VizdoomAgentEnv(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """
    A ViZDoom scenario made for agents: the screen as a uint8 ``(H, W, 3)`` image, timeouts as
    truncations, the last frame as the final observation, a seed that applies to the first reset,
    and ground truth in ``info``.

    ``info`` holds, at reset and every step, ``agent_pos`` (x, y in map units), ``agent_dir``
    (heading in radians, wrapped to ``[-pi, pi)``) and ``health``, read from the engine.

    :param env: a ViZDoom env made by ``gymnasium.make``.
    :param stride: keep every ``stride``-th pixel of the screen in each direction.
    :param seed: seed of the first reset unless that reset is given one (and of the action space).
    :param reward_scale: every reward is multiplied by it.
    """

    def __init__(self, env: gym.Env, stride: int = 2, seed: int | None = None, reward_scale: float = 1.0) -> None:
        gym.utils.RecordConstructorArgs.__init__(self, stride=stride, seed=seed, reward_scale=reward_scale)
        gym.Wrapper.__init__(self, env)
        vizdoom = import_vizdoom()
        screen = env.observation_space["screen"]
        height, width, channels = screen.shape
        self._stride = stride
        self._reward_scale = float(reward_scale)
        self.observation_space = gym.spaces.Box(
            0, 255, (len(range(0, height, stride)), len(range(0, width, stride)), channels), np.uint8
        )
        self._game = env.unwrapped.game
        self._variables = [
            getattr(vizdoom.GameVariable, name) for name in ("POSITION_X", "POSITION_Y", "ANGLE", "HEALTH")
        ]
        self._last_obs = np.zeros(self.observation_space.shape, np.uint8)
        #: Steps before the engine's timeout truncates an episode.
        timeout = self._game.get_episode_timeout() - self._game.get_episode_start_time()
        self.max_episode_steps = math.ceil(timeout / env.unwrapped.frame_skip) if timeout > 0 else None
        self._first_seed = seed
        self.moves = self._find_moves(vizdoom)
        if seed is not None:
            self.action_space.seed(seed)

    def _find_moves(self, vizdoom: Any) -> dict[str, int]:
        """The action index of each single-button move the scenario has (for exploring policies)."""
        binary = [b for b in self._game.get_available_buttons() if not vizdoom.is_delta_button(b)]
        moves = {}
        for index, pressed in enumerate(getattr(self.env.unwrapped, "button_map", [])):
            if int(np.sum(pressed)) == 1:
                moves[binary[int(np.argmax(pressed))].name.lower()] = index
        return moves

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        # As envs.MiniWorldAgentEnv: the first reset takes the env's seed, later ones continue its stream.
        if seed is None:
            seed = self._first_seed
        self._first_seed = None
        obs, _ = self.env.reset(seed=seed, options=options)
        return self._screen(obs), self._ground_truth()

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        obs, reward, terminated, truncated, _ = self.env.step(action)
        if truncated:  # the engine also says "finished" at a timeout; nothing ended the task itself
            terminated = False
        reward = float(reward) * self._reward_scale
        return self._screen(obs), reward, bool(terminated), bool(truncated), self._ground_truth()

    def _screen(self, obs: dict) -> np.ndarray:
        if self._game.get_state() is not None:  # no state after the last step: keep the last frame
            self._last_obs = np.ascontiguousarray(obs["screen"][:: self._stride, :: self._stride])
        return self._last_obs

    def _ground_truth(self) -> dict:
        x, y, angle, health = (self._game.get_game_variable(v) for v in self._variables)
        return {
            "agent_pos": np.array([x, y], dtype=np.float32),
            "agent_dir": float((math.radians(angle) + math.pi) % (2 * math.pi) - math.pi),
            "health": float(health),
        }


def vizdoom_defaults(env_id: str) -> dict[str, Any]:
    """The settings :func:`make_vizdoom_env` makes a scenario with unless told otherwise (recorded with each run)."""
    return {
        "frame_skip": DEFAULT_FRAME_SKIP,
        "screen_resolution": DEFAULT_RESOLUTION,
        "reward_scale": REWARD_SCALES.get(env_id, 1.0),
    }


def make_vizdoom_env(
    env_id: str,
    *,
    seed: int | None = None,
    obs_size: tuple[int, int] | None = None,
    frame_skip: int = DEFAULT_FRAME_SKIP,
    screen_resolution: str = DEFAULT_RESOLUTION,
    reward_scale: float | None = None,
    **env_kwargs: Any,
) -> gym.Env:
    """
    Make one ViZDoom scenario, headless, ready for an agent.

    :param env_id: one of :data:`VIZDOOM_KINDS`.
    :param seed: seed of the first reset; later resets continue its random stream.
    :param obs_size: ``(height, width)`` of observations: the screen resolution divided by a whole
        number (default: half of ``screen_resolution``, 60x80 at 160x120).
    :param frame_skip: engine tics per action.
    :param screen_resolution: the engine's render size, a ``vizdoom.ScreenResolution`` name.
    :param reward_scale: multiplies every reward (default: the scenario's in :data:`REWARD_SCALES`, else 1).
    :param env_kwargs: passed to ViZDoom's env (settings of its ``DoomGame``).
    :return: a gymnasium env with ``uint8`` channel-last image observations.
    """
    vizdoom = import_vizdoom()
    if env_id not in VIZDOOM_KINDS:
        raise ValueError(f"{env_id} is not a ViZDoom scenario cpc-rl takes; choose one of {', '.join(VIZDOOM_KINDS)}")
    if not isinstance(frame_skip, (int, np.integer)) or frame_skip < 1:
        raise ValueError(f"frame_skip must be an integer >= 1; got {frame_skip!r}")
    reward_scale = vizdoom_defaults(env_id)["reward_scale"] if reward_scale is None else reward_scale
    if isinstance(reward_scale, bool) or not isinstance(reward_scale, (int, float)) or not 0 < reward_scale < math.inf:
        raise ValueError(f"reward_scale must be a positive number (e.g. 0.01); got {reward_scale!r}")
    height, width = _resolution_size(vizdoom, screen_resolution)
    stride = 2
    if obs_size is not None:
        stride = height // obs_size[0]
        if stride < 1 or (height, width) != (obs_size[0] * stride, obs_size[1] * stride):
            raise ValueError(
                f"obs_size {tuple(obs_size)} does not divide screen_resolution {screen_resolution} ({height}x{width}) "
                f"by a whole number; e.g. obs_size=({height // 2}, {width // 2}) or ({height}, {width})"
            )
    with contextlib.redirect_stdout(io.StringIO()):
        env = gym.make(
            env_id,
            disable_env_checker=True,
            frame_skip=int(frame_skip),
            screen_resolution=screen_resolution,
            **env_kwargs,
        )
    return VizdoomAgentEnv(env, stride=stride, seed=seed, reward_scale=float(reward_scale))
