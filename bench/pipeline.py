"""The whole training loop against its own limits, per preset, in one run.

For each algorithm (the presets, with CPC) on the same vec env: env-only steps/s (random
actions), learner-only steps/s (``train()`` on one fixed rollout, repeated), and end-to-end
steps/s (``learn``). A synchronous collect-then-train loop can at best reach
``1 / (1/env + 1/learner)``; the pipeline efficiency is end-to-end over that bound (what is
left is the policy's per-step inference and the loop's own overhead).

    python bench/pipeline.py [--env MiniWorld-Hallway-v0 --steps 4000 --algos recurrent_ppo ppo a2c --vec-env auto]
    python bench/pipeline.py --algos recurrent_ppo --precisions float32 bfloat16   # the opt-in bfloat16 encoder
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from stable_baselines3.common.logger import configure

from cpc_rl import envs
from cpc_rl.agents import make_agent
from cpc_rl.experiments.config import RunConfig, chosen_vec_env, learner_threads
from cpc_rl.experiments.safety import ActingThreads, ReleaseFreedMemory, keep_freed_memory_mapped


def env_only(vec, steps: int) -> float:
    vec.reset()
    actions = np.stack([vec.action_space.sample() for _ in range(vec.num_envs)])
    start = time.perf_counter()
    for _ in range(steps // vec.num_envs):
        vec.step(actions)
    return steps / (time.perf_counter() - start)


def learner_only(model, repeats: int) -> float:
    model.learn(model.n_steps * model.n_envs)  # one rollout in the buffer (and one update as warm-up)
    start = time.perf_counter()
    for _ in range(repeats):
        model.train()
    return repeats * model.n_steps * model.n_envs / (time.perf_counter() - start)


def end_to_end(model, steps: int) -> float:
    start = time.perf_counter()
    # As a run does: one thread while acting, the learner's while training; memory kept mapped.
    callbacks = [ActingThreads(torch.get_num_threads()), ReleaseFreedMemory()]
    model.learn(steps, reset_num_timesteps=False, callback=callbacks)
    return steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="MiniWorld-Hallway-v0")
    parser.add_argument("--steps", type=int, default=4000)
    parser.add_argument("--repeats", type=int, default=5, help="train() calls for the learner-only rate")
    parser.add_argument("--algos", nargs="+", default=["recurrent_ppo", "ppo", "a2c"])
    parser.add_argument("--precisions", nargs="+", default=["float32"], choices=("float32", "bfloat16"))
    parser.add_argument("--vec-env", default="auto", choices=("auto", "subproc", "dummy"), help="auto: as runs choose")
    args = parser.parse_args()
    torch.set_num_threads(learner_threads(RunConfig()))
    keep_freed_memory_mapped()  # as runs do: the learner reuses its memory without page faults
    print(
        f"{args.env}, presets with CPC, {args.vec_env} vec env ({chosen_vec_env(RunConfig(vec_env=args.vec_env))} "
        f"for the main job's 4 envs), {args.steps} steps, "
        f"{torch.get_num_threads()} torch threads"
    )
    print(
        "| algo | precision | env only (steps/s) | learner only (steps/s) | bound 1/(1/env+1/learner) "
        "| end to end | efficiency |"
    )
    print("|---|---|---|---|---|---|---|")
    for algo, precision in ((algo, precision) for algo in args.algos for precision in args.precisions):
        config = RunConfig(algo=algo, vec_env=args.vec_env)
        vec = envs.make_vec_env(args.env, config.num_envs, vec_env=chosen_vec_env(config))
        model = make_agent(algo, vec, aux="cpc", seed=0, precision=precision)
        model.set_logger(configure(None, []))
        env_rate = env_only(vec, args.steps)
        learner_rate = learner_only(model, args.repeats)
        total = end_to_end(model, args.steps)
        bound = 1 / (1 / env_rate + 1 / learner_rate)
        print(
            f"| {algo} | {precision} | {env_rate:.0f} | {learner_rate:.0f} | {bound:.0f} | {total:.0f} "
            f"| {total / bound:.2f} |",
            flush=True,
        )
        vec.close()


if __name__ == "__main__":
    main()
