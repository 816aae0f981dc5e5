"""How much PPO's per-minibatch advantage normalization rescales minibatches of pieces vs shuffled steps.

    python results/ppo/advantage_scale.py RUN_DIR [--rollouts 30]

Loads a trained PPO run's ``model.zip`` (models are not committed: run it where the run trained),
collects rollouts with its policy on its env, and prints, per minibatch of the presets (2 per
epoch, 4 epochs), the rollout's advantage spread over the minibatch's: for minibatches of 4
pieces of 50 steps (``CPCPPO`` with CPC) and of 200 shuffled steps (SB3's PPO). A ratio of 2
means per-minibatch normalization doubled that minibatch's advantages against the rollout's.
The pilot's models were saved by its frozen worktree's older layout (``agents.networks``): give
that worktree as ``--old-layout ../study-wt`` to load them. Not part of the installed package.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
import yaml
from stable_baselines3.common.callbacks import CallbackList

from cpc_rl.envs import make_vec_env
from cpc_rl.sb3 import CPCPPO


def spread_ratios(run_dir: Path, rollouts: int, piece: int = 50, pieces_per_batch: int = 4) -> dict[str, np.ndarray]:
    """Rollout std / minibatch std of the advantages, for piece and shuffled minibatches."""
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    env = make_vec_env(config["env"], 4, seed=5000, vec_env="dummy")
    model = CPCPPO.load(run_dir / "model.zip", env=env, device="cpu")
    callback = CallbackList([])  # collect_rollouts asks a callback whether to go on
    callback.init_callback(model)
    model._last_obs = model.env.reset()
    model._last_episode_starts = np.ones(model.n_envs, dtype=bool)
    rng = np.random.default_rng(0)
    ratios: dict[str, list[float]] = {"pieces": [], "shuffled": []}
    for _ in range(rollouts):
        model.collect_rollouts(model.env, callback, model.rollout_buffer, n_rollout_steps=model.n_steps)
        advantages = model.rollout_buffer.advantages  # (n_steps, n_envs)
        spread = advantages.std()
        pieces = [advantages[s : s + piece, e] for e in range(model.n_envs) for s in range(0, model.n_steps, piece)]
        batch = piece * pieces_per_batch
        for _epoch in range(model.n_epochs):
            order = rng.permutation(len(pieces))
            for first in range(0, len(order), pieces_per_batch):
                chosen = np.concatenate([pieces[i] for i in order[first : first + pieces_per_batch]])
                ratios["pieces"].append(spread / (chosen.std() + 1e-8))
            shuffled = rng.permutation(advantages.reshape(-1))
            for first in range(0, len(shuffled), batch):
                ratios["shuffled"].append(spread / (shuffled[first : first + batch].std() + 1e-8))
    env.close()
    return {name: np.array(values) for name, values in ratios.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--rollouts", type=int, default=30)
    parser.add_argument("--piece", type=int, default=50, help="steps per piece (the PPO presets: 50)")
    parser.add_argument(
        "--pieces-per-batch", type=int, default=4, help="pieces per minibatch (4; the recurrent presets: 2 of 100)"
    )
    parser.add_argument("--old-layout", type=Path, help="a checkout of the layout that saved the model")
    args = parser.parse_args()
    if args.old_layout:
        sys.path.append(str(args.old_layout.resolve()))  # after this checkout's, so only unpickling uses it
    torch.set_num_threads(1)
    for name, ratio in spread_ratios(args.run_dir, args.rollouts, args.piece, args.pieces_per_batch).items():
        print(
            f"{name:>8}: rollout std / minibatch std: median {np.median(ratio):.2f}, "
            f"90th percentile {np.percentile(ratio, 90):.2f}, max {ratio.max():.2f}, "
            f"share > 2: {(ratio > 2).mean():.2f}"
        )


if __name__ == "__main__":
    main()
