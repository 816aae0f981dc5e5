"""Faults of long runs, injected against real MiniWorld: dead env workers, NaN, two writers,
a stopped comparison, a full disk. Each must stop cleanly, say what happened in one line, and lose nothing."""

import contextlib
import json
import os
import resource
import signal
import subprocess
import sys
import threading
import time

import gymnasium as gym
import numpy as np
import pandas as pd
import psutil
import pytest
import torch
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import DummyVecEnv
from test_cli import REPO, TINY, assert_clean_error, run_agent

from cpc_rl import envs
from cpc_rl.agents import make_agent
from cpc_rl.experiments.cli import _last_cpc_figures
from cpc_rl.experiments.config import RunConfig, RunError, chosen_vec_env
from cpc_rl.experiments.report import cpc_figures, gradient_figures
from cpc_rl.experiments.runs import Run, training_log
from cpc_rl.experiments.safety import (
    ActingThreads,
    FiniteGuard,
    FolderLock,
    NonFiniteError,
    ReleaseFreedMemory,
    _glibc,
    heap_breakdown,
    resident_bytes,
)

TINY_PPO = dict(n_steps=40, batch_size=40, cpc_kwargs={"horizon": 8, "sequence_length": 40})
SMALL_POLICY = {"features_extractor_kwargs": {"features_dim": 32}}


def start_train(run_dir, flags, settings, **kwargs):
    command = [sys.executable, str(REPO / "run_agent.py"), "train", "--algo", "ppo", "--run-dir", str(run_dir)]
    command += ["--no-progress", *map(str, flags), *TINY, *settings]
    return subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def start_run_agent(args):
    """``run_agent.py ARGS`` in the background, its output captured."""
    command = [sys.executable, str(REPO / "run_agent.py"), *map(str, args)]
    return subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def train_tiny(run_dir, *settings):
    """80 PPO steps with a checkpoint every 40, as a finished run to break things in."""
    flags = ["--algo", "ppo", "--steps", 80, "--n-envs", 1, "--run-dir", run_dir, "--no-progress"]
    return run_agent("train", *flags, *TINY, "eval_freq=0", "save_freq=40", *settings)


def wait_for(predicate, seconds=120):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


def checkpoint_count(run_dir):
    return len(list((run_dir / "checkpoints").glob("*.zip")))


def test_a_dead_env_worker_stops_the_run_in_one_line_and_resume_continues(tmp_path):
    run_dir = tmp_path / "run"
    process = start_train(
        run_dir, ["--steps", 1500, "--n-envs", 2], ["vec_env='subproc'", "eval_freq=0", "save_freq=80"]
    )
    assert wait_for(lambda: checkpoint_count(run_dir) > 0)
    main = psutil.Process(process.pid)
    # The env workers are the forkserver's children (grandchildren of the training process).
    workers = [child for child in main.children(recursive=True) if child.ppid() != main.pid]
    assert len(workers) == 2
    workers[1].kill()
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 3, stderr
    line = stderr.strip().splitlines()[-1]
    assert "env worker" in line and "died: killed by SIGKILL" in line and "resume with" in line
    status = json.loads((run_dir / "status.json").read_text())
    assert status["state"] == "failed" and "killed by SIGKILL" in status["reason"]
    resumed = run_agent("train", "--resume", run_dir, "--no-progress")
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads((run_dir / "status.json").read_text())["state"] == "finished"


class NaNRewardAt(gym.Wrapper):
    def __init__(self, env, step):
        super().__init__(env)
        self.nan_at, self.steps = step, 0

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.steps += 1
        return obs, float("nan") if self.steps == self.nan_at else reward, terminated, truncated, info


def small_model(env_fn):
    vec = DummyVecEnv([env_fn])
    return make_agent("ppo", vec, aux="cpc", seed=0, policy_kwargs=SMALL_POLICY, **TINY_PPO)


def test_a_nan_reward_or_weight_stops_training_where_it_appears(tmp_path):
    model = small_model(lambda: NaNRewardAt(envs.make_env("MiniWorld-Hallway-v0", max_episode_steps=40), 57))
    with pytest.raises(NonFiniteError, match="env 0 returned a non-finite reward at step 57"):
        model.learn(200, callback=FiniteGuard())
    model = small_model(lambda: envs.make_env("MiniWorld-Hallway-v0", max_episode_steps=40))
    model.learn(40, callback=FiniteGuard())
    weight = next(model.policy.parameters())
    weight.data[0] = float("nan")
    with pytest.raises(NonFiniteError, match="became non-finite in the update before step 40"):
        model.learn(80, callback=FiniteGuard(), reset_num_timesteps=False)
    # A checkpoint is never written with non-finite weights.
    run = Run(tmp_path / "run", RunConfig(algo="ppo"))
    with pytest.raises(NonFiniteError):
        run.save_checkpoint(model)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_exploding_weights_stop_the_run_and_keep_the_last_good_checkpoint(tmp_path):
    run_dir = tmp_path / "run"
    result = run_agent(
        "train",
        "--algo",
        "ppo",
        "--steps",
        400,
        "--n-envs",
        1,
        "--run-dir",
        run_dir,
        "--no-progress",
        *TINY,
        "eval_freq=0",
        "save_freq=40",
        "learning_rate=1e8",
        "max_grad_norm=1e9",
    )
    assert result.returncode == 3, result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert "Traceback" not in result.stderr and ("became NaN" in line or "non-finite" in line)
    # The checkpoint of step 40 was saved before the update that blew up, and stays the only one.
    assert "the last good checkpoint" in line and "step_0000000040.zip" in line
    assert "nothing was saved with non-finite weights" in line
    assert not (run_dir / "model.zip").exists() and checkpoint_count(run_dir) == 1
    assert run_agent("eval", run_dir, "--episodes", 1).returncode == 0
    status = json.loads((run_dir / "status.json").read_text())
    assert status["state"] == "failed" and "during the update at step 40" in status["reason"]


def test_one_writer_per_run_dir_and_comparison(tmp_path, trained_run):
    run_dir = tmp_path / "run"
    subprocess.run(["cp", "-r", str(trained_run), str(run_dir)], check=True)
    (run_dir / "model.zip").unlink()
    (run_dir / "status.json").write_text(json.dumps({"state": "interrupted", "num_timesteps": 40}))
    with FolderLock(run_dir, "training run"):
        assert_clean_error(
            run_agent("train", "--resume", run_dir), "is in use by another training run", str(os.getpid())
        )
    out = tmp_path / "compare"
    with FolderLock(out, "comparison", ".compare.lock"):
        result = run_agent("compare", "--env", "MiniWorld-Hallway-v0", "--arm", "none", "--steps", 40, "--out", out)
        assert_clean_error(result, "is in use by another comparison")
    # A holder killed with SIGKILL leaves no stuck lock.
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"from cpc_rl.experiments.safety import FolderLock; FolderLock({str(run_dir)!r}, 'x').acquire(); "
            "print('held', flush=True); import time; time.sleep(60)",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(RunError, match="in use"):
        FolderLock(run_dir, "training run").acquire()
    holder.kill()
    holder.wait()
    FolderLock(run_dir, "training run").acquire().release()


def training_processes(out):
    return [
        p
        for p in psutil.process_iter(["cmdline"])
        if any(str(out) in part for part in (p.info["cmdline"] or [])) and "train" in (p.info["cmdline"] or [])
    ]


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGKILL])
def test_a_stopped_comparison_leaves_no_run_behind_and_resumes(tmp_path, stop):
    out = tmp_path / "compare"
    args = [
        "compare",
        "--env",
        "MiniWorld-Hallway-v0:1000",
        "--arm",
        "none",
        "--arm",
        "cpc",
        "--algo",
        "ppo",
        "--seeds",
        1,
        "--workers",
        2,
        "--n-envs",
        1,
        "--out",
        out,
        "--no-progress",
        *TINY,
        "eval_freq=0",
        "save_freq=80",
    ]
    process = start_run_agent(args)
    run_dirs = [out / "runs" / "MiniWorld-Hallway-v0" / arm / "seed_0" for arm in ("none", "cpc")]
    assert wait_for(lambda: all(checkpoint_count(run_dir) > 0 for run_dir in run_dirs))
    process.send_signal(stop)
    process.communicate(timeout=120)
    assert wait_for(lambda: not training_processes(out), seconds=90), "training processes outlived the comparison"
    for run_dir in run_dirs:
        assert json.loads((run_dir / "status.json").read_text())["state"] == "interrupted"
    again = run_agent(*args, timeout=600)
    assert again.returncode == 0, again.stderr
    assert "2 runs (0 already finished)" in again.stdout
    for run_dir in run_dirs:
        status = json.loads((run_dir / "status.json").read_text())
        assert status["state"] == "finished" and status["num_timesteps"] >= 1000
        assert len(list((run_dir / "logs").glob("segment_*"))) == 2, "the run resumed rather than restarted"


def test_a_run_stopped_after_its_last_step_resumes_to_a_report(tmp_path):
    # A stop between the last update and the final evaluation (a session's end did this to a study run).
    run_dir = tmp_path / "run"
    first = train_tiny(run_dir, "keep_checkpoints=5")
    assert first.returncode == 0, first.stderr
    (run_dir / "model.zip").unlink()
    (run_dir / "status.json").write_text(json.dumps({"state": "interrupted", "num_timesteps": 80}))
    result = run_agent("train", "--resume", run_dir, "--no-progress")
    assert result.returncode == 0, result.stderr
    assert json.loads((run_dir / "status.json").read_text())["state"] == "finished"
    assert [path.name for path in (run_dir / "logs").iterdir()] == ["segment_0"]  # nothing left to log
    # A segment killed before SB3's first dump leaves an empty progress.csv: it is skipped, not fatal.
    (run_dir / "logs" / "segment_1").mkdir()
    (run_dir / "logs" / "segment_1" / "progress.csv").write_text("")
    assert len(training_log(run_dir)) == 2  # the two updates of segment 0
    assert 0 <= cpc_figures(run_dir)["cpc_accuracy_k1"] <= 1
    assert gradient_figures(run_dir)["grad_ratio_z"] > 0
    assert "At the last update CPC picked the true future" in _last_cpc_figures(run_dir)


def test_a_full_disk_keeps_every_earlier_result(tmp_path):
    run_dir = tmp_path / "run"
    first = train_tiny(run_dir, "keep_checkpoints=5")
    assert first.returncode == 0, first.stderr
    (run_dir / "model.zip").unlink()
    (run_dir / "checkpoints" / "step_0000000080.zip").unlink()
    (run_dir / "status.json").write_text(json.dumps({"state": "interrupted", "num_timesteps": 40}))
    before = {
        path: path.read_bytes() for path in [run_dir / "config.yaml", run_dir / "checkpoints" / "step_0000000040.zip"]
    }
    limit = (run_dir / "checkpoints" / "step_0000000040.zip").stat().st_size // 2

    def small_files_only():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    result = subprocess.run(
        [sys.executable, str(REPO / "run_agent.py"), "train", "--resume", str(run_dir), "--no-progress"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=small_files_only,
    )
    assert result.returncode == 3, result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert "disk is full (or a file size limit was reached)" in line and "step_0000000040.zip" in line
    for path, data in before.items():
        assert path.read_bytes() == data, path
    assert not list((run_dir / "checkpoints").glob(".*.tmp")), "a half-written temporary file was left"
    assert len(pd.read_csv(run_dir / "monitor" / "0.monitor.csv", comment="#")) > 0
    assert run_agent("eval", run_dir, "--episodes", 1).returncode == 0


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("trained") / "run"
    result = train_tiny(run_dir)
    assert result.returncode == 0, result.stderr
    return run_dir


def test_finite_numbers_pass_the_guard_also_when_a_cpc_step_has_no_pair():
    # Episodes of at most 5 steps: k = 5..8 never has a pair, so their accuracy is NaN by design.
    model = small_model(lambda: envs.make_env("MiniWorld-SignMemory-v0", max_episode_steps=5))
    model.learn(120, callback=FiniteGuard())
    assert model.num_timesteps == 120 and np.isfinite(model.cpc_figures["train/cpc_loss"])
    assert np.isnan(model.cpc_figures["train/cpc_accuracy_k8"])


def test_acting_uses_one_thread_and_training_the_learner_threads():
    model = small_model(lambda: envs.make_env("MiniWorld-Hallway-v0"))
    seen = {"acting": set(), "training": set()}
    train = model.train

    def recorded_train():
        seen["training"].add(torch.get_num_threads())
        train()

    class Record(BaseCallback):
        def _on_step(self):
            seen["acting"].add(torch.get_num_threads())
            return True

    model.train = recorded_train
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        model.learn(120, callback=[ActingThreads(2), Record()])
    finally:
        torch.set_num_threads(before)
    assert seen == {"acting": {1}, "training": {2}}


def _faults_filling(megabytes):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    tensor = torch.ones(megabytes * 2**20 // 4)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before, tensor


@pytest.mark.skipif(heap_breakdown() is None, reason="glibc >= 2.33 only")
def test_freed_memory_stays_mapped_between_updates_up_to_the_budget():
    release, spendthrift = ReleaseFreedMemory(budget_mb=32), ReleaseFreedMemory(budget_mb=4096)
    _glibc().malloc_trim(0)  # earlier tests' free memory would serve the first fill
    release._on_training_start()
    try:
        release._on_rollout_start()
        spendthrift._on_rollout_start()
        faults = []
        for _ in range(6):  # updates that each use a 48 MB tensor
            count, tensor = _faults_filling(48)
            del tensor
            spendthrift._on_rollout_start()  # under its budget: keeps what was freed
            faults.append(count)
        # 48 MB is 12288 pages: faulted in once or twice while the heap grows, then reused.
        assert faults[0] > 10_000 and sum(faults[3:]) < 1_000, faults
        assert spendthrift.trims == 0
        before = resident_bytes()
        release._on_rollout_start()  # over its budget: hands the free memory back
        assert release.trims == 1 and resident_bytes() < before - 40 * 2**20
        count, tensor = _faults_filling(48)
        assert count > 10_000  # given back, so faulted in again
    finally:
        release._on_training_end()


@pytest.mark.xdist_group("ray")
def test_a_ray_task_whose_worker_dies_is_retried_from_its_checkpoint(tmp_path):
    pytest.importorskip("ray")
    out = tmp_path / "compare"
    args = ["compare", "--env", "MiniWorld-Hallway-v0:1000", "--arm", "none", "--algo", "ppo", "--seeds", 1]
    args += ["--workers", 1, "--n-envs", 1, "--backend", "ray", "--out", out, "--no-progress", *TINY]
    args += ["eval_freq=0", "save_freq=80"]
    process = start_run_agent(args)
    run_dir = out / "runs" / "MiniWorld-Hallway-v0" / "none" / "seed_0"
    assert wait_for(lambda: checkpoint_count(run_dir) > 0, seconds=300)
    (training,) = training_processes(out)
    assert training.nice() == os.nice(0), "Ray's niceness 15 would let the run crawl beside other load"
    ray_worker = training.parent()
    assert "ray" in " ".join(ray_worker.cmdline()).lower()
    ray_worker.kill()
    _, stderr = process.communicate(timeout=600)
    assert process.returncode == 0, stderr
    status = json.loads((run_dir / "status.json").read_text())
    assert status["state"] == "finished" and status["num_timesteps"] >= 1000
    assert len(list((run_dir / "logs").glob("segment_*"))) == 2, "the retry resumed rather than restarted"


def test_vec_env_auto_gives_each_env_worker_a_core_or_keeps_envs_in_process(monkeypatch):
    from cpc_rl.experiments import config as config_module

    config = RunConfig(algo="recurrent_ppo")  # 4 envs
    assert config.vec_env == "auto"
    monkeypatch.setattr(config_module, "_usable_cores", lambda: 2)
    assert chosen_vec_env(config) == "dummy"
    monkeypatch.setattr(config_module, "_usable_cores", lambda: 8)
    assert chosen_vec_env(config) == "subproc"
    assert chosen_vec_env(RunConfig(algo="recurrent_ppo", n_envs=8)) == "dummy", "8 envs, 8 cores: no core left"
    assert chosen_vec_env(RunConfig(vec_env="dummy")) == "dummy"
    with pytest.raises(RunError, match="vec_env must be one of auto, subproc, dummy"):
        RunConfig(vec_env="threads").check()


def test_runs_cap_onednn_primitive_cache_so_changing_lstm_shapes_do_not_grow_memory():
    # Each minibatch's episode starts give the LSTM's sequence path a new shape; oneDNN's default
    # cache keeps 1024 of them (86 MB on 400 shapes here). run_agent.py caps it before any op.
    # Resident memory is read after handing free heap back (malloc_trim): without it the reading
    # moved between 7 and 21 MB from run to run with the cap; with it, 2.7-2.8 MB (uncapped: 72 MB).
    script = (
        "import os, sys, psutil, torch\n"
        f"sys.path.insert(0, {str(REPO)!r}); import run_agent\n"
        "from cpc_rl.experiments.safety import _glibc\n"
        "torch.set_num_threads(1); lstm = torch.nn.LSTM(64, 64); process = psutil.Process()\n"
        "def resident():\n"
        "    _glibc() and _glibc().malloc_trim(0)\n"
        "    return process.memory_info().rss\n"
        "for n in range(1, 400):\n"
        "    lstm(torch.randn(n % 50 + 1, n // 50 + 1, 64))[0].sum().backward()\n"
        "    start = resident() if n == 20 else start if n > 20 else None\n"
        "print(os.environ['ONEDNN_PRIMITIVE_CACHE_CAPACITY'], (resident() - start) / 2**20)\n"
    )
    environ = {key: value for key, value in os.environ.items() if key != "ONEDNN_PRIMITIVE_CACHE_CAPACITY"}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=environ)
    assert result.returncode == 0, result.stderr
    capacity, growth_mb = result.stdout.split()
    assert capacity == "64" and float(growth_mb) < 20, result.stdout


def test_a_run_command_that_leaves_a_process_behind_ends_and_takes_it_along():
    # A run killed mid-episode left its ViZDoom engine running with the run's stderr open, and the
    # comparison waited for that stderr to end, forever.
    from cpc_rl.experiments.compare import _run_command

    leaves_a_sleeper = "import subprocess, sys; print(subprocess.Popen(['sleep', '600']).pid, file=sys.stderr); exit(3)"
    command = [sys.executable, "-c", leaves_a_sleeper]
    result = {}
    worker = threading.Thread(target=lambda: result.update(out=_run_command(command, 1)))
    worker.start()
    worker.join(timeout=120)
    assert not worker.is_alive(), "the command's end was not seen while the process it left behind lived"
    code, last_line = result["out"]
    assert code == 3
    left_behind = int(last_line)

    def gone():
        with contextlib.suppress(psutil.NoSuchProcess):
            return psutil.Process(left_behind).status() == psutil.STATUS_ZOMBIE
        return True

    assert wait_for(gone), "the process the command left behind still runs"
