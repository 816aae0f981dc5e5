"""How close training is to this CPU's arithmetic limit: FLOPs per env step, and GFLOP/s achieved.

For a preset with CPC (default: the main job's RecurrentPPO on Hallway), in one run and on the
same torch threads:

- the practical peak: GFLOP/s of a large float32 matrix product;
- the learner: FLOPs of one ``train()`` on a fixed rollout (convolutions and matrix products counted
  by torch's ``FlopCounterMode``; LSTMs, which it does not see, counted from their sizes),
  its time, and the share of the peak it reaches;
- acting: the same for one policy step on all envs (the frames of one vec step).

A part near the peak gets faster only by doing less arithmetic (fewer epochs, a smaller encoder,
lower precision); a part far below it loses its time to overhead that engineering can remove.

    python bench/roofline.py [--env MiniWorld-Hallway-v0 --algo recurrent_ppo --repeats 3]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from stable_baselines3.common.logger import configure
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from cpc_rl import envs
from cpc_rl.agents import make_agent
from cpc_rl.experiments.config import RunConfig


def matmul_peak(size: int = 2048, repeats: int = 5) -> float:
    """GFLOP/s of a ``size`` x ``size`` float32 matrix product: what this core does at best."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * size**3 * repeats / (time.perf_counter() - start) / 1e9


def lstm_flops(policy: nn.Module, frames: int, backward: bool) -> float:
    """FLOPs of the policy's LSTMs over ``frames`` steps (FlopCounterMode does not count them)."""
    total = 0.0
    for lstm in (module for module in policy.modules() if isinstance(module, nn.LSTM)):
        for layer in range(lstm.num_layers):
            inputs = lstm.input_size if layer == 0 else lstm.hidden_size
            total += 2 * 4 * lstm.hidden_size * (inputs + lstm.hidden_size) * frames
    return total * (3 if backward else 1)  # a backward pass costs about twice the forward


def counted(fn) -> float:
    with FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())


def timed(fn, repeats: int) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="MiniWorld-Hallway-v0")
    parser.add_argument("--algo", default="recurrent_ppo")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    vec = envs.make_vec_env(args.env, RunConfig(algo=args.algo).num_envs, vec_env="dummy")
    model = make_agent(args.algo, vec, aux="cpc", seed=0)
    model.set_logger(configure(None, []))
    model.learn(model.n_steps * model.n_envs)  # one rollout in the buffer
    rollout = model.n_steps * model.n_envs
    epochs = getattr(model, "n_epochs", 1)

    learner_flops = counted(model.train) + lstm_flops(model.policy, rollout * epochs, backward=True)
    learner_seconds = timed(model.train, args.repeats)

    policy = model.policy
    policy.set_training_mode(False)
    observations = vec.reset()
    episode_starts = np.zeros(vec.num_envs, dtype=bool)
    if hasattr(model, "_last_lstm_states"):
        states = model._last_lstm_states

        def act() -> None:
            policy.predict(observations, states_as_numpy(states), episode_starts)

    else:

        def act() -> None:
            policy.predict(observations)

    act_flops = counted(act) + lstm_flops(policy, vec.num_envs, backward=False)
    act_seconds = timed(act, 50 * args.repeats)
    peak = matmul_peak()
    vec.close()

    print(f"{args.env}, {args.algo} + CPC (presets), {torch.get_num_threads()} torch thread(s), dummy vec env")
    print("| part | GFLOP | per env step (MFLOP) | seconds | GFLOP/s | share of the matmul peak |")
    print("|---|---|---|---|---|---|")
    print(f"| matmul {2048}x{2048} (peak) | | | | {peak:.0f} | 1.00 |")
    for name, flops, seconds, steps in (
        (f"learner: train() on {rollout} steps, {epochs} epochs", learner_flops, learner_seconds, rollout),
        (f"acting: one policy step on {vec.num_envs} envs", act_flops, act_seconds, vec.num_envs),
    ):
        rate = flops / seconds / 1e9
        print(
            f"| {name} | {flops / 1e9:.2f} | {flops / steps / 1e6:.1f} | {seconds:.4f} | {rate:.1f} "
            f"| {rate / peak:.2f} |"
        )
    best = 1 / (learner_flops / rollout / (peak * 1e9) + act_flops / vec.num_envs / (peak * 1e9))
    print(
        f"At the peak, learning and acting alone would allow {best:.0f} steps/s on {args.threads} thread(s) "
        "(envs not counted)."
    )


def states_as_numpy(states) -> tuple[np.ndarray, ...]:
    """sb3-contrib keeps LSTM states as tensors; ``predict`` takes them as numpy ``(h, c)``."""
    return tuple(tensor.cpu().numpy() for tensor in states.pi)


if __name__ == "__main__":
    main()
