"""MiniWorld steps per second: raw env, make_env, and make_vec_env with 1, 2 and n_cpu processes.

Prints the wrapper overhead (make_env against the raw env, measured in the same run), the
scaling efficiency of the vector envs (vectorised steps/s over n times one process's steps/s)
and the effect of ``LP_NUM_THREADS=0`` (llvmpipe's render threads) on one process. Each case
runs in a fresh process, alternating, and the median of the repeats is reported.

    python bench/env_throughput.py [--env MiniWorld-Hallway-v0 --steps 2000 --repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time


def random_steps_per_second(env, steps: int) -> float:
    """Steps/s of ``steps`` random actions on a single env, resetting at episode ends."""
    import numpy as np

    env.reset(seed=0)
    actions = np.random.default_rng(0).integers(0, env.action_space.n, steps)
    start = time.perf_counter()
    for action in actions:
        if any(env.step(action)[2:4]):
            env.reset()
    return steps / (time.perf_counter() - start)


def measure(case: str, env_id: str, steps: int) -> float:
    import numpy as np

    if case in {"raw", "raw, llvmpipe threads"}:
        os.environ["PYGLET_HEADLESS"] = "true"
        import contextlib
        import io

        import gymnasium as gym

        with contextlib.redirect_stdout(io.StringIO()):
            import miniworld  # noqa: F401

            return random_steps_per_second(gym.make(env_id), steps)
    from cpc_rl import envs

    if case == "make_env":
        return random_steps_per_second(envs.make_env(env_id, seed=0), steps)
    n_envs = int(case.split("=")[1])
    vec = envs.make_vec_env(env_id, n_envs, seed=0)
    vec.reset()
    rng = np.random.default_rng(0)
    rounds = max(steps // n_envs, 1)
    for _ in range(20):  # warm up the workers
        vec.step(rng.integers(0, vec.action_space.n, n_envs))
    start = time.perf_counter()
    for _ in range(rounds):
        vec.step(rng.integers(0, vec.action_space.n, n_envs))
    elapsed = time.perf_counter() - start
    vec.close()
    return rounds * n_envs / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="MiniWorld-Hallway-v0")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        print(json.dumps(measure(args.case, args.env, args.steps)))
        return
    n_cpu = os.cpu_count() or 1
    cases = ["raw", "raw, llvmpipe threads", "make_env"] + [f"vec n={n}" for n in sorted({1, 2, n_cpu})]
    results: dict[str, list[float]] = {case: [] for case in cases}
    for _ in range(args.repeats):
        for case in cases:
            environ = dict(os.environ)
            environ.pop("LP_NUM_THREADS", None)
            if case != "raw, llvmpipe threads":
                environ["LP_NUM_THREADS"] = "0"
            command = [sys.executable, __file__, "--case", case, "--env", args.env, "--steps", str(args.steps)]
            output = subprocess.run(command, check=True, capture_output=True, text=True, env=environ).stdout
            results[case].append(json.loads(output.strip().splitlines()[-1]))
    rate = {case: statistics.median(values) for case, values in results.items()}
    print(f"{args.env}, {args.steps} random-action steps per case, median of {args.repeats}, {n_cpu} CPUs")
    print("| case | steps/s | note |")
    print("|---|---|---|")
    print(f"| raw gym.make, LP_NUM_THREADS=0 | {rate['raw']:.0f} | |")
    threads_gain = rate["raw"] / rate["raw, llvmpipe threads"] - 1
    print(
        f"| raw gym.make, llvmpipe threads | {rate['raw, llvmpipe threads']:.0f} | "
        f"LP_NUM_THREADS=0 is {threads_gain:+.0%} |"
    )
    overhead = 1 - rate["make_env"] / rate["raw"]
    print(f"| envs.make_env | {rate['make_env']:.0f} | wrapper overhead {overhead:.1%} |")
    one = rate["vec n=1"]
    for n in sorted({1, 2, n_cpu}):
        efficiency = rate[f"vec n={n}"] / (n * rate["make_env"])
        print(
            f"| make_vec_env subproc n={n} | {rate[f'vec n={n}']:.0f} | scaling efficiency {efficiency:.2f} "
            f"(vs one in-process env), {rate[f'vec n={n}'] / one:.2f}x vec n=1 |"
        )


if __name__ == "__main__":
    main()
