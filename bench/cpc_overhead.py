"""Time of training with CPC divided by the same without, per task and algorithm, in one run.

For each task and algorithm, plain (aux none) and CPC runs of the same preset alternate, several
repeats, each from a fresh model after a short warm-up; the median ratio is printed with where
the time goes (env stepping and inference vs training). Also compares plain sb3-contrib
RecurrentPPO with CPCRecurrentPPO without CPC (its whole-sequence LSTM path) and with CPC.
``--breakdown`` profiles one ``train()`` of each and prints what CPC adds, by kind of operation.

    python bench/cpc_overhead.py [--envs MiniWorld-Hallway-v0 ... --steps 2000 --repeats 3 --n-envs 4]
    OMP_NUM_THREADS=1 python bench/cpc_overhead.py --clock cpu --envs suite --breakdown
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
    parser.add_argument(
        "--envs", nargs="+", default=["MiniWorld-Hallway-v0"], help="MiniWorld ids, or 'suite' for envs.SUITE + Hallway"
    )
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
    parser.add_argument("--breakdown", action="store_true", help="profile one train() with and without CPC")
    parser.add_argument("--context-network", choices=("gru", "lstm"), help="A2C/PPO's CPC context network")
    args = parser.parse_args()
    env_ids = [*envs.SUITE, "MiniWorld-Hallway-v0"] if args.envs == ["suite"] else args.envs
    print(
        f"{args.n_envs} envs (dummy vec env), {args.steps} steps per run, median of {args.repeats}, "
        f"device {args.device}, {torch.get_num_threads()} torch threads, {args.clock} clock"
    )
    print(f"| task | run | steps/s | share of time in training | {args.clock} time vs plain |")
    print("|---|---|---|---|---|")
    breakdowns = []
    for env_id in env_ids:
        breakdowns += measure_task(env_id, args)
    if breakdowns:
        print("\nWhat CPC adds to one train(), by kind of operation (self CPU ms, CPC minus plain):\n")
        kinds = list(OP_KINDS) + ["other"]
        print("| task | algo | train() plain (ms) | train() CPC (ms) | " + " | ".join(kinds) + " |")
        print("|---|---|---|---|" + "---|" * len(kinds))
        for env_id, algo, plain, cpc in breakdowns:
            extra = " | ".join(f"{cpc['by_kind'].get(k, 0) - plain['by_kind'].get(k, 0):+.0f}" for k in kinds)
            task = env_id.removeprefix("MiniWorld-")
            print(f"| {task} | {algo} | {plain['total']:.0f} | {cpc['total']:.0f} | {extra} |")
        print("\nLargest additions, by operation (self CPU ms, CPC minus plain):\n")
        for env_id, algo, plain, cpc in breakdowns:
            added = {op: ms - plain["by_op"].get(op, 0.0) for op, ms in cpc["by_op"].items()}
            top = sorted(added.items(), key=lambda item: -item[1])[:8]
            listed = ", ".join(f"{op} {ms:+.0f}" for op, ms in top)
            print(f"- {env_id.removeprefix('MiniWorld-')} {algo}: {listed}")


# Operations by kind, matched on their names, for the breakdown.
OP_KINDS = {
    "recurrent (GRU/LSTM)": ("gru", "lstm", "rnn"),
    "convolution": ("conv", "mkldnn_convolution"),
    "matrix products": ("addmm", "mm", "bmm", "matmul", "linear", "baddbmm", "einsum"),
    "copies and gathers": ("copy_", "index", "gather", "cat", "stack", "clone", "contiguous", "to_copy", "select"),
    "softmax / cross-entropy": ("softmax", "logsumexp", "nll", "cross_entropy"),
    "optimizer": ("adam", "addcdiv", "lerp", "sqrt", "_foreach"),
}


def profile_train(model) -> dict:
    """Self CPU time of one ``train()`` on a collected rollout, by :data:`OP_KINDS`."""
    from torch.profiler import ProfilerActivity, profile

    model.set_logger(configure(None, []))
    model.learn(model.n_steps * model.n_envs)  # a rollout in the buffer, kernels warm
    with profile(activities=[ProfilerActivity.CPU]) as profiler:
        model.train()
    by_kind: dict[str, float] = {}
    by_op: dict[str, float] = {}
    total = 0.0
    for event in profiler.key_averages():
        milliseconds = event.self_cpu_time_total / 1000
        total += milliseconds
        name = event.key.lower()
        kind = next((k for k, words in OP_KINDS.items() if any(word in name for word in words)), "other")
        by_kind[kind] = by_kind.get(kind, 0.0) + milliseconds
        by_op[event.key] = milliseconds
    return {"total": total, "by_kind": by_kind, "by_op": by_op}


def measure_task(env_id: str, args: argparse.Namespace) -> list:
    cpc_kwargs = {"horizon": args.horizon} if args.horizon else {}
    if args.context_network and args.algos != ["recurrent_ppo"]:
        cpc_kwargs["context_network"] = args.context_network
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    vec_env = envs.make_vec_env(env_id, args.n_envs, vec_env="dummy")
    task = env_id.removeprefix("MiniWorld-")
    breakdowns = []
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
            print(f"| {task} | {label} | {args.steps / wall:.0f} | {training:.0%} | {wall / plain:.2f} |", flush=True)
        if args.breakdown:
            breakdowns.append((env_id, algo, profile_train(builders["none"]()), profile_train(builders["cpc"]())))
    vec_env.close()
    return breakdowns


if __name__ == "__main__":
    main()
