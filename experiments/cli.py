#!/usr/bin/env python
"""Train, evaluate and compare MiniWorld and ViZDoom agents with and without the CPC auxiliary loss.

    python run_agent.py                       # the main job: a short CPC training run
    python run_agent.py train --env MiniWorld-FourRooms-v0 --algo ppo --aux cpc --steps 200000
    python run_agent.py train --resume runs/DIR
    python run_agent.py eval runs/DIR --episodes 20 --video agent.gif
    python run_agent.py compare --env MiniWorld-SignMemory-v0 --arm none --arm control --arm cpc --steps 75000 --seeds 5
    python run_agent.py report runs/compare         # rebuild a comparison's report from its folder
    python run_agent.py probe runs/DIR                # linear probes of the agent's z_t and c_t
    python run_agent.py representation               # the paper's protocol -> docs/results/representation.md

Mistakes (an unknown env, a missing run directory, a corrupt checkpoint) print one line on
stderr and exit with code 2.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import NoReturn

# oneDNN caches a compiled primitive for every shape it meets, up to 1024 of them. The LSTM's
# sequence shapes change with the episode starts in each minibatch, so the cache kept filling and a
# run's memory grew for hours (bench/memory.py). oneDNN reads it at its first primitive.
os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "64")

from cpc_rl.agents.presets import ALGORITHMS, AUX_CHOICES
from cpc_rl.experiments.config import DEFAULT_ENV, PROBE_POLICIES, RunConfig, RunError, RunFailed, RunInterrupted

MAIN_JOB_STEPS = 60_000


class _Parser(argparse.ArgumentParser):
    """argparse, but its errors are one line on stderr."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _add_overrides_flag(parser: argparse.ArgumentParser, help_text: str) -> None:
    parser.add_argument(
        "--set",
        "--hyperparams",
        dest="overrides",
        action="append",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help=help_text,
    )


def _add_train_flags(parser: argparse.ArgumentParser) -> None:
    # Names follow the RL Baselines3 Zoo where they overlap (--env, --algo, -n, --seed, ...).
    # None marks a flag not given (a --like run refuses the ones that would change the agent).
    parser.add_argument("--env", default=None, help=f"MiniWorld or ViZDoom id (default {DEFAULT_ENV})")
    parser.add_argument("--algo", default=None, choices=ALGORITHMS, help="default recurrent_ppo")
    parser.add_argument("--aux", default=None, choices=AUX_CHOICES, help="auxiliary loss (cpca: action-conditioned)")
    parser.add_argument("--steps", "-n", "--n-timesteps", dest="steps", type=int, default=None, help="total env steps")
    parser.add_argument("--seed", type=int, default=None, help="default 0")
    parser.add_argument("--n-envs", type=int, default=None, help="parallel envs (default: the preset's)")
    parser.add_argument("--device", default="auto", help="torch device: auto, cpu, cuda, cuda:1, ...")
    parser.add_argument(
        "--run-dir",
        "-f",
        "--log-folder",
        dest="run_dir",
        type=Path,
        default=None,
        help="where the run writes (default runs/ENV-ALGO-AUX-sSEED-TIME)",
    )
    _add_overrides_flag(
        parser,
        "override a setting: n_steps=128, cpc.horizon=20, env.max_episode_steps=300, "
        "policy.lstm_hidden_size=128, eval_freq=5000 (values are Python literals)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", parser_class=_Parser)

    train = commands.add_parser("train", help="train one agent")
    _add_train_flags(train)
    train.add_argument(
        "--resume",
        type=Path,
        default=None,
        metavar="RUN_DIR",
        help="continue the run in RUN_DIR from its last checkpoint",
    )
    train.add_argument(
        "--like",
        type=Path,
        default=None,
        metavar="RUN_DIR",
        help="a new run with the settings recorded in RUN_DIR/settings.yaml, whatever today's presets say "
        "(--seed, --steps, --run-dir, --device and run settings such as --set threads=1 may change)",
    )

    evaluate = commands.add_parser("eval", help="evaluate a trained run")
    evaluate.add_argument("run_dir", type=Path)
    evaluate.add_argument("--episodes", type=int, default=20)
    evaluate.add_argument(
        "--video",
        nargs="?",
        const="",
        default=None,
        metavar="PATH",
        help="write the first-person view (.gif or .mp4); without PATH: RUN_DIR/eval.gif",
    )

    compare = commands.add_parser(
        "compare", help="train arms (with/without CPC, a control) over seeds and envs, report"
    )
    compare.add_argument(
        "--env",
        dest="envs",
        action="append",
        required=True,
        metavar="ID[:STEPS]",
        help="MiniWorld or ViZDoom id, with its own step budget after a colon (repeatable)",
    )
    compare.add_argument(
        "--arm",
        dest="arms",
        action="append",
        default=None,
        metavar="KIND[:key=value,...]",
        help="an arm: none, control (CPC head with coef=0), cpc, cpca, with CPC settings, e.g. cpc:coef=0.1,horizon=8 "
        "(repeatable; default: none, control, cpc)",
    )
    compare.add_argument("--baseline", default=None, help="the arm every other is compared to (default: none)")
    compare.add_argument("--seeds", type=int, default=3, help="seeds per arm and env")
    compare.add_argument("--first-seed", type=int, default=0, help="seeds are first-seed .. first-seed+seeds-1")
    compare.add_argument(
        "--steps", "-n", "--n-timesteps", dest="steps", type=int, default=None, help="env steps per run"
    )
    compare.add_argument("--algo", default="recurrent_ppo", choices=ALGORITHMS)
    compare.add_argument("--workers", type=int, default=1, help="runs at a time")
    compare.add_argument("--backend", default="local", choices=("local", "ray"))
    compare.add_argument("--n-envs", type=int, default=None, help="envs per run (default: the preset's)")
    compare.add_argument("--device", default="auto")
    compare.add_argument("--out", type=Path, default=Path("runs/compare"), help="runs and report folder")
    compare.add_argument("--title", default=None, help="title of the report")
    compare.add_argument(
        "--probe",
        type=int,
        nargs="?",
        const=50,
        default=0,
        metavar="EPISODES",
        help="probe each run's z_t and c_t right after it trains (default 50 episodes), on memory tasks also "
        "on an exploring policy (probe --policy explore): models are not committed, so a study that spans "
        "machines keeps its probes",
    )
    _add_overrides_flag(
        compare, "settings for every run (as for train; default: one evaluation of 20 episodes at the end)"
    )
    compare.add_argument(
        "--no-progress", action="store_true", help="no bar of runs (terminal) or line per finished run (log)"
    )

    report = commands.add_parser("report", help="rebuild a comparison's report from its folder (finished runs only)")
    report.add_argument("out", type=Path, help="the comparison folder (holds runs/)")
    report.add_argument("--baseline", default=None)
    report.add_argument("--title", default=None)

    probe = commands.add_parser(
        "probe",
        help="linear probes of a trained agent's z_t and c_t; given a comparison folder, of each finished run",
    )
    probe.add_argument("run_dir", type=Path, help="a run, or a comparison folder (one holding runs/)")
    probe.add_argument("--episodes", type=int, default=50, help="at least this many episodes...")
    probe.add_argument("--min-steps", type=int, default=2000, help="...and at least this many steps")
    probe.add_argument("--again", action="store_true", help="in a comparison folder, probe runs already probed too")
    probe.add_argument(
        "--policy",
        choices=PROBE_POLICIES,
        default="agent",
        help="whose steps: the agent's own (probe/probe.*) or an exploring policy blind to the task "
        "(probe/explore.*: on memory tasks z_t then knows the cue only while it is in view)",
    )

    representation = commands.add_parser(
        "representation", help="the CPC paper's protocol on MiniWorld: CPC vs random/CPC|A/supervised, probed"
    )
    representation.add_argument(
        "--out",
        type=Path,
        default=Path("runs/representation"),
        help="folder of the document (default runs/representation)",
    )
    representation.add_argument("--seeds", type=int, default=None, help="seeds of the main comparison")
    representation.add_argument("--train-steps", type=int, default=None)
    representation.add_argument(
        "--task", dest="tasks", action="append", default=None, help="MiniWorld or ViZDoom id (repeatable)"
    )
    representation.add_argument("--no-progress", action="store_true")
    return parser


def _flatten(groups: list[list[str]]) -> list[str]:
    return [item for group in groups for item in group]


def _default_run_dir(config: RunConfig) -> Path:
    name = config.env.removeprefix("MiniWorld-")
    return Path("runs") / f"{name}-{config.algo}-{config.aux}-s{config.seed}-{time.strftime('%Y%m%d-%H%M%S')}"


def _progress_seconds() -> float:
    """Seconds between progress lines when stdout is not a terminal (CPC_RL_PROGRESS_SECONDS, default 30)."""
    text = os.environ.get("CPC_RL_PROGRESS_SECONDS", "30")
    try:
        return max(float(text), 0.0)
    except ValueError:
        raise RunError(f"CPC_RL_PROGRESS_SECONDS must be a number of seconds; got {text!r}") from None


def _return_text(result: dict) -> str:
    """Mean return with its 95% CI, or a note when one episode gives no interval."""
    if result["episodes"] < 2:
        return f"return {result['mean_return']:.3f} (one episode: no CI)"
    return f"return {result['mean_return']:.3f} ± {result['return_ci95']:.3f} (95% CI)"


def command_train(args: argparse.Namespace) -> int:
    from cpc_rl.experiments.config import apply_overrides
    from cpc_rl.experiments.runs import read_status, resume_config, train, validate

    if args.resume is not None and args.like is not None:
        raise RunError("--resume continues a run and --like starts a new one: give one of them")
    if args.resume is not None:
        if not args.resume.is_dir():
            raise RunError(f"run directory {args.resume} does not exist")
        config, run_dir, resume = resume_config(args.resume), args.resume, True
    elif args.like is not None:
        config, resume = _like_config(args), False
        run_dir = args.run_dir or _default_run_dir(config)
    else:
        config = RunConfig(
            env=args.env or DEFAULT_ENV,
            algo=args.algo or "recurrent_ppo",
            aux=args.aux or "cpc",
            seed=args.seed or 0,
            n_envs=args.n_envs,
            device=args.device,
        )
        if args.steps is not None:
            config.steps = args.steps
        config = apply_overrides(config, _flatten(args.overrides))
        run_dir, resume = args.run_dir or _default_run_dir(config), False
    every = _progress_seconds()
    validate(config)
    where = f"resuming at {read_status(run_dir).get('num_timesteps', 0)} of" if resume else "for"
    print(
        f"training {config.algo} aux={config.aux} on {config.env} {where} {config.steps} steps -> {run_dir}", flush=True
    )
    result = train(
        config, run_dir, progress=not args.no_progress, resume=resume, validated=True, progress_seconds=every
    )
    print(
        f"done: {result['num_timesteps']} steps; final evaluation over {result['episodes']} episodes: "
        f"{_return_text(result)}, success rate "
        f"{result['success_rate']:.0%} [{result['success_low']:.0%}, {result['success_high']:.0%}]\n"
        f"results in {run_dir}: learning_curve.png, evaluations.csv, model.zip, logs/ (TensorBoard)"
    )
    return 0


def _like_config(args: argparse.Namespace) -> RunConfig:
    """The config of ``train --like RUN_DIR``: the recorded settings, with the seed, budget and run settings given."""
    from cpc_rl.experiments.config import RUN_SETTINGS, apply_overrides
    from cpc_rl.experiments.runs import like_config

    fixed = {"--env": args.env, "--algo": args.algo, "--aux": args.aux, "--n-envs": args.n_envs}
    given = [flag for flag, value in fixed.items() if value is not None]
    if given:
        raise RunError(f"--like takes the agent from {args.like}/settings.yaml; drop {', '.join(given)}")
    overrides = _flatten(args.overrides)
    agent_keys = [text.partition("=")[0].strip() for text in overrides]
    agent_keys = [key for key in agent_keys if key not in RUN_SETTINGS]
    if agent_keys:
        raise RunError(
            f"--like replays the recorded agent; --set {', '.join(agent_keys)} would change it "
            f"(only run settings may change: {', '.join(RUN_SETTINGS)}). Start a run without --like for that"
        )
    config = like_config(args.like)
    config.device = args.device
    if args.seed is not None:
        config.seed = args.seed
    if args.steps is not None:
        config.steps = args.steps
    return apply_overrides(config, overrides)


def command_eval(args: argparse.Namespace) -> int:
    from cpc_rl.experiments.evaluation import evaluate_run

    video = args.video
    if video == "":  # --video without a path: into the run directory
        video = args.run_dir / "eval.gif"
    summary = evaluate_run(args.run_dir, args.episodes, None if video is None else Path(video))
    print(
        f"{summary['model']} ({summary['num_timesteps']} steps), {summary['episodes']} episodes: "
        f"{_return_text(summary)}, success rate "
        f"{summary['success_rate']:.0%} [{summary['success_low']:.0%}, {summary['success_high']:.0%}] (Wilson 95%), "
        f"mean length {summary['mean_length']:.0f}"
    )
    if "video" in summary:
        print(f"video: {summary['video']}")
    return 0


def _budgets(env_args: list[str], default_steps: int | None) -> dict[str, int]:
    budgets = {}
    for text in env_args:
        env_id, _, steps = text.partition(":")
        if steps:
            try:
                budgets[env_id] = int(steps)
            except ValueError:
                raise RunError(f"--env {text!r}: the budget after ':' must be an integer number of steps") from None
        elif default_steps is None:
            raise RunError(f"--env {text!r} has no budget: give --steps or write {env_id}:STEPS")
        else:
            budgets[env_id] = default_steps
        if budgets[env_id] < 1:
            raise RunError(f"--steps must be >= 1; got {budgets[env_id]} for {env_id}")
    return budgets


def command_compare(args: argparse.Namespace) -> int:
    from cpc_rl.experiments.compare import (
        DEFAULT_ARMS,
        find_jobs,
        parse_arm,
        plan_jobs,
        run_jobs,
        set_aside_stale_runs,
    )
    from cpc_rl.experiments.config import apply_overrides
    from cpc_rl.experiments.report import write_report
    from cpc_rl.experiments.safety import FolderLock

    if args.seeds < 1 or args.workers < 1:
        raise RunError("--seeds and --workers must be >= 1")
    if args.probe and args.probe < 2:
        raise RunError(f"--probe takes a number of episodes >= 2; got {args.probe}")
    budgets = _budgets(args.envs, args.steps)
    arms = [parse_arm(text) for text in (args.arms or DEFAULT_ARMS)]
    names = [arm.name for arm in arms]
    if args.baseline is not None and args.baseline not in names:
        raise RunError(f"--baseline {args.baseline!r} is not an arm; arms: {', '.join(names)}")
    overrides = _flatten(args.overrides)
    base = RunConfig(
        env=next(iter(budgets)),
        algo=args.algo,
        n_envs=args.n_envs,
        device=args.device,
        vec_env="dummy",
        eval_freq=0,
        eval_episodes=20,
    )
    base = apply_overrides(base, overrides)
    # Checkpoints are spaced by each env's budget unless --set fixes them. One evaluation at the end
    # (eval_freq=0): the training episodes give the learning curves and the AUC for free, and
    # mid-run evaluations of 20 episodes cost 17% of a 30k-step Hallway run.
    given = {assignment.partition("=")[0].strip() for assignment in overrides}
    per_run = {key: count for key, count in (("save_freq", 5),) if key not in given}
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    jobs = plan_jobs(base, budgets, arms, seeds, args.out, per_run)
    for job in jobs:
        job.probe_episodes = args.probe
    with FolderLock(args.out, "comparison", ".compare.lock"):
        set_aside_stale_runs(jobs)
        todo = sum(not job.finished for job in jobs)
        print(
            f"{len(jobs)} runs ({len(jobs) - todo} already finished) of arms {', '.join(names)} on backend "
            f"{args.backend}, {args.workers} at a time -> {args.out}",
            flush=True,
        )
        failures = run_jobs(jobs, args.workers, args.backend, progress=not args.no_progress)
        for line in failures:
            print(f"run failed: {line}", file=sys.stderr)
        # The report covers every run in the folder, also those of earlier compare commands.
        on_disk = find_jobs(args.out)
        if not any(job.finished for job in on_disk):
            print(f"compare: no run in {args.out} has finished, so there is no report", file=sys.stderr)
            return 1
        report = write_report(on_disk, args.out, args.baseline, args.title)
    print(f"report: {report} (tables), {report.parent / 'curves.png'} (learning curves)")
    return 1 if failures else 0


def command_report(args: argparse.Namespace) -> int:
    from cpc_rl.experiments.compare import find_jobs
    from cpc_rl.experiments.report import write_report

    jobs = find_jobs(args.out)
    if not jobs:
        raise RunError(f"{args.out} holds no runs (expected {args.out}/runs/ENV/ARM/seed_S/config.yaml)")
    report = write_report(jobs, args.out, args.baseline, args.title)
    print(f"report: {report}")
    return 0


def command_probe(args: argparse.Namespace) -> int:
    from cpc_rl.experiments.representation import probe_comparison, probe_run

    if (args.run_dir / "runs").is_dir():
        probed, no_model = probe_comparison(args.run_dir, args.episodes, args.again, args.min_steps, args.policy)
        print(f"probed {len(probed)} runs of {args.run_dir} (probe/ in each run; `report` puts them in the tables)")
        if no_model:
            print(f"{len(no_model)} finished runs have no model.zip (models are not committed): not probed")
        return 0
    table = probe_run(args.run_dir, args.episodes, min_steps=args.min_steps, policy=args.policy)
    print(table.with_suffix(".md").read_text())
    print(f"written: {table.with_suffix('.md')}, {table}, {table.with_suffix('.png')}")
    return 0


def command_representation(args: argparse.Namespace) -> int:
    import dataclasses
    import os
    import platform

    from cpc_rl.experiments.representation import ProtocolConfig, run_protocol, write_document

    config = ProtocolConfig()
    changes = {"seeds": args.seeds, "train_steps": args.train_steps, "tasks": tuple(args.tasks) if args.tasks else None}
    config = dataclasses.replace(config, **{key: value for key, value in changes.items() if value is not None})
    for task in config.tasks:
        from cpc_rl.envs import check_env_id

        try:
            check_env_id(task)
        except ValueError as error:
            raise RunError(str(error)) from None
    if config.ablation_task not in config.tasks:
        config = dataclasses.replace(config, ablation_task=config.tasks[0])
    start = time.perf_counter()
    results = run_protocol(config, progress=not args.no_progress)
    import torch

    machine = f"{os.cpu_count()} CPU cores ({platform.processor() or platform.machine()}), torch {torch.__version__}"
    path = write_document(results, config, args.out, time.perf_counter() - start, machine)
    print(path.read_text())
    return 0


def _last_cpc_figures(run_dir: Path) -> str:
    from cpc_rl.experiments.runs import training_log

    progress = training_log(run_dir)
    if "train/cpc_accuracy" not in progress:
        return ""
    last = progress.dropna(subset=["train/cpc_accuracy"]).iloc[-1]
    return (
        f" At the last update CPC picked the true future {last['train/cpc_accuracy']:.1%} of the time "
        f"(k=1: {last['train/cpc_accuracy_k1']:.1%}) with an MI bound of {last['train/cpc_mi_bound']:.2f} nats."
    )


def main_job() -> int:
    """The README's main job: a short CPC training run on the default task."""
    from cpc_rl.experiments.runs import train

    config = RunConfig(steps=MAIN_JOB_STEPS, eval_freq=MAIN_JOB_STEPS // 5, save_freq=MAIN_JOB_STEPS // 5)
    run_dir = _default_run_dir(config)
    every = _progress_seconds()
    print(f"main job: {config.algo} with CPC on {config.env}, {config.steps} steps -> {run_dir}", flush=True)
    result = train(config, run_dir, progress_seconds=every)
    print(
        f"done: final evaluation over {result['episodes']} episodes: {_return_text(result)}, "
        f"success rate {result['success_rate']:.0%}.{_last_cpc_figures(run_dir)}\n"
        f"Learning curve: {run_dir / 'learning_curve.png'}; evaluations: {run_dir / 'evaluations.csv'}; "
        f"all training figures: {run_dir / 'logs'} (progress.csv, TensorBoard); model: {run_dir / 'model.zip'}."
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        if not argv:
            return main_job()
        args = build_parser().parse_args(argv)
        if args.command is None:
            return main_job()
        handlers = {
            "train": command_train,
            "eval": command_eval,
            "compare": command_compare,
            "report": command_report,
            "probe": command_probe,
            "representation": command_representation,
        }
        return handlers[args.command](args)
    except RunError as error:
        print(f"run_agent.py: error: {error}", file=sys.stderr)
        return 2
    except RunInterrupted as stop:
        print(f"run_agent.py: {stop}", file=sys.stderr)
        return 130
    except RunFailed as error:  # a fault during training (dead env worker, NaN, full disk)
        print(f"run_agent.py: error: {error}", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
