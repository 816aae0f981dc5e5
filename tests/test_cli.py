"""run_agent.py in subprocesses, with tiny budgets on real MiniWorld."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
TINY = [
    "--set",
    "n_steps=40",
    "batch_size=40",
    "cpc.horizon=8",
    "cpc.sequence_length=40",
    "eval_episodes=2",
    "env.max_episode_steps=40",
    "vec_env=dummy",
    "policy.features_extractor_kwargs={'features_dim': 32}",
]


def run_agent(*args, timeout=300, **kwargs):
    return subprocess.run(
        [sys.executable, str(REPO / "run_agent.py"), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=kwargs.pop("cwd", REPO),
        **kwargs,
    )


def assert_clean_error(result, *fragments):
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.mark.parametrize("aux", ["cpc", "none"])
def test_train_writes_every_result(tmp_path, aux):
    run_dir = tmp_path / "run"
    settings = TINY if aux == "cpc" else [s for s in TINY if not s.startswith("cpc.")]
    result = run_agent(
        "train",
        "--algo",
        "ppo",
        "--aux",
        aux,
        "--steps",
        160,
        "--n-envs",
        2,
        "--run-dir",
        run_dir,
        "--no-progress",
        *settings,
        "eval_freq=80",
        "save_freq=80",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert (
        config["aux"] == aux
        and config["hyperparams"]["n_steps"] == 40
        and config["env_kwargs"] == {"max_episode_steps": 40}
    )
    # Recorded as typed again from the folder it ran in: no interpreter path, the run dir relative.
    command = (run_dir / "command.txt").read_text()
    assert "run_agent.py train" in command and " --run-dir run " in command and sys.executable not in command
    provenance = yaml.safe_load((run_dir / "provenance.yaml").read_text())["segments"][0]
    assert provenance["command"][0] == "python" and provenance["command"][1] == str(REPO / "run_agent.py")
    for name in ("model.zip", "learning_curve.png", "evaluations.csv", "monitor/0.monitor.csv"):
        assert (run_dir / name).is_file(), name
    assert list((run_dir / "logs" / "segment_0").glob("events.out.tfevents.*"))
    progress = pd.read_csv(run_dir / "logs" / "segment_0" / "progress.csv")
    assert ("train/cpc_loss" in progress.columns) == (aux == "cpc")
    evaluations = pd.read_csv(run_dir / "evaluations.csv")
    assert list(evaluations["step"]) == [80, 160]
    status = json.loads((run_dir / "status.json").read_text())
    assert status["state"] == "finished" and status["vec_env"] == "dummy" and status["threads"] >= 1
    # CPU time is recorded beside wall time (the envs ran in this process, on at most its threads).
    assert 0 < status["cpu_seconds"] <= status["wall_seconds"] * (os.cpu_count() or 1) + 1
    assert "success rate" in result.stdout
    # Checkpoints were saved at 80 and 160 steps; only the newest is kept by default.
    assert [path.name for path in (run_dir / "checkpoints").glob("*.zip")] == ["step_0000000160.zip"]


@pytest.mark.parametrize("limit", [None, 30])
def test_train_with_env_worker_processes_records_the_episode_limit(tmp_path, limit):
    # Any machine with more cores than envs picks worker processes (vec_env auto), and a MiniWorld
    # env without gym's TimeLimit has no `_max_episode_steps`: asking a worker for it killed the worker.
    run_dir = tmp_path / "run"
    settings = [s for s in TINY if s not in ("vec_env=dummy", "env.max_episode_steps=40")] + ["vec_env=subproc"]
    settings += [] if limit is None else [f"env.max_episode_steps={limit}"]
    flags = ["--algo", "ppo", "--steps", 40, "--n-envs", 1, "--run-dir", run_dir, "--no-progress"]
    result = run_agent("train", *flags, *settings)
    assert result.returncode == 0, result.stderr
    assert json.loads((run_dir / "status.json").read_text())["vec_env"] == "subproc"
    recorded = yaml.safe_load((run_dir / "settings.yaml").read_text())["env"]["max_episode_steps"]
    assert recorded == (limit or 250)  # MiniWorld-Hallway-v0's own limit


def test_interrupt_then_resume_continues_the_step_count(tmp_path):
    run_dir = tmp_path / "run"
    command = [
        sys.executable,
        str(REPO / "run_agent.py"),
        "train",
        "--algo",
        "ppo",
        "--steps",
        4000,
        "--n-envs",
        1,
        "--run-dir",
        run_dir,
        "--no-progress",
        *TINY,
        "eval_freq=0",
        "save_freq=400",
    ]
    process = subprocess.Popen(
        list(map(str, command)),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # A shell's background job ignores SIGINT and its children inherit that: restore Ctrl-C's default.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.time() + 400  # a busy machine can take minutes to reach the first checkpoint
    while time.time() < deadline and not list((run_dir / "checkpoints").glob("*.zip")):
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "resume with" in stderr and "Traceback" not in stderr
    status = json.loads((run_dir / "status.json").read_text())
    assert status["state"] == "interrupted"
    stopped_at, stopped_cpu = status["num_timesteps"], status["cpu_seconds"]
    assert 0 < stopped_at < 4000
    episodes_before = len(pd.read_csv(run_dir / "monitor" / "0.monitor.csv", comment="#"))

    result = run_agent("train", "--resume", run_dir, "--no-progress")
    assert result.returncode == 0, result.stderr
    assert f"resuming at {stopped_at} of 4000 steps" in result.stdout
    status = json.loads((run_dir / "status.json").read_text())
    # An interrupt in mid-rollout keeps the steps taken, so the run ends within one rollout (40) past 4000.
    assert status["state"] == "finished" and 4000 <= status["num_timesteps"] < 4000 + 40
    assert status["cpu_seconds"] > stopped_cpu  # both segments counted
    resumed = pd.read_csv(run_dir / "logs" / "segment_1" / "progress.csv")
    assert resumed["time/total_timesteps"].min() > stopped_at
    assert len(pd.read_csv(run_dir / "monitor" / "0.monitor.csv", comment="#")) > episodes_before


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("trained") / "run"
    result = run_agent(
        "train",
        "--algo",
        "recurrent_ppo",
        "--steps",
        80,
        "--n-envs",
        1,
        "--run-dir",
        run_dir,
        "--no-progress",
        *TINY,
        "policy.lstm_hidden_size=16",
        "eval_freq=0",
        "save_freq=40",
    )
    assert result.returncode == 0, result.stderr
    return run_dir


def test_eval_video_goes_into_the_run_dir_and_bad_formats_are_refused_first(trained_run, tmp_path):
    run_dir = tmp_path / "run"
    subprocess.run(["cp", "-r", str(trained_run), str(run_dir)], check=True)
    result = run_agent("eval", run_dir, "--episodes", 1, "--video")
    assert result.returncode == 0, result.stderr
    assert (run_dir / "eval.gif").stat().st_size > 1000 and "(one episode: no CI)" in result.stdout
    assert "nan" not in result.stdout
    assert_clean_error(run_agent("eval", run_dir, "--video", tmp_path / "agent.avi"), "must end in .gif or .mp4")


def test_eval_reports_confidence_intervals_and_writes_a_video(trained_run, tmp_path):
    video = tmp_path / "agent.gif"
    result = run_agent("eval", trained_run, "--episodes", 3, "--video", video)
    assert result.returncode == 0, result.stderr
    assert "3 episodes" in result.stdout and "95% CI" in result.stdout and "Wilson" in result.stdout
    from PIL import Image

    with Image.open(video) as image:
        assert image.n_frames > 3 and image.size == (320, 240)


def test_compare_arms_write_tables_and_curves_and_skip_finished_runs(tmp_path):
    out = tmp_path / "compare"
    args = ["compare", "--env", "MiniWorld-Hallway-v0", "--arm", "control", "--arm", "cpc:coef=0.1,horizon=4"]
    args += ["--baseline", "control", "--seeds", 2, "--first-seed", 7, "--steps", 80, "--algo", "ppo"]
    args += ["--workers", 2, "--n-envs", 1, "--out", out, "--probe", 2, *TINY, "eval_freq=40"]
    # 4 runs and their probes in 2 processes: ~2 min on 2 idle cores, over 4 beside other tests' runs.
    result = run_agent(*args, timeout=540)
    assert result.returncode == 0, result.stderr
    # Not a terminal: a log line per finished run instead of a bar.
    lines = [line for line in result.stdout.splitlines() if line.startswith("progress: ")]
    assert len(lines) == 4 and lines[-1].startswith("progress: 4/4 runs, MiniWorld-Hallway-v0/")
    assert lines[-1].endswith("ETA 0m00s")
    assert all(" done, elapsed " in line for line in lines)
    runs = out / "runs" / "MiniWorld-Hallway-v0"
    # --probe probes each run as it finishes: models are not committed, probes are.
    probes = {
        (arm, seed): runs / arm / f"seed_{seed}" / "probe" / "probe.csv"
        for arm in ("control", "cpc-coef0.1-horizon4")
        for seed in (7, 8)
    }
    assert all(path.is_file() for path in probes.values())
    assert sorted(path.name for path in runs.iterdir()) == ["control", "cpc-coef0.1-horizon4"]
    control = yaml.safe_load((runs / "control" / "seed_7" / "config.yaml").read_text())
    treated = yaml.safe_load((runs / "cpc-coef0.1-horizon4" / "seed_8" / "config.yaml").read_text())
    assert control["aux"] == "cpc" and control["cpc_kwargs"]["coef"] == 0.0
    assert treated["cpc_kwargs"]["coef"] == 0.1 and treated["cpc_kwargs"]["horizon"] == 4
    report = (out / "report" / "README.md").read_text()
    assert "| control | 2 |" in report and "| cpc-coef0.1-horizon4 | 2 |" in report
    assert "cpc-coef0.1-horizon4 − control" in report
    assert (out / "report" / "curves.png").stat().st_size > 1000
    scores = pd.read_csv(out / "report" / "scores.csv")
    assert len(scores) == 4 and set(scores["seed"]) == {7, 8}
    assert scores["cpc_accuracy_k1"].between(0, 1).all() and scores["eval_seconds"].gt(0).all()
    # Run again: nothing trains again, and only the probe that went missing is taken again.
    probes["cpc-coef0.1-horizon4", 7].unlink()
    kept = {key: path.stat().st_mtime_ns for key, path in probes.items() if path.is_file()}
    model = runs / "cpc-coef0.1-horizon4" / "seed_7" / "model.zip"
    trained = model.stat().st_mtime_ns
    again = run_agent(*args)
    assert again.returncode == 0 and "4 runs (4 already finished)" in again.stdout, again.stderr
    assert probes["cpc-coef0.1-horizon4", 7].is_file() and model.stat().st_mtime_ns == trained
    assert all(probes[key].stat().st_mtime_ns == mtime for key, mtime in kept.items())
    report = (out / "report" / "README.md").read_text()
    (out / "report" / "README.md").unlink()
    rebuilt = run_agent("report", out, "--baseline", "control")
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert (out / "report" / "README.md").read_text() == report
    # `probe` takes the probes a folder lacks; a run without its model is skipped, not lost.
    (runs / "control" / "seed_8" / "model.zip").unlink()
    for arm, seed in (("control", 7), ("control", 8)):
        shutil.rmtree(runs / arm / f"seed_{seed}" / "probe")
    probed = run_agent("probe", out, "--episodes", 3)
    assert probed.returncode == 0, probed.stderr
    assert "probed 1 runs" in probed.stdout and "1 finished runs have no model.zip" in probed.stdout
    assert (runs / "control" / "seed_7" / "probe" / "probe.csv").is_file()
    assert not (runs / "control" / "seed_8" / "probe").exists()
    assert run_agent("report", out, "--baseline", "control").returncode == 0
    scores = pd.read_csv(out / "report" / "scores.csv").set_index(["arm", "seed"])
    assert scores["probe_c_position"].notna().sum() == 3 and scores["probe_c_position"].dropna().le(1).all()
    assert np.isnan(scores.loc[("control", 8), "probe_c_position"])
    assert "probe c→position R²" in (out / "report" / "README.md").read_text()


def test_compare_refuses_bad_arms_before_any_run(tmp_path):
    out = tmp_path / "compare"
    common = ["--steps", 80, "--out", out, "--no-progress"]
    hallway = ["compare", "--env", "MiniWorld-Hallway-v0"]
    assert_clean_error(run_agent(*hallway, "--arm", "vae", *common), "unknown arm 'vae'")
    assert_clean_error(run_agent(*hallway, "--arm", "cpc:coeff=0.1", *common), "unknown CPC setting 'coeff'")
    assert_clean_error(run_agent(*hallway, "--arm", "control:coef=1", *common), "control always has coef=0")
    assert_clean_error(run_agent(*hallway, "--arm", "cpc", "--baseline", "none", *common), "is not an arm")
    assert_clean_error(run_agent(*hallway, "--arm", "cpc:horizon=500", *common), "horizon")
    assert_clean_error(run_agent("compare", "--env", "MiniWorld-Nope-v0", *common), "unknown env id")
    assert_clean_error(run_agent(*hallway, "--probe", 1, *common), "--probe takes a number of episodes >= 2")
    assert_clean_error(run_agent(*hallway, "--steps", 0, "--out", out), "--steps must be >= 1")
    assert_clean_error(run_agent("report", tmp_path / "empty"), "holds no runs")
    assert not out.exists()


@pytest.mark.xdist_group("ray")
def test_compare_on_a_local_ray_instance(tmp_path):
    pytest.importorskip("ray")
    out = tmp_path / "compare"
    result = run_agent(
        "compare",
        "--env",
        "MiniWorld-Hallway-v0",
        "--arm",
        "none",
        "--arm",
        "cpc",
        "--seeds",
        1,
        "--steps",
        40,
        "--algo",
        "ppo",
        "--workers",
        2,
        "--n-envs",
        1,
        "--backend",
        "ray",
        "--out",
        out,
        "--no-progress",
        *TINY,
        "eval_freq=40",
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    assert len(pd.read_csv(out / "report" / "scores.csv")) == 2


def test_bad_input_gives_one_line_and_exit_code_2(tmp_path, trained_run):
    assert_clean_error(
        run_agent("train", "--env", "MiniWorld-Halway-v0", "--run-dir", tmp_path / "x"),
        "unknown env id",
        "MiniWorld-Hallway-v0",
    )
    assert_clean_error(run_agent("train", "--algo", "dqn"), "invalid choice")
    assert_clean_error(run_agent("train", "--aux", "vae"), "invalid choice")
    assert_clean_error(run_agent("eval", tmp_path / "missing"), "does not exist")
    assert_clean_error(run_agent("train", "--resume", tmp_path / "missing"), "does not exist")
    assert_clean_error(run_agent("train", "--run-dir", trained_run, "--no-progress"), "already holds a run")
    assert not (tmp_path / "x").exists()


def test_mistakes_are_refused_before_any_env_worker_starts(tmp_path):
    run_dir = tmp_path / "run"
    cases = [
        (["--set", "n_steps=abc"], "n_steps must be an integer"),
        (["--set", "n_step=128"], "did you mean n_steps?"),
        (["--set", "policy.lstm_hiden_size=8"], "did you mean lstm_hidden_size?"),
        (["--set", "cpc.horizon=500"], "horizon"),
        (["--set", "env.max_episode_step=10"], "cannot make MiniWorld-Hallway-v0"),
        (["--env", "MiniWorld-Sign-v0"], "MiniWorld-SignMemory-v0"),
        (["--steps", "-5"], "steps must be an integer >= 1"),
        (["--set", "precision=float16"], "precision must be one of float32, bfloat16"),
    ]
    for extra, fragment in cases:
        result = run_agent("train", "--run-dir", run_dir, "--no-progress", *extra)
        assert_clean_error(result, fragment)
        assert "training" not in result.stdout
        assert not run_dir.exists()


def test_set_takes_the_sb3_kwargs_names_as_well_as_the_short_prefixes():
    from cpc_rl.experiments.config import RunConfig, apply_overrides

    base = RunConfig(algo="ppo", aux="cpc")
    sb3_names = ["cpc_kwargs.horizon=4", "env_kwargs.max_episode_steps=50", "policy_kwargs.ortho_init=False"]
    long = apply_overrides(base, sb3_names)
    short = apply_overrides(base, ["cpc.horizon=4", "env.max_episode_steps=50", "policy.ortho_init=False"])
    assert long == short
    assert long.cpc_kwargs == {"horizon": 4}
    assert long.env_kwargs == {"max_episode_steps": 50}
    assert long.hyperparams == {"policy_kwargs": {"ortho_init": False}}


def test_help_and_argument_errors_do_not_import_torch():
    code = (
        "import contextlib, io, sys, run_agent\n"
        "for argv in (['--help'], ['train', '--algo', 'dqn'], ['compare', '--help']):\n"
        "    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):\n"
        "        try:\n"
        "            run_agent.main(argv)\n"
        "        except SystemExit:\n"
        "            pass\n"
        "print(sorted(name for name in ('torch', 'stable_baselines3', 'miniworld') if name in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_progress_reaches_a_log_when_stdout_is_not_a_terminal(tmp_path):
    result = run_agent(
        "train",
        "--algo",
        "ppo",
        "--steps",
        120,
        "--n-envs",
        1,
        "--run-dir",
        tmp_path / "run",
        *TINY,
        "eval_freq=0",
        env={**os.environ, "CPC_RL_PROGRESS_SECONDS": "0"},
    )
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if line.startswith("progress: ")]
    assert lines and "/120 steps (" in lines[-1] and "steps/s" in lines[-1] and "ETA" in lines[-1]
    assert "CPC accuracy" in lines[-1]


def test_corrupt_checkpoint_is_reported_and_kept(tmp_path, trained_run):
    run_dir = tmp_path / "run"
    subprocess.run(["cp", "-r", str(trained_run), str(run_dir)], check=True)
    (run_dir / "model.zip").unlink()
    (run_dir / "status.json").write_text(json.dumps({"state": "interrupted", "num_timesteps": 40}))
    checkpoint = sorted((run_dir / "checkpoints").glob("*.zip"))[-1]
    checkpoint.write_bytes(checkpoint.read_bytes()[:200])
    assert_clean_error(run_agent("train", "--resume", run_dir), "is corrupt", checkpoint.name)
    assert checkpoint.stat().st_size == 200
    assert_clean_error(run_agent("eval", run_dir), "is corrupt")


def test_set_values_are_literals_never_evaluated(tmp_path):
    marker = tmp_path / "pwned"
    result = run_agent(
        "train",
        "--steps",
        40,
        "--run-dir",
        tmp_path / "run",
        "--no-progress",
        "--set",
        f"n_steps=__import__('os').system('touch {marker}')",
    )
    assert not marker.exists()
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert os.path.exists(tmp_path / "run") is False or not (tmp_path / "run" / "model.zip").exists()


def test_probe_writes_a_table_and_a_plot_for_a_trained_run(trained_run, tmp_path):
    run_dir = tmp_path / "run"
    subprocess.run(["cp", "-r", str(trained_run), str(run_dir)], check=True)
    result = run_agent("probe", run_dir, "--episodes", 4, "--min-steps", 150)
    assert result.returncode == 0, result.stderr
    table = pd.read_csv(run_dir / "probe" / "probe.csv")
    assert (table["episodes"] >= 4).all() and (table["steps"] >= 150).all()
    assert set(table["features"]) == {"z", "c"}  # the recurrent agent's encoder and LSTM
    assert set(table["target"]) == {"position", "heading", "heading_sector", "goal_relative"}
    assert "| position |" in (run_dir / "probe" / "probe.md").read_text()
    assert (run_dir / "probe" / "probe.png").stat().st_size > 1000
    assert_clean_error(run_agent("probe", run_dir, "--episodes", 1), "--episodes must be >= 2")


def test_probe_on_an_exploring_policy_fits_the_cue_of_a_memory_task(tmp_path):
    run_dir = tmp_path / "cue"
    flags = ["--algo", "recurrent_ppo", "--env", "MiniWorld-CueCorridor-v0", "--steps", 80, "--n-envs", 1]
    trained = run_agent("train", *flags, "--run-dir", run_dir, "--no-progress", *TINY)
    assert trained.returncode == 0, trained.stderr
    result = run_agent("probe", run_dir, "--policy", "explore", "--episodes", 4, "--min-steps", 120)
    assert result.returncode == 0, result.stderr
    table = pd.read_csv(run_dir / "probe" / "explore.csv")
    assert (table["steps"] >= 120).all()
    cue = table[table["target"] == "cue"].set_index("features")
    assert set(cue.index) == {"z", "c"} and (cue["metric"] == "accuracy").all()
    assert cue["score"].between(0, 1).all()
    assert "exploring policy blind to the task" in (run_dir / "probe" / "explore.md").read_text()
    assert not (run_dir / "probe" / "probe.csv").exists(), "the agent's own probe is another file"


def test_a_comparisons_runs_import_the_comparisons_own_code_from_any_directory(tmp_path):
    # compare starts each run as `python -m cpc_rl.experiments.cli` in the user's working directory;
    # from a checkout that pip did not install (or installed elsewhere), the run must still find
    # this checkout's cpc_rl. `-S` leaves out site-packages, and with it any installed cpc_rl.
    from cpc_rl.experiments.compare import child_environ

    code = "import cpc_rl; print(cpc_rl.__file__); print(*cpc_rl.__path__, sep='\\n')"
    result = subprocess.run(
        [sys.executable, "-S", "-c", code],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=child_environ(1),
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert all(line.startswith(str(REPO)) for line in result.stdout.split()), result.stdout
    assert child_environ(3)["OMP_NUM_THREADS"] == "3"
