"""Memory over a long run: RSS of the training process (and of its env workers) per update, and the slope.

Trains the main job's agent (RecurrentPPO + CPC, presets) for ``--updates`` updates, evaluating
every ``--eval-every`` updates as a run does, and prints RSS after each update and the growth
per 100 updates of a line fitted to the second half (the first updates allocate for good).

    python bench/memory.py [--env MiniWorld-Hallway-v0 --updates 60 --eval-every 10 --vec-env subproc]
    python bench/memory.py --minutes 60     # the 1-hour run: stops after an hour, whatever the update count
"""

from __future__ import annotations

import argparse
import gc
import os
import resource
import sys
import time

import numpy as np
import psutil
import torch
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import configure

from cpc_rl import envs
from cpc_rl.agents import make_agent
from cpc_rl.experiments.config import RunConfig, learner_threads
from cpc_rl.experiments.runs import run_episodes
from cpc_rl.experiments.safety import ActingThreads, ReleaseFreedMemory, heap_breakdown

MB = 1024**2


class _RssPerUpdate(BaseCallback):
    def __init__(self, config: RunConfig, eval_every: int, minutes: float | None = None) -> None:
        super().__init__()
        self.config, self.eval_every = config, eval_every
        self.main: list[float] = []
        self.workers: list[float] = []
        self.hours: list[float] = []
        self.breakdown: list[dict[str, float]] = []
        self.updates = 0
        self.episodes = 0
        self.page_faults: list[int] = []
        self.start = time.monotonic()
        self.deadline = self.start + minutes * 60 if minutes else float("inf")

    def _on_rollout_start(self) -> None:
        process = psutil.Process()
        self.main.append(process.memory_info().rss / MB)
        children = process.children(recursive=True)
        self.workers.append(max((child.memory_info().rss / MB for child in children), default=0.0))
        self.hours.append((time.monotonic() - self.start) / 3600)
        self.updates += 1
        self.page_faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt)
        # Where the memory sits tells a leak (in use, Python objects) from fragmentation (free but kept).
        heap = heap_breakdown() or {}
        heap["python_objects_k"] = len(gc.get_objects()) / 1000
        self.breakdown.append(heap)
        if self.updates % 25 == 0:
            print(
                f"update {self.updates} at {self.hours[-1] * 60:.1f} min: trainer {self.main[-1]:.0f} MB, "
                f"worker {self.workers[-1]:.0f} MB, " + ", ".join(f"{k} {v:.1f}" for k, v in heap.items()),
                flush=True,
            )
        if self.eval_every and self.updates % self.eval_every == 0:
            run_episodes(self.model, self.config, 5, seed=self.updates)

    def _on_step(self) -> bool:
        self.episodes += int(self.locals["dones"].sum())
        return time.monotonic() < self.deadline


def slope_per_100(values: list[float]) -> float:
    half = np.array(values[len(values) // 2 :])
    if len(half) < 2:
        return float("nan")
    return float(np.polyfit(np.arange(len(half)), half, 1)[0] * 100)


def slope_per_hour(values: list[float], hours: list[float]) -> float:
    half = len(values) // 2
    if len(values) - half < 2:
        return float("nan")
    return float(np.polyfit(hours[half:], values[half:], 1)[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="MiniWorld-Hallway-v0")
    parser.add_argument("--algo", default="recurrent_ppo")
    parser.add_argument("--updates", type=int, default=60)
    parser.add_argument("--minutes", type=float, default=None, help="stop after this wall time, not --updates")
    parser.add_argument("--eval-every", type=int, default=10)
    parser.add_argument("--vec-env", default="subproc", choices=("subproc", "dummy"))
    parser.add_argument("--no-trim", action="store_true", help="without ReleaseFreedMemory, as before the fix")
    parser.add_argument("--budget-mb", type=float, default=64, help="growth allowed before a trim (MB)")
    parser.add_argument("--onednn-cache", default="64", help="oneDNN's primitive cache (runs: 64; its own: 1024)")
    args = parser.parse_args()
    os.environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] = args.onednn_cache  # read at oneDNN's first primitive
    config = RunConfig(env=args.env, algo=args.algo, eval_episodes=5)
    # Threads as a run picks them: two intra-op threads on a busy machine made updates ~4x slower.
    threads = learner_threads(config)
    torch.set_num_threads(threads)
    vec = envs.make_vec_env(args.env, config.num_envs, vec_env=args.vec_env)
    model = make_agent(args.algo, vec, aux="cpc", seed=0)
    model.set_logger(configure(None, []))
    probe = _RssPerUpdate(config, args.eval_every, args.minutes)
    updates = 10**9 if args.minutes else args.updates
    start = time.perf_counter()
    # Before the probe reads RSS: a run may trim at the start of each rollout.
    release = [] if args.no_trim else [ReleaseFreedMemory(args.budget_mb)]
    callbacks = [ActingThreads(threads), *release, probe]
    model.learn(updates * model.n_steps * model.n_envs, callback=callbacks)
    vec.close()
    release_note = f"ReleaseFreedMemory({args.budget_mb:g} MB, {release[0].trims} trims)" if release else "no trims"
    print(
        f"{args.env}, {args.algo} + CPC, {probe.updates} updates ({model.num_timesteps} steps, "
        f"{probe.episodes} episodes, {time.perf_counter() - start:.0f} s), evaluation every {args.eval_every} "
        f"updates, {args.vec_env} envs, {release_note}, oneDNN primitive cache "
        f"{os.environ['ONEDNN_PRIMITIVE_CACHE_CAPACITY']}, {threads} learner threads"
    )
    faults = np.diff(probe.page_faults[len(probe.page_faults) // 2 :])
    # Each minor fault maps and zeroes a 4 KiB page: memory given back and then used again.
    print(f"trainer's minor page faults per update, 2nd half: median {np.median(faults):.0f}")
    print(
        "| process | RSS after update 1 (MB) | RSS at the end (MB) | growth per 100 updates, 2nd half (MB) "
        "| growth per hour, 2nd half (MB) |"
    )
    print("|---|---|---|---|---|")
    rows = [("trainer", probe.main)] + ([("largest env worker", probe.workers)] if any(probe.workers) else [])
    for name, values in rows:
        print(
            f"| {name} | {values[0]:.0f} | {values[-1]:.0f} | {slope_per_100(values):+.1f} "
            f"| {slope_per_hour(values, probe.hours):+.1f} |"
        )
    for key in probe.breakdown[0]:
        values = [row[key] for row in probe.breakdown]
        print(
            f"| {key} | {values[0]:.1f} | {values[-1]:.1f} | {slope_per_100(values):+.1f} "
            f"| {slope_per_hour(values, probe.hours):+.1f} |"
        )
    print("RSS per update:", " ".join(f"{value:.0f}" for value in probe.main))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
