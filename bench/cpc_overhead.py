"""Wall time of training with CPC divided by the same without, per algorithm, in one run.

For each algorithm, plain (aux none) and CPC runs of the same preset alternate, several
repeats, each from a fresh model after a short warm-up; the median ratio is printed with where
the time goes (env stepping and inference vs training). Also compares plain sb3-contrib
RecurrentPPO with CPCRecurrentPPO without CPC (its whole-sequence LSTM path) and with CPC.

    python bench/cpc_overhead.py [--env MiniWorld-Hallway-v0 --steps 2000 --repeats 3 --n-envs 4]
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time

import torch
from sb3_contrib import RecurrentPPO
from stable_baselines3.common.logger import configure

import envs
from agents import make_agent, preset


def timed_learn(model, steps: int, clock=time.perf_counter) -> tuple[float, float]:
    """Seconds of ``learn(steps)`` in all and in ``train()``, on ``clock``."""
    model.set_logger(configure(None, []))
    train = model.train
    spent = [0.0]

    def timed_train() -> None:
        start = clock()
        train()
        spent[0] += clock() - start

    model.train = timed_train
    model.learn(model.n_steps * model.n_envs)  # warm-up: first rollout, allocator, kernels
    spent[0] = 0.0
    start = clock()
    model.learn(steps, reset_num_timesteps=False)
    return clock() - start, spent[0]


def plain_recurrent_ppo(vec_env, device: str):
    config = preset("recurrent_ppo", None)
    return RecurrentPPO(config["policy"], vec_env, seed=0, device=device, **config["algo_kwargs"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="MiniWorld-Hallway-v0")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--n-envs", type=int, default=4)
    parser.add_argument("--algos", nargs="+", default=["a2c", "ppo", "recurrent_ppo"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="cpu: the process's CPU time, which other load on a shared machine disturbs far less "
        "(use with OMP_NUM_THREADS=1; envs run in-process)",
    )
    parser.add_argument("--horizon", type=int, help="CPC's horizon instead of the presets' (e.g. 30, the old default)")
    args = parser.parse_args()
    cpc_kwargs = {"horizon": args.horizon} if args.horizon else {}
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    vec_env = envs.make_vec_env(args.env, args.n_envs, vec_env="dummy")
    print(
        f"{args.env}, {args.n_envs} envs (dummy vec env), {args.steps} steps per run, median of {args.repeats}, "
        f"device {args.device}, {torch.get_num_threads()} torch threads, {args.clock} clock"
    )
    print(f"| run | steps/s | share of time in training | {args.clock} time vs plain |")
    print("|---|---|---|---|")
    for algo in args.algos:
        builders = {
            "none": functools.partial(make_agent, algo, vec_env, aux="none", device=args.device),
            "cpc": functools.partial(make_agent, algo, vec_env, aux="cpc", device=args.device, cpc_kwargs=cpc_kwargs),
        }
        if algo == "recurrent_ppo":
            builders["sb3-contrib RecurrentPPO"] = functools.partial(plain_recurrent_ppo, vec_env, args.device)
        results = {name: [] for name in builders}
        for _ in range(args.repeats):
            for name, build in builders.items():
                results[name].append(timed_learn(build(), args.steps, clock))
        plain = statistics.median(wall for wall, _ in results["none"])
        for name, runs in results.items():
            wall = statistics.median(w for w, _ in runs)
            training = statistics.median(t / w for w, t in runs)
            label = f"{algo} aux={name}" if name in ("none", "cpc") else name
            print(f"| {label} | {args.steps / wall:.0f} | {training:.0%} | {wall / plain:.2f} |")
    vec_env.close()


if __name__ == "__main__":
    main()
