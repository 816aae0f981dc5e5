"""The RL Baselines3 Zoo with the CPC algorithms: train, resume, enjoy, record and -optimize on real MiniWorld."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cpc_rl.sb3 import CPCA2C

pytest.importorskip("rl_zoo3")

REPO = Path(__file__).resolve().parent.parent
TINY = ["--hyperparams", "n_envs:2", "n_steps:40", "batch_size:40", "cpc_kwargs:dict(horizon=8,score_dim=16)"]
SMALL_LSTM = ["policy_kwargs:dict(lstm_hidden_size=16,features_extractor_kwargs=dict(features_dim=16))"]


def zoo(*args, timeout=600):
    command = [sys.executable, "-m", "cpc_rl.zoo", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=REPO)


def zoo_train(algo, logs, *extra):
    conf = REPO / "agents" / "zoo" / f"{algo}.yml"
    common = ["--algo", algo, "--env", "MiniWorld-Hallway-v0", "--gym-packages", "cpc_rl.envs", "--conf-file", conf]
    return zoo("train", *common, "-f", logs, *extra)


def test_zoo_files_are_the_presets():
    from cpc_rl.agents.zoo import ZOO_FOLDER, zoo_files

    for name, text in zoo_files().items():
        assert (ZOO_FOLDER / name).read_text() == text, f"{name} is stale: run python -m cpc_rl.agents.zoo"
    entry = yaml.safe_load((ZOO_FOLDER / "cpc_ppo_lstm.yml").read_text())["MiniWorld-SignMemory-v0"]
    assert entry["policy"] == "CnnLstmPolicy" and entry["n_steps"] == 100
    assert entry["n_timesteps"] == 75_000  # the studies' budget


def test_train_resume_enjoy_and_record_through_the_zoo(tmp_path):
    logs = tmp_path / "logs"
    first = zoo_train("cpc_ppo_lstm", logs, "-n", 160, "--eval-freq", 80, "--eval-episodes", 1, *TINY, *SMALL_LSTM)
    assert first.returncode == 0, first.stderr[-2000:]
    run = logs / "cpc_ppo_lstm" / "MiniWorld-Hallway-v0_1"
    model = run / "MiniWorld-Hallway-v0.zip"
    assert model.is_file() and "cpc_accuracy" in first.stdout  # logged under train/ by the CPC algorithm
    resumed = zoo_train("cpc_ppo_lstm", logs, "-n", 80, "-i", model, *TINY)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "Loading pretrained agent" in resumed.stdout and (logs / "cpc_ppo_lstm" / "MiniWorld-Hallway-v0_2").is_dir()
    common = ["--algo", "cpc_ppo_lstm", "--env", "MiniWorld-Hallway-v0", "--gym-packages", "cpc_rl.envs", "-f", logs]
    enjoyed = zoo("enjoy", *common, "--exp-id", 1, "-n", 40, "--no-render")
    assert enjoyed.returncode == 0, enjoyed.stderr[-2000:]
    recorded = zoo("record", *common, "--exp-id", 1, "-n", 20, "-o", tmp_path / "videos")
    assert recorded.returncode == 0, recorded.stderr[-2000:]
    assert list((tmp_path / "videos").glob("*.mp4"))


def test_optimize_samples_the_cpc_settings_with_pruning(tmp_path):
    logs = tmp_path / "logs"
    result = zoo_train(
        "cpc_a2c",
        logs,
        "-n",
        160,
        "-optimize",
        "--n-trials",
        2,
        "--n-jobs",
        1,
        "--sampler",
        "random",
        "--pruner",
        "median",
        "--n-evaluations",
        2,
        "--eval-episodes",
        1,
        "--hyperparams",
        "n_envs:2",
        "--optimization-log-path",
        tmp_path / "trials",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Number of finished trials:  2" in result.stdout
    for name in ("cpc_coef", "cpc_horizon", "cpc_negatives", "cpc_action_conditioned"):
        assert name in result.stdout
    assert list((logs / "cpc_a2c").glob("report_MiniWorld-Hallway-v0_2-trials-*.csv"))
    # The sampled net_arch and activation went into the file's policy_kwargs: the trials trained FrameEncoder.
    trained = CPCA2C.load(next((tmp_path / "trials").glob("trial_*/best_model.zip")), device="cpu")
    assert type(trained.policy.features_extractor).__name__ == "FrameEncoder"
    assert trained.policy.features_extractor.features_dim == 256 and "net_arch" in trained.policy_kwargs


def test_bad_input_gives_one_line_and_leaves_no_run_folder(tmp_path):
    unknown = zoo("train", "--algo", "cpc_nope", "--env", "MiniWorld-Hallway-v0")
    assert unknown.returncode == 2 and len(unknown.stderr.strip().splitlines()) == 1
    assert "unknown algorithm 'cpc_nope'" in unknown.stderr and "cpc_ppo_lstm" in unknown.stderr
    logs = tmp_path / "logs"
    refused = zoo_train("cpc_ppo", logs, "-n", 80, "--hyperparams", "cpc_kwargs:dict(horizon=500)")
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "horizon" in refused.stderr.strip().splitlines()[-1]
    assert not list((logs / "cpc_ppo").glob("MiniWorld-Hallway-v0_*"))


def test_cpc_rl_without_the_zoo_does_not_import_it():
    code = "import sys, cpc_rl, cpc_rl.sb3, cpc_rl.agents.factory, cpc_rl.envs; print('rl_zoo3' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "False"


def test_the_library_imports_none_of_agents_envs_or_experiments():
    """cpc_rl's core (head, loss, SB3 plug-in, Zoo registration) stands alone: the layout's first rule."""
    code = (
        "import sys, cpc_rl, cpc_rl.sb3, cpc_rl.zoo, cpc_rl.probe\n"
        "print(sorted(m for m in sys.modules if m.split('.')[:2] in "
        "(['cpc_rl', 'agents'], ['cpc_rl', 'envs'], ['cpc_rl', 'experiments'])))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_a_second_checkout_runs_its_own_code_not_the_installed_one(tmp_path):
    # A study runs from a worktree frozen at its plan's commit while the main checkout is the one
    # installed: every cpc_rl module must then come from the worktree, none from the install.
    for name in ("cpc_rl", "agents", "envs", "experiments"):
        shutil.copytree(REPO / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "setup.cfg", tmp_path / "setup.cfg")
    code = (
        "import sys, cpc_rl.envs, cpc_rl.agents.presets, cpc_rl.experiments.record, cpc_rl.sb3\n"
        "ours = {m.__file__ for n, m in sys.modules.items() if n.startswith('cpc_rl') and m.__file__}\n"
        "print(*sorted(ours), sep='\\n')"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr
    files = result.stdout.split()
    assert len(files) > 5 and all(file.startswith(str(tmp_path)) for file in files), files
