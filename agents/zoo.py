"""The presets as RL Baselines3 Zoo hyper-parameter files (``agents/zoo/*.yml``), generated, never edited.

    python -m cpc_rl.agents.zoo        # rewrite agents/zoo/cpc_a2c.yml, cpc_ppo.yml, cpc_ppo_lstm.yml

A test checks the files equal what the presets generate, so the presets stay the one source.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from cpc_rl.agents.presets import PRESETS

ZOO_FOLDER = Path(__file__).resolve().parent / "zoo"
ZOO_NAMES = {"a2c": "cpc_a2c", "ppo": "cpc_ppo", "recurrent_ppo": "cpc_ppo_lstm"}
# Env steps per task: the studies' budgets where they were calibrated (docs/results/rl_study.md,
# docs/results/study2/PLAN.md), else 1M.
BUDGETS = {
    "MiniWorld-SignMemory-v0": 75_000,
    "MiniWorld-CueCorridor-v0": 40_000,
    "MiniWorld-CueMatch-v0": 100_000,
    "MiniWorld-MazeS3Fast-v0": 30_000,
    "MiniWorld-MazeS2-v0": 50_000,
    "MiniWorld-Hallway-v0": 30_000,
    "MiniWorld-OneRoomS6Fast-v0": 10_000,
}
TASKS = (
    "MiniWorld-SignMemory-v0",
    "MiniWorld-CueCorridor-v0",
    "MiniWorld-CueMatch-v0",
    "MiniWorld-MazeS2-v0",
    "MiniWorld-Hallway-v0",
    "MiniWorld-TMaze-v0",
    "MiniWorld-MazeS3Fast-v0",
    "MiniWorld-FourRooms-v0",
    "MiniWorld-PickupObjects-v0",
    "MiniWorld-OneRoomS6Fast-v0",
)
_ENCODER = "__import__('cpc_rl.agents.networks', fromlist=['FrameEncoder']).FrameEncoder"


def _policy_kwargs_text(policy_kwargs: dict[str, Any]) -> str:
    """The Zoo evaluates ``policy_kwargs`` strings; the encoder class is imported by name inside it."""
    parts = []
    for key, value in policy_kwargs.items():
        text = _ENCODER if key == "features_extractor_class" else repr(value)
        parts.append(f"{key}={text}")
    return f"dict({', '.join(parts)})"


def zoo_hyperparams(algo: str) -> dict[str, dict[str, Any]]:
    """The Zoo entries of one algorithm: one per task, from :data:`agents.presets.PRESETS`."""
    preset = PRESETS[algo]
    algo_kwargs = {key: value for key, value in preset["algo_kwargs"].items() if key != "policy_kwargs"}
    entry = {
        "policy": preset["policy"],
        "n_envs": preset["n_envs"],
        **algo_kwargs,
        "policy_kwargs": _policy_kwargs_text(preset["algo_kwargs"]["policy_kwargs"]),
        "cpc_kwargs": dict(preset["cpc_kwargs"]),
        # Own display list per env and a tiny unused window (see envs.MiniWorldAgentEnv).
        "env_wrapper": ["cpc_rl.envs.MiniWorldAgentEnv"],
        "env_kwargs": {"window_width": 32, "window_height": 24},
    }
    return {task: {"n_timesteps": BUDGETS.get(task, 1_000_000), **copy.deepcopy(entry)} for task in TASKS}


def zoo_files() -> dict[str, str]:
    """File name -> YAML text of every algorithm's Zoo file."""
    header = "# Generated from agents/presets.py by `python -m cpc_rl.agents.zoo`; edit the presets, not this file.\n"
    return {
        f"{name}.yml": header + yaml.safe_dump(zoo_hyperparams(algo), sort_keys=False)
        for algo, name in ZOO_NAMES.items()
    }


def write_zoo_files(folder: Path = ZOO_FOLDER) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in zoo_files().items():
        (folder / name).write_text(text)
        written.append(folder / name)
    return written


if __name__ == "__main__":
    for path in write_zoo_files():
        print(path)
