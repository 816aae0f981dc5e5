"""ViZDoom scenarios through envs: the real engine, headless (the [vizdoom] extra; CI installs it)."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from cpc_rl import envs

pytest.importorskip("vizdoom")

REPO = Path(__file__).resolve().parent.parent
MAZE = "VizdoomMyWayHome-v1"  # random start each episode: seeds show in the first frame


def rollout(env, actions, seed=None):
    frames = [env.reset(seed=seed)[0]]
    for action in actions:
        obs, _, terminated, truncated, _ = env.step(action)
        frames.append(obs)
        if terminated or truncated:
            frames.append(env.reset()[0])
    return np.stack(frames)


def test_an_env_gives_the_image_agents_take_and_passes_sb3s_check():
    from stable_baselines3.common.env_checker import check_env

    env = envs.make_env(MAZE, seed=0)
    try:
        assert env.observation_space.shape == (60, 80, 3) and env.observation_space.dtype == np.uint8
        check_env(env, skip_render_check=True)
    finally:
        env.close()
    big = envs.make_env(MAZE, obs_size=(120, 160))
    assert big.reset()[0].shape == (120, 160, 3)
    big.close()
    with pytest.raises(ValueError, match="does not divide"):
        envs.make_env(MAZE, obs_size=(50, 80))


def test_a_seed_reproduces_frames_and_another_seed_does_not():
    actions = np.random.default_rng(0).integers(0, 6, size=60)
    runs = []
    for seed in (3, 3, 4):
        env = envs.make_env(MAZE, seed=seed)
        runs.append(rollout(env, actions))
        env.close()
    assert np.array_equal(runs[0], runs[1])
    assert not np.array_equal(runs[0][0], runs[2][0])


def test_envs_in_one_process_do_not_share_state():
    actions = np.random.default_rng(1).integers(0, 6, size=40)
    alone = envs.make_env(MAZE, seed=5)
    expected = rollout(alone, actions)
    alone.close()
    first, second = envs.make_env(MAZE, seed=5), envs.make_env(MAZE, seed=6)
    frames = [first.reset()[0]]
    second.reset()
    for action in actions:
        second.step(int(5 - action))  # the other env moves differently in between
        frames.append(first.step(action)[0])
    first.close()
    second.close()
    assert np.array_equal(np.stack(frames), expected)


def test_a_timeout_is_a_truncation_whose_last_frame_is_the_last_rendered():
    env = envs.make_env("VizdoomBasic-v1", seed=0, episode_timeout=40, episode_start_time=0)
    try:
        env.reset()
        assert env.unwrapped.game.get_episode_timeout() == 40
        assert env.max_episode_steps == 10  # 40 tics, 4 per action
        done, steps = False, 0
        while not done:
            obs, _, terminated, truncated, _ = env.step(0)  # no button: the monster survives
            done, steps = terminated or truncated, steps + 1
        assert (steps, terminated, truncated) == (10, False, True)
        assert obs.any(), "the final observation is a blank frame"
    finally:
        env.close()


def test_ground_truth_follows_the_agent():
    env = envs.make_env(MAZE, seed=2)
    try:
        _, info = env.reset()
        assert set(info) >= {"agent_pos", "agent_dir", "health"} and info["health"] == 100.0
        for _ in range(4):
            _, _, _, _, moved = env.step(env.moves["move_forward"])
        _, _, _, _, turned = env.step(env.moves["turn_left"])
    finally:
        env.close()
    assert np.linalg.norm(moved["agent_pos"] - info["agent_pos"]) > 1.0
    assert turned["agent_dir"] != pytest.approx(moved["agent_dir"])
    assert -np.pi <= turned["agent_dir"] < np.pi


def test_the_scenarios_are_listed_with_their_kinds_and_a_typo_gets_the_right_name():
    kinds = envs.list_envs(with_kinds=True)
    assert kinds[MAZE].startswith("exploration")
    assert "VizdoomHealthGatheringSupreme-v1" in kinds
    assert not any("MultiBinary" in env_id for env_id in kinds)
    with pytest.raises(ValueError, match="Did you mean VizdoomMyWayHome-v1"):
        envs.check_env_id("VizdoomMyWayHom-v1")


def test_without_vizdoom_an_id_names_the_extra_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "vizdoom", None)  # import vizdoom now raises ImportError
    with pytest.raises(ValueError, match=r"pip install -e \"\.\[vizdoom\]\""):
        envs.check_env_id(MAZE)
    assert MAZE not in envs.list_envs()


def test_scenarios_paying_per_tic_are_scaled_to_returns_near_one():
    # HealthGathering pays 1 per tic alive: 4 per step at frame_skip 4, 0.04 scaled by its default.
    scaled = envs.make_env("VizdoomHealthGathering-v1", seed=0)
    raw = envs.make_env("VizdoomHealthGathering-v1", seed=0, reward_scale=1)
    maze = envs.make_env(MAZE, seed=0)
    try:
        scaled.reset(), raw.reset(), maze.reset()
        assert scaled.step(0)[1] == pytest.approx(0.04) and raw.step(0)[1] == pytest.approx(4.0)
        assert maze.step(0)[1] == pytest.approx(-0.0004, abs=1e-6)  # MyWayHome's small time penalty, unscaled
    finally:
        scaled.close(), raw.close(), maze.close()
    for bad in (0, -1.0, float("nan"), "0.01", True):
        with pytest.raises(ValueError, match="reward_scale must be a positive number"):
            envs.make_env("VizdoomBasic-v1", reward_scale=bad)


def test_train_on_a_vector_of_4_scenarios_records_the_engine(tmp_path):
    run_dir = tmp_path / "run"
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "run_agent.py"),
            "train",
            "--env",
            "VizdoomHealthGathering-v1",
            "--algo",
            "ppo",
            "--aux",
            "cpc",
            "--steps",
            "160",
            "--n-envs",
            "4",
            "--run-dir",
            str(run_dir),
            "--no-progress",
            "--set",
            "n_steps=40",
            "batch_size=40",
            "cpc.sequence_length=40",
            "eval_episodes=1",
            "env.max_episode_steps=30",
            "vec_env=subproc",
            "threads=1",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr
    settings = yaml.safe_load((run_dir / "settings.yaml").read_text())
    assert settings["env"]["kwargs"]["frame_skip"] == 4
    assert settings["env"]["kwargs"]["screen_resolution"] == "RES_160X120"
    assert settings["env"]["kwargs"]["reward_scale"] == 0.01
    assert settings["env"]["observation_shape"] == [60, 80, 3]
    assert settings["env"]["n_envs"] == 4
    provenance = yaml.safe_load((run_dir / "provenance.yaml").read_text())
    assert provenance["segments"][0]["packages"]["vizdoom"]
    assert len(list((run_dir / "monitor").glob("*.monitor.csv"))) == 4
