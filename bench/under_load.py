"""Training on a busy machine: the same short run alone and beside two busy loops, in one run.

Runs ``run_agent.py train`` (RecurrentPPO + CPC on Hallway, no evaluation) alone, then again
while two Python busy loops (started here) compete for the cores, and prints the ratios of wall
time and of the run's CPU time (its process tree's user + system). A fair share of the cores
costs ~2x wall time and no extra CPU; oversubscribed threads cost far more of both. The thread
count is the run's own choice (``threads``/``OMP_NUM_THREADS``, else the free cores): pass
``--threads N`` to compare a fixed count.

    python bench/under_load.py [--steps 4000 --threads N]
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def timed_run(steps: int, threads: int | None) -> tuple[float, float]:
    """Wall seconds and CPU seconds (user + system, the run and its workers) of one training run."""
    with tempfile.TemporaryDirectory() as folder:
        command = [sys.executable, str(REPO / "run_agent.py"), "train", "--env", "MiniWorld-Hallway-v0"]
        command += ["--steps", str(steps), "--run-dir", str(Path(folder) / "run"), "--no-progress", "--set"]
        command += ["eval_freq=0", "save_freq=0", "eval_episodes=1"] + ([f"threads={threads}"] if threads else [])
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        environ = {key: value for key, value in os.environ.items() if key != "OMP_NUM_THREADS"}
        subprocess.run(command, check=True, capture_output=True, env=environ)
        wall = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=4000)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    alone = timed_run(args.steps, args.threads)
    loops = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    try:
        time.sleep(65)  # let the 1-minute load average see the loops, as a run started on a busy machine would
        loaded = timed_run(args.steps, args.threads)
    finally:
        for loop in loops:
            loop.kill()
    print(f"train, {args.steps} steps, threads {args.threads or 'auto'}, {os.cpu_count()} cores")
    print("| | wall (s) | CPU (s) |")
    print("|---|---|---|")
    print(f"| alone | {alone[0]:.1f} | {alone[1]:.1f} |")
    print(f"| beside two busy loops | {loaded[0]:.1f} | {loaded[1]:.1f} |")
    print(f"| ratio | {loaded[0] / alone[0]:.2f} | {loaded[1] / alone[1]:.2f} |")


if __name__ == "__main__":
    main()
