"""CPCRecurrentPPO against plain sb3-contrib RecurrentPPO at the same settings, in one run.

Two settings, runs alternating, median of the repeats:

- ``miniworld``: the main job's preset on MiniWorld (conv encoder + LSTM); ours with CPC and
  without, sb3-contrib without (it has no CPC).
- ``cartpole``: sb3-contrib's own RecurrentPPO performance-test settings: CartPole without its
  velocities, ``MlpLstmPolicy``, 8 envs, n_steps 128, batch 256, 10 epochs, a critic LSTM;
  ours without CPC against sb3-contrib.

For each: steps/s end to end (``learn``) and of the learner alone (``train()`` on one fixed
rollout). Ratios above 1 mean ours is faster.

    python bench/recurrent_vs_contrib.py [--settings miniworld cartpole --steps 2000 --repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable

import gymnasium as gym
import numpy as np
import torch
from pipeline import end_to_end, learner_only
from sb3_contrib import RecurrentPPO
from stable_baselines3.common.logger import configure
from stable_baselines3.common.vec_env import DummyVecEnv

from cpc_rl import envs
from cpc_rl.agents import preset
from cpc_rl.sb3 import CPCRecurrentPPO


class WithoutVelocities(gym.ObservationWrapper):
    """CartPole observing only the cart's position and the pole's angle: the velocities must be remembered."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        low, high = env.observation_space.low[[0, 2]], env.observation_space.high[[0, 2]]
        self.observation_space = gym.spaces.Box(low, high, dtype=np.float32)

    def observation(self, observation: np.ndarray) -> np.ndarray:
        return observation[[0, 2]]


def cartpole_models() -> dict[str, Callable]:
    vec_env = DummyVecEnv([lambda: WithoutVelocities(gym.make("CartPole-v1")) for _ in range(8)])
    settings = dict(n_steps=128, batch_size=256, n_epochs=10, seed=0, device="cpu")
    settings["policy_kwargs"] = dict(enable_critic_lstm=True, lstm_hidden_size=64, net_arch=dict(vf=[64], pi=[]))
    return {
        "sb3-contrib RecurrentPPO": lambda: RecurrentPPO("MlpLstmPolicy", vec_env, **settings),
        "CPCRecurrentPPO, no CPC": lambda: CPCRecurrentPPO("MlpLstmPolicy", vec_env, cpc_kwargs=None, **settings),
    }


def miniworld_models(env_id: str) -> dict[str, Callable]:
    vec_env = envs.make_vec_env(env_id, 4, seed=0, vec_env="dummy")

    def ours(aux: str) -> CPCRecurrentPPO:
        config = preset("recurrent_ppo", aux)
        return CPCRecurrentPPO(
            config["policy"], vec_env, cpc_kwargs=config["cpc_kwargs"], seed=0, device="cpu", **config["algo_kwargs"]
        )

    def contrib() -> RecurrentPPO:
        config = preset("recurrent_ppo", None)
        return RecurrentPPO(config["policy"], vec_env, seed=0, device="cpu", **config["algo_kwargs"])

    return {
        "sb3-contrib RecurrentPPO": contrib,
        "CPCRecurrentPPO, no CPC": lambda: ours("none"),
        "CPCRecurrentPPO, CPC": lambda: ours("cpc"),
    }


def rates(make_model: Callable, steps: int, train_calls: int) -> tuple[float, float]:
    """Steps/s of ``learn`` and of ``train()`` alone, from a fresh model (see bench/pipeline.py)."""
    model = make_model()
    model.set_logger(configure(None, []))
    learner = learner_only(model, train_calls)  # after one warm-up rollout and update
    return end_to_end(model, steps), learner


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--settings", nargs="+", default=["miniworld", "cartpole"], choices=("miniworld", "cartpole"))
    parser.add_argument("--env", default="MiniWorld-Hallway-v0", help="the MiniWorld task")
    parser.add_argument("--steps", type=int, default=2000, help="end-to-end steps per run")
    parser.add_argument("--train-calls", type=int, default=3, help="train() calls for the learner-only rate")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: the figures compare code, not cores)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{args.steps} steps per run, {args.repeats} repeats, {torch.get_num_threads()} torch threads")
    print("| setting | agent | end to end (steps/s) | learner only (steps/s) | end to end vs sb3-contrib |")
    print("|---|---|---|---|---|")
    for setting in args.settings:
        models = miniworld_models(args.env) if setting == "miniworld" else cartpole_models()
        measured: dict[str, list[tuple[float, float]]] = {name: [] for name in models}
        for _ in range(args.repeats):
            for name, make_model in models.items():
                measured[name].append(rates(make_model, args.steps, args.train_calls))
        base = statistics.median(total for total, _ in measured["sb3-contrib RecurrentPPO"])
        for name, runs in measured.items():
            total = statistics.median(t for t, _ in runs)
            learner = statistics.median(learner for _, learner in runs)
            print(f"| {setting} | {name} | {total:.0f} | {learner:.0f} | {total / base:.2f} |", flush=True)


if __name__ == "__main__":
    main()
