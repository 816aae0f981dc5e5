"""The main job's speed against an earlier version of cpc-rl, in one run.

Runs ``run_agent.py train`` (the main job's agent: RecurrentPPO + CPC on Hallway, no evaluation)
from this checkout and from another one (e.g. a git worktree of an older commit), alternating,
and prints each one's training steps/s (``status.json``'s ``train_seconds``, which leaves out
start-up) and the ratio.

    git worktree add /tmp/cpc-rl-old <commit>
    python bench/main_job_speed.py --baseline /tmp/cpc-rl-old [--steps 8000 --repeats 2 --set threads=2]
    python bench/main_job_speed.py --baseline /tmp/cpc-rl-old --this-set precision=bfloat16   # an opt-in setting
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]


def steps_per_second(checkout: Path, steps: int, settings: list[str], out: Path) -> float:
    run_dir = out / f"run_{len(list(out.iterdir()))}"
    command = [sys.executable, str(checkout / "run_agent.py"), "train", "--steps", str(steps), "--no-progress"]
    command += ["--run-dir", str(run_dir), "--set", "eval_freq=0", *settings]
    subprocess.run(command, cwd=checkout, check=True, stdout=subprocess.DEVNULL)
    status = json.loads((run_dir / "status.json").read_text())
    return status["num_timesteps"] / status["train_seconds"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", type=Path, required=True, help="another cpc-rl checkout to compare with")
    parser.add_argument("--steps", type=int, default=8000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--set", nargs="*", default=[], dest="settings", help="run settings for both, e.g. threads=2")
    parser.add_argument("--this-set", nargs="*", default=[], help="run settings for this checkout only")
    args = parser.parse_args()
    if not (args.baseline / "run_agent.py").exists():
        parser.error(f"{args.baseline} is not a cpc-rl checkout (no run_agent.py)")
    checkouts = {"baseline": args.baseline.resolve(), "this checkout": HERE}
    settings = {"baseline": args.settings, "this checkout": args.settings + args.this_set}
    rates: dict[str, list[float]] = {name: [] for name in checkouts}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeats):
            for name, checkout in checkouts.items():
                rates[name].append(steps_per_second(checkout, args.steps, settings[name], Path(tmp)))
                print(f"{name}: {rates[name][-1]:.0f} steps/s", flush=True)
    base, new = statistics.median(rates["baseline"]), statistics.median(rates["this checkout"])
    print(f"| version | steps/s (median of {args.repeats}) |\n|---|---|")
    print(f"| baseline ({args.baseline}) | {base:.0f} |\n| this checkout {' '.join(args.this_set)} | {new:.0f} |")
    print(f"speed-up: {new / base:.2f}x")


if __name__ == "__main__":
    main()
