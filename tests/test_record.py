"""Every run records what it ran (settings.yaml, provenance.yaml); --like replays it; reports use it."""

import json
import re
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import yaml

from cpc_rl.agents.presets import PRESETS
from cpc_rl.experiments.compare import find_jobs
from cpc_rl.experiments.config import RunConfig, RunError, apply_overrides
from cpc_rl.experiments.record import (
    SettingsError,
    agent_defining,
    code_state,
    flatten,
    portable_command,
    resolve_references,
)
from cpc_rl.experiments.report import split_mixed_arms, write_report
from cpc_rl.experiments.runs import like_config, resume_config, train
from tests.test_report import write_run

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "results"  # every study's committed runs
# Two updates of 4 envs x 40 steps (SB3 logs an update's losses at the next), a tiny encoder;
# everything else from the ppo preset.
TINY = [
    "n_steps=40",
    "batch_size=40",
    "n_epochs=1",
    "cpc.sequence_length=40",
    "env.max_episode_steps=40",
    "vec_env='dummy'",
    "threads=1",
    "eval_episodes=2",
    "save_freq=320",
    "policy.features_extractor_kwargs={'features_dim': 32}",
    "cpc.horizon=4",
]


def tiny_run(run_dir: Path, steps: int = 320, seed: int = 3) -> RunConfig:
    config = apply_overrides(RunConfig(algo="ppo", aux="cpc", steps=steps, seed=seed), TINY)
    train(config, run_dir, progress=False)
    return config


@pytest.fixture(scope="module")
def original(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("record") / "original"
    tiny_run(run_dir)
    return run_dir


def test_a_run_records_its_effective_settings_and_provenance(original):
    settings = yaml.safe_load((original / "settings.yaml").read_text())
    arguments = settings["algorithm"]["arguments"]
    preset = PRESETS["ppo"]
    # The preset's values and the algorithm's defaults, not only what was asked for.
    assert arguments["learning_rate"] == preset["algo_kwargs"]["learning_rate"]
    assert arguments["n_steps"] == 40 and arguments["clip_range"] == preset["algo_kwargs"]["clip_range"]
    assert arguments["normalize_advantage"] is True and arguments["target_kl"] is None  # PPO's defaults
    assert arguments["cpc_kwargs"]["horizon"] == 4
    assert arguments["cpc_kwargs"]["coef"] == preset["cpc_kwargs"]["coef"]
    assert arguments["cpc_kwargs"]["negatives"] == "all"  # from CPC_DEFAULTS
    policy = arguments["policy_kwargs"]
    assert policy["features_extractor_class"] == "<class cpc_rl.agents.networks.FrameEncoder>"
    assert policy["features_extractor_kwargs"] == {"features_dim": 32, "precision": "float32"}
    assert policy["optimizer_class"] == "<class torch.optim.adam.Adam>" and policy["ortho_init"] is True
    assert settings["env"]["observation_shape"] == [60, 80, 3] and settings["env"]["max_episode_steps"] == 40
    assert settings["run"]["n_envs"] == 4 and settings["run"]["threads"] == 1
    assert settings["run"]["vec_env"] == "dummy" and settings["run"]["precision"] == "float32"
    # What the user asked for stays beside it, unchanged.
    assert yaml.safe_load((original / "config.yaml").read_text())["hyperparams"] == {
        "n_steps": 40,
        "batch_size": 40,
        "n_epochs": 1,
        "policy_kwargs": {"features_extractor_kwargs": {"features_dim": 32}},
    }
    segment = yaml.safe_load((original / "provenance.yaml").read_text())["segments"][0]
    assert segment["packages"]["torch"] and segment["packages"]["stable-baselines3"]
    assert segment["cpc_rl"] and segment["python"] and segment["machine"]["cpu"]
    code = segment["code"]
    assert len(code.get("commit", "")) == 40 or "not a git checkout" in code.get("git", "")
    assert isinstance(segment["command"], list)


def test_like_replays_the_recorded_settings_whatever_the_presets_say(original, tmp_path, monkeypatch):
    monkeypatch.setitem(PRESETS["ppo"]["algo_kwargs"], "learning_rate", 0.123)
    monkeypatch.setitem(PRESETS["ppo"], "cpc_kwargs", {"coef": 0.5, "score_dim": 8})
    changed = tmp_path / "changed"
    tiny_run(changed)  # the same request under today's presets builds another agent
    changed_settings = yaml.safe_load((changed / "settings.yaml").read_text())["algorithm"]["arguments"]
    assert changed_settings["learning_rate"] == 0.123 and changed_settings["cpc_kwargs"]["coef"] == 0.5

    config = like_config(original)
    config = apply_overrides(config, ["threads=1", "vec_env='dummy'"])
    replay = tmp_path / "replay"
    train(config, replay, progress=False)
    recorded = yaml.safe_load((original / "settings.yaml").read_text())
    replayed = yaml.safe_load((replay / "settings.yaml").read_text())
    assert agent_defining(replayed) == agent_defining(recorded)
    # Same seed, same machine, one process: the same first update and the same episodes.
    columns = ["train/policy_gradient_loss", "train/value_loss", "train/entropy_loss", "train/cpc_loss", "train/loss"]
    first = pd.read_csv(original / "logs/segment_0/progress.csv")[columns]
    again = pd.read_csv(replay / "logs/segment_0/progress.csv")[columns]
    assert first.notna().all(axis=None) or first.iloc[-1].notna().all()
    pd.testing.assert_frame_equal(first, again)
    for env_index in range(4):
        episodes = [pd.read_csv(run / f"monitor/{env_index}.monitor.csv", comment="#") for run in (original, replay)]
        pd.testing.assert_series_equal(episodes[0]["r"], episodes[1]["r"])
        pd.testing.assert_series_equal(episodes[0]["l"], episodes[1]["l"])


def interrupted_copy(run_dir: Path, into: Path) -> Path:
    """A copy of a finished run, as if it had been stopped at its last checkpoint."""
    import shutil

    shutil.copytree(run_dir, into)
    (into / "model.zip").unlink()
    status = json.loads((into / "status.json").read_text())
    (into / "status.json").write_text(json.dumps({**status, "state": "interrupted"}))
    return into


def test_a_resume_that_today_would_build_differently_is_refused(original, tmp_path, monkeypatch):
    run_dir = interrupted_copy(original, tmp_path / "resumable")
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    config["steps"] = 480
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    before = (run_dir / "provenance.yaml").read_text()
    monkeypatch.setitem(PRESETS["ppo"]["algo_kwargs"], "learning_rate", 0.123)
    with pytest.raises(RunError, match="learning_rate: 0.0003 -> 0.123.*--like"):
        train(RunConfig.from_dict(config), run_dir, progress=False, resume=True)
    assert (run_dir / "provenance.yaml").read_text() == before  # nothing written


def test_train_resume_continues_the_recorded_agent_after_the_defaults_change(original, tmp_path, monkeypatch):
    # What `train --resume` does: a run interrupted under one default (CPC's mode, say) resumes
    # under code with another as the agent it is, not as today's defaults would build it.
    run_dir = interrupted_copy(original, tmp_path / "resumable")
    monkeypatch.setitem(PRESETS["ppo"]["algo_kwargs"], "learning_rate", 0.123)
    monkeypatch.setitem(PRESETS["ppo"], "cpc_kwargs", {"coef": 0.1, "horizon": 4, "mode": "decoupled"})
    with pytest.raises(RunError, match="would build a different agent"):  # what today's presets would build
        train(RunConfig.from_dict(yaml.safe_load((run_dir / "config.yaml").read_text())), run_dir, resume=True)
    resumed = resume_config(run_dir)
    assert resumed.threads == 1 and resumed.vec_env == "dummy"  # how it runs: config.yaml's
    assert train(resumed, run_dir, progress=False, resume=True)["num_timesteps"] == 320
    recorded = yaml.safe_load((run_dir / "settings.yaml").read_text())["algorithm"]["arguments"]
    assert recorded["learning_rate"] == 0.0003 and recorded["cpc_kwargs"]["mode"] == "balanced"
    assert (run_dir / "config.yaml").read_text() == (original / "config.yaml").read_text()  # as the user asked
    assert len(yaml.safe_load((run_dir / "provenance.yaml").read_text())["segments"]) == 2


def test_a2c_records_the_optimizer_it_gives_its_policy():
    from cpc_rl import envs
    from cpc_rl.agents import make_agent
    from cpc_rl.experiments.record import algorithm_arguments

    vec_env = envs.make_vec_env("MiniWorld-Hallway-v0", 1, vec_env="dummy")
    try:
        model = make_agent("a2c", vec_env, aux="none")
        config = RunConfig(algo="a2c", aux="none").to_dict()
        policy = algorithm_arguments(config, model)["policy_kwargs"]
    finally:
        vec_env.close()
    # A2C swaps in RMSprop unless policy_kwargs name an optimizer: a replay must name RMSprop, not the default Adam.
    assert policy["optimizer_class"] == "<class torch.optim.rmsprop.RMSprop>"
    assert policy["optimizer_kwargs"]["eps"] == 1e-5


def test_like_replays_settings_recorded_before_a_cpc_key_existed_as_they_were_trained():
    # The first study's runs predate cpc_kwargs' mode (they trained joint CPC), whatever the default is now.
    run_dir = REPO / "results/study1/study/runs/MiniWorld-SignMemory-v0/cpc/seed_0"
    recorded = yaml.safe_load((run_dir / "settings.yaml").read_text())["algorithm"]["arguments"]["cpc_kwargs"]
    assert "mode" not in recorded
    cpc_kwargs = like_config(run_dir).cpc_kwargs
    assert cpc_kwargs["mode"] == "joint" and cpc_kwargs["max_grad_ratio"] == 1.0
    assert cpc_kwargs["coef"] == recorded["coef"] == 0.1 and cpc_kwargs["horizon"] == 8


def test_like_refuses_what_it_cannot_replay(tmp_path):
    with pytest.raises(RunError, match="no settings.yaml"):
        write_run(tmp_path, "MiniWorld-Hallway-v0", "cpc", 0, 0.5, [0.5])
        like_config(tmp_path / "runs/MiniWorld-Hallway-v0/cpc/seed_0")
    with pytest.raises(SettingsError, match="outside the packages"):
        resolve_references({"policy_kwargs": {"features_extractor_class": "<class os.system>"}})
    assert resolve_references("<class torch.nn.Tanh>").__name__ == "Tanh"


def write_settings(run_dir: Path, horizon: int) -> None:
    settings = {
        "run": {"env": "MiniWorld-Hallway-v0", "algo": "ppo", "aux": "cpc", "steps": 1000, "seed": 0, "threads": 1},
        "algorithm": {"class": "<class cpc_rl.sb3.CPCPPO>", "arguments": {"cpc_kwargs": {"horizon": horizon}}},
        "env": {"id": "MiniWorld-Hallway-v0", "n_envs": 4},
    }
    (run_dir / "settings.yaml").write_text(yaml.safe_dump(settings))


def test_reports_show_arms_by_settings_and_split_a_mixed_arm(tmp_path, capsys):
    out = tmp_path / "comparison"
    for seed, final in enumerate([0.1, 0.2, 0.3]):
        write_run(out, "MiniWorld-Hallway-v0", "none", seed, final, [final] * 10)
    for seed, (final, horizon) in enumerate([(0.4, 8), (0.5, 8), (0.6, 30)]):
        write_settings(write_run(out, "MiniWorld-Hallway-v0", "cpc", seed, final, [final] * 10), horizon)
    jobs, notes = split_mixed_arms(find_jobs(out))
    assert sorted({job.arm for job in jobs}) == ["cpc", "cpc [cpc_kwargs.horizon=30]", "none"]
    assert len(notes) == 1 and "cpc_kwargs.horizon" in notes[0] and "`cpc` (2 runs)" in notes[0]
    report = write_report(find_jobs(out), out).read_text()
    assert "holds runs with different settings (cpc_kwargs.horizon)" in report
    assert "| cpc [cpc_kwargs.horizon=30] | 1 |" in report  # its own row in the task's table
    assert "| none | settings not recorded |" in report  # the arm without settings.yaml
    assert "cpc_kwargs.horizon" in capsys.readouterr().err
    # A setting that newer code records (at its default) and older runs lack does not split an arm.
    extra = yaml.safe_load((out / "runs/MiniWorld-Hallway-v0/cpc/seed_1/settings.yaml").read_text())
    extra["algorithm"]["arguments"]["cpc_kwargs"]["mode"] = "joint"
    (out / "runs/MiniWorld-Hallway-v0/cpc/seed_1/settings.yaml").write_text(yaml.safe_dump(extra))
    jobs, notes = split_mixed_arms(find_jobs(out))
    assert sorted({job.arm for job in jobs}) == ["cpc", "cpc [cpc_kwargs.horizon=30]", "none"]


def test_every_committed_run_has_settings_and_provenance():
    runs = sorted(path.parent for path in RESULTS.glob("**/runs/*/*/seed_*/config.yaml"))
    assert len(runs) >= 130
    for run_dir in runs:
        settings = yaml.safe_load((run_dir / "settings.yaml").read_text())
        provenance = yaml.safe_load((run_dir / "provenance.yaml").read_text())
        config = yaml.safe_load((run_dir / "config.yaml").read_text())
        # Runs made before records existed were given reconstructed ones; later runs wrote their own.
        commit = settings["reconstructed"]["from_commit"] if "reconstructed" in settings else None
        commit = commit or provenance["segments"][0]["code"]["commit"]
        assert len(commit) == 40 and provenance["segments"][0]["code"]["commit"]
        flat = flatten(settings)
        assert flat["run.env"] == config["env"] and flat["run.seed"] == config["seed"]
        coef = (config["cpc_kwargs"] or {}).get("coef")
        if coef is not None:
            assert flat["algorithm.arguments.cpc_kwargs.coef"] == coef
        if config["aux"] == "none":
            assert flat["algorithm.arguments.cpc_kwargs"] is None


def test_recorded_commands_hold_no_path_of_the_machine(tmp_path):
    here = tmp_path / "checkout"
    argv = [str(here / "run_agent.py"), "train", "--run-dir", str(here / "results/a"), "--set", f"x={here}/b"]
    assert portable_command(argv, cwd=here) == [
        "python",
        "run_agent.py",
        "train",
        "--run-dir",
        "results/a",
        "--set",
        "x=b",
    ]
    # A comparison starts its runs as python -m cpc_rl.experiments.cli; a console script is its name.
    assert portable_command([str(REPO / "experiments" / "cli.py"), "probe"], cwd=here) == ["cpc-rl", "probe"]
    assert portable_command(["/opt/venv/bin/cpc-rl", "train", "--run-dir", "/elsewhere"], cwd=here) == [
        "cpc-rl",
        "train",
        "--run-dir",
        "/elsewhere",  # outside the folder it ran from: the user's own choice, kept
    ]


def test_no_committed_run_records_a_path_of_the_machine_it_ran_on():
    found = []
    for path in RESULTS.glob("**/runs/*/*/seed_*/*"):
        if path.suffix in {".txt", ".yaml", ".json"} and re.search(
            r"(^|[\s'\"=])/(work|root|home|tmp|check)/", path.read_text()
        ):
            found.append(str(path.relative_to(REPO)))
    assert not found, f"{len(found)} files, e.g. {found[:3]}"


def test_an_installed_package_records_no_path_and_not_a_surrounding_repository(tmp_path):
    # A wheel's site-packages/cpc_rl inside a user's own git repository is not that repository's code.
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / "cpc_rl").mkdir()
    state = code_state(tmp_path / "cpc_rl")
    assert "commit" not in state and "installed cpc-rl" in state["git"] and str(tmp_path) not in state["git"]
