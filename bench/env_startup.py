"""The cost of a process's first MiniWorld env: textures converted by pyglet's regex or by numpy.

Each case runs in a fresh process (textures are cached per process) and measures the CPU time
of ``envs.make_env`` plus one reset, the start-up every training run, env worker, evaluation
process and test pays. ``pyglet`` restores pyglet's own conversion before the env is made.

    python bench/env_startup.py [--envs MiniWorld-Hallway-v0 MiniWorld-SignMemory-v0 --repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time


def first_env_seconds(env_id: str, converter: str) -> float:
    from cpc_rl import envs
    from cpc_rl.envs.rendering import import_miniworld

    import_miniworld()
    if converter == "pyglet":
        from pyglet.image import ImageData

        ImageData._convert = ImageData._pyglet_convert
    start = time.process_time()
    env = envs.make_env(env_id)
    env.reset(seed=0)
    seconds = time.process_time() - start
    env.close()
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envs", nargs="+", default=["MiniWorld-Hallway-v0", "MiniWorld-SignMemory-v0"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--case", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        print(json.dumps(first_env_seconds(*args.case)))
        return
    print(f"CPU seconds to the first reset of a fresh process, median of {args.repeats}")
    print("| env | pyglet's conversion (s) | numpy's (s) | ratio |")
    print("|---|---|---|---|")
    for env_id in args.envs:
        seconds: dict[str, list[float]] = {"pyglet": [], "numpy": []}
        for _ in range(args.repeats):
            for converter in seconds:
                command = [sys.executable, __file__, "--case", env_id, converter]
                output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
                seconds[converter].append(json.loads(output.strip().splitlines()[-1]))
        slow, fast = statistics.median(seconds["pyglet"]), statistics.median(seconds["numpy"])
        print(f"| {env_id} | {slow:.2f} | {fast:.2f} | {slow / fast:.1f}x |", flush=True)


if __name__ == "__main__":
    main()
