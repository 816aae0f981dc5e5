"""Bring a study's finished runs from the worktree that ran them into this checkout's results/.

    python results/collect.py ../study-wt results/ppo/pilot   # then: python run_agent.py report results/ppo/pilot

Copies each run whose ``status.json`` says ``finished`` and that is not here yet, leaves out what is
never committed (models, checkpoints, TensorBoard events, per-run curves), and makes the paths that
runs of older code recorded (interpreter, worktree, run folder) relative to the folder they ran from.
Not part of the installed package: it serves this repository's studies.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
from pathlib import Path

LEFT_OUT = ("checkpoints", "model.zip", "learning_curve.png", "events.out.tfevents.*", "*.lock")
RECORDS = {".txt", ".yaml", ".json"}
# The machine paths that code before portable commands wrote into command.txt and provenance.yaml.
MACHINE_PATHS = [
    (re.compile(r"/root/\.pyenv/versions/[\d.]+/bin/python3?"), "python"),
    (re.compile(r"/work/[\w.-]+/run_agent\.py"), "run_agent.py"),
    (re.compile(r"/work/runs/[\w.-]+/[\w.-]+/(checkpoints/)"), r"\1"),
    (re.compile(r"the worktree /work/([\w.-]+) ran"), r"the worktree \1 ran"),
    (re.compile(r"/work/[\w.-]+/"), ""),
]


def relative_records(run_dir: Path) -> None:
    """Rewrite the machine paths in a run folder's records as paths relative to where it ran."""
    for path in run_dir.iterdir():
        if path.suffix in RECORDS and path.is_file():
            text = path.read_text()
            for pattern, replacement in MACHINE_PATHS:
                text = pattern.sub(replacement, text)
            path.write_text(text)


def collect(worktree: Path, study: Path) -> list[Path]:
    """
    Copy the finished runs of ``worktree / study`` that ``study`` lacks.

    :param worktree: the checkout the study runs from (frozen at its PLAN.md's commit).
    :param study: the study's folder relative to a checkout, e.g. ``results/ppo/pilot``.
    :return: the run folders copied.
    """
    copied = []
    for status in sorted((worktree / study / "runs").glob("*/*/seed_*/status.json")):
        source = status.parent
        target = study / source.relative_to(worktree / study)
        if json.loads(status.read_text()).get("state") != "finished" or (target / "status.json").exists():
            continue
        shutil.copytree(source, target, ignore=shutil.ignore_patterns(*LEFT_OUT))
        relative_records(target)
        copied.append(target)
    return copied


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("worktree", type=Path)
    parser.add_argument("study", type=Path, help="relative to the checkout, e.g. results/ppo/pilot")
    args = parser.parse_args()
    copied = collect(args.worktree, args.study)
    print(f"{len(copied)} finished runs copied into {args.study}")


if __name__ == "__main__":
    main()
