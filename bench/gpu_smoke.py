"""GPU smoke test: CPCRecurrentPPO with CPC on MiniWorld, on CUDA when there is one.

Prints steps/s, peak GPU memory and the share of time in env steps vs training, and fails
(exit 1) if any parameter or any tensor reaching the CPC head is off the GPU. Where there is no
GPU it runs on the CPU and says so.

    python bench/gpu_smoke.py [--env MiniWorld-Hallway-v0 --steps 4000 --n-envs 8]
"""

from __future__ import annotations

import argparse
import sys
import time

import torch
from stable_baselines3.common.logger import configure

from cpc_rl import envs
from cpc_rl.agents import make_agent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="MiniWorld-Hallway-v0")
    parser.add_argument("--steps", type=int, default=4000)
    parser.add_argument("--n-envs", type=int, default=8)
    args = parser.parse_args()
    on_gpu = torch.cuda.is_available()
    device = "cuda" if on_gpu else "cpu"
    if on_gpu:
        print(f"GPU: {torch.cuda.get_device_name(0)}")
    else:
        print("No CUDA GPU here: running on the CPU; the device checks below test the CPU instead.")
    vec_env = envs.make_vec_env(args.env, args.n_envs, vec_env="subproc")
    model = make_agent("recurrent_ppo", vec_env, aux="cpc", device="auto")
    model.set_logger(configure(None, []))
    off_device: list[str] = []

    def check_inputs(module: torch.nn.Module, inputs: tuple) -> None:
        for position, value in enumerate(inputs):
            if isinstance(value, torch.Tensor) and value.device.type != device:
                off_device.append(f"CPC head input {position} on {value.device}")

    model.policy.cpc_head.register_forward_pre_hook(check_inputs)
    off_device += [
        f"parameter {name} on {p.device}" for name, p in model.policy.named_parameters() if p.device.type != device
    ]
    train = model.train
    in_training = [0.0]

    def timed_train() -> None:
        start = time.perf_counter()
        train()
        if on_gpu:
            torch.cuda.synchronize()
        in_training[0] += time.perf_counter() - start

    model.train = timed_train
    if on_gpu:
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    model.learn(args.steps, progress_bar=False)
    wall = time.perf_counter() - start
    vec_env.close()
    print(f"device {model.device}, {args.n_envs} envs, {args.steps} steps: {model.num_timesteps / wall:.0f} steps/s")
    training = in_training[0] / wall
    print(f"time: {1 - training:.0%} collecting (env steps + inference), {training:.0%} training")
    if on_gpu:
        print(f"peak GPU memory: {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB")
    print(
        f"CPC loss {model.logger.name_to_value.get('train/cpc_loss', float('nan')):.3f}, "
        f"accuracy {model.logger.name_to_value.get('train/cpc_accuracy', float('nan')):.3f}"
    )
    if off_device:
        print("FAIL: off the device:\n  " + "\n  ".join(sorted(set(off_device))[:20]), file=sys.stderr)
        return 1
    print(f"OK: every parameter and every CPC tensor was on {device}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
