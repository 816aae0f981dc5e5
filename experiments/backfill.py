"""Give runs made before runs recorded their settings a ``settings.yaml`` and ``provenance.yaml``, reconstructed.

Each run is assigned the commit it ran (see :data:`CHECKOUTS`); that commit's code is unpacked
into a temporary folder and builds the run's agent from its ``config.yaml`` exactly as the run
did, and :func:`experiments.record.effective_settings` (today's, loaded by path) describes it.
Both files say that they were reconstructed, from which commit and how that commit was found.

    python -m experiments.backfill docs/results          # every run under the folder without settings.yaml
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from cpc_rl.experiments.files import write_yaml
from cpc_rl.experiments.record import PROVENANCE_FILE, SETTINGS_FILE

REPOSITORY = Path(__file__).resolve().parent.parent

# Where the committed runs' code came from (docs/results/study_notes.md): the study ran from a
# worktree at 6826255, moved to 7638a46 at 04:16 UTC on 2026-12-01; the pilot's later runs from a
# worktree made when its first run there started (23:48 UTC on 2026-11-30, newest commit 7e0fe2d;
# the notes say it predates the unpadded minibatches of eb22def). Runs started from the main
# checkout ran its working tree: the newest commit at their start, plus any uncommitted edits.
CHECKOUTS: dict[str, list[tuple[str, str]]] = {
    "/work/study-wt": [("", "6826255"), ("2026-12-01 04:16:00", "7638a46")],
    "/work/pilot-wt": [("", "7e0fe2d")],
}
HOW_WORKTREE = "the worktree {path} ran this commit at that time (docs/results/study_notes.md)"
HOW_MAIN = (
    "the newest commit of main when the run started; it ran from the main checkout, whose working tree may "
    "have held uncommitted edits"
)
HOW_NEXT = (
    "the first commit after the run started whose code builds the run: it ran from the main checkout, "
    "whose working tree held edits committed soon after; the newest commit before its start could not build it"
)

_DESCRIBE = r"""
import importlib.util, json, sys
from pathlib import Path
import yaml
spec = importlib.util.spec_from_file_location("cpc_rl_record_today", sys.argv[1])
record = importlib.util.module_from_spec(spec)
spec.loader.exec_module(record)
from cpc_rl import envs
from cpc_rl.agents.factory import make_agent
out, cache = {}, {}
def describe(run_dir):
    config = yaml.safe_load((Path(run_dir) / "config.yaml").read_text())
    config.setdefault("precision", "float32")
    status_path = Path(run_dir) / "status.json"
    status = json.loads(status_path.read_text()) if status_path.is_file() else {}
    from cpc_rl.agents.presets import preset
    n_envs = config.get("n_envs") or preset(config["algo"], config["aux"])["n_envs"]
    key = (config["env"], n_envs, json.dumps(config.get("env_kwargs") or {}, sort_keys=True))
    if key not in cache:
        env_kwargs = config.get("env_kwargs") or {}
        cache[key] = envs.make_vec_env(config["env"], n_envs, seed=0, vec_env="dummy", **env_kwargs)
    model = make_agent(
        config["algo"], cache[key], aux=config["aux"], seed=config["seed"], device="cpu",
        cpc_kwargs=dict(config.get("cpc_kwargs") or {}) or None, **(config.get("hyperparams") or {}),
    )
    setup = {"threads": status.get("threads", config.get("threads"))}
    setup["vec_env"] = status.get("vec_env", config["vec_env"])
    return record.effective_settings(config, model, cache[key], setup)
for run_dir in json.loads(sys.argv[2]):
    try:
        out[run_dir] = describe(run_dir)
    except Exception as error:  # this commit cannot build the run: the caller tries the next one
        out[run_dir] = {"error": f"{type(error).__name__}: {error}"[:300]}
print(json.dumps(out))
"""


def _git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(REPOSITORY), *args], capture_output=True, text=True, check=True).stdout


def commands(run_dir: Path) -> list[tuple[str, list[str]]]:
    """Time (``YYYY-MM-DD HH:MM:SS``, UTC) and words of each start or resume in ``command.txt``."""
    found = []
    for line in (run_dir / "command.txt").read_text().splitlines():
        date, time, *command = line.split(" ")
        found.append((f"{date} {time}", command))
    return found


def commit_of(run_dir: Path) -> tuple[str, str]:
    """The full commit a run started with, and how that is known."""
    return commit_at(*commands(run_dir)[0])


def commit_at(started: str, command: list[str]) -> tuple[str, str]:
    """The full commit of a command run at ``started``, and how that is known."""
    script = next((word for word in command if word.endswith("run_agent.py")), "")
    checkout = str(Path(script).parent) if script.startswith("/") else ""
    if checkout in CHECKOUTS:
        commit = [commit for since, commit in CHECKOUTS[checkout] if since <= started][-1]
        how = HOW_WORKTREE.format(path=checkout)
    else:
        commit = _git("rev-list", "-1", f"--before={started} +0000", "HEAD").strip()
        how = HOW_MAIN
    return _git("rev-parse", commit).strip(), how


def describe_with(commit: str, run_dirs: list[Path]) -> dict[str, Any]:
    """Effective settings of ``run_dirs``, built by the code of ``commit``."""
    with tempfile.TemporaryDirectory(prefix=f"cpc-backfill-{commit[:7]}-") as folder:
        archive = subprocess.run(["git", "-C", str(REPOSITORY), "archive", commit], capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", folder], input=archive.stdout, check=True)
        environ = {**os.environ, "PYTHONPATH": folder, "OMP_NUM_THREADS": "1"}
        record_path = str(REPOSITORY / "experiments" / "record.py")
        names = json.dumps([str(path.resolve()) for path in run_dirs])
        result = subprocess.run(
            [sys.executable, "-c", _DESCRIBE, record_path, names],
            cwd=folder,
            env=environ,
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            raise RuntimeError(f"describing runs with {commit[:7]} failed:\n{result.stderr[-3000:]}")
        return json.loads(result.stdout.strip().splitlines()[-1])


def backfill(root: Path) -> list[Path]:
    """Write reconstructed settings and provenance for every run under ``root`` that has no ``settings.yaml``."""
    todo = sorted(path.parent for path in Path(root).glob("**/runs/*/*/seed_*/config.yaml"))
    todo = [run_dir for run_dir in todo if not (run_dir / SETTINGS_FILE).exists()]
    by_commit: dict[tuple[str, str], list[Path]] = {}
    for run_dir in todo:
        by_commit.setdefault(commit_of(run_dir), []).append(run_dir)
    today = datetime.date.today().isoformat()
    while by_commit:
        (commit, how), run_dirs = by_commit.popitem()
        print(f"{commit[:7]}: {len(run_dirs)} runs", flush=True)
        described = describe_with(commit, run_dirs)
        for run_dir in run_dirs:
            settings = described[str(run_dir.resolve())]
            if "error" in settings:
                # Run from the main checkout with edits committed later (a task added that day): the
                # next commit holds them.
                later = _git("rev-list", "--reverse", "--ancestry-path", f"{commit}..HEAD").split()
                if not later or how.startswith("the worktree"):
                    raise RuntimeError(f"no commit builds {run_dir}: {settings['error']}")
                retry = (later[0], f"{HOW_NEXT} ({settings['error'][:120]})")
                by_commit.setdefault(retry, []).append(run_dir)
                continue
            note = {"from_commit": commit, "how_the_commit_is_known": how, "date": today}
            write_yaml(run_dir / SETTINGS_FILE, {"reconstructed": note, **settings})
            segments = []
            for started, command in commands(run_dir):
                ran, known = commit_at(started, command)
                segments.append(
                    {
                        "started": started.replace(" ", "T") + "+00:00",
                        "code": {"commit": ran, "how_the_commit_is_known": known},
                        "packages": "not recorded (the run predates provenance.yaml)",
                        "machine": "not recorded: a 2-core x86_64 CPU machine without GPU (docs/results/rl_study.md)",
                        "command": command,
                    }
                )
            write_yaml(run_dir / PROVENANCE_FILE, {"reconstructed": note, "segments": segments})
    return todo


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", type=Path, help="a folder of comparisons (e.g. docs/results)")
    done = backfill(parser.parse_args().root)
    print(f"reconstructed {len(done)} runs")


if __name__ == "__main__":
    main()
