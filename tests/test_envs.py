"""envs/: real MiniWorld, headless, correct across envs and processes."""

import ctypes
import math
import os
import subprocess
import sys

import gymnasium as gym
import numpy as np
import psutil
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

from cpc_rl import envs

FORWARD, TURN_LEFT, TURN_RIGHT = 2, 0, 1


# The wrapped env is what agents see, so it is what is checked; gymnasium warns that it is wrapped.
@pytest.mark.filterwarnings("ignore:.*is different from the unwrapped version")
@pytest.mark.parametrize("env_id", [*envs.SUITE, "MiniWorld-Hallway-v0"])
def test_gymnasium_and_sb3_checkers_pass(env_id):
    env = envs.make_env(env_id, seed=0)
    try:
        gym_check_env(env, skip_render_check=True)
        sb3_check_env(env, warn=False)
        assert env.observation_space.shape == (60, 80, 3)
        assert env.observation_space.dtype == np.uint8
    finally:
        env.close()


def test_headless_in_a_fresh_process_without_display_prints_nothing():
    environ = {k: v for k, v in os.environ.items() if k not in {"DISPLAY", "PYGLET_HEADLESS", "LP_NUM_THREADS"}}
    code = (
        "from cpc_rl import envs; e = envs.make_env('MiniWorld-OneRoom-v0', seed=0); o, _ = e.reset(); "
        "o2 = e.step(2)[0]; e.close(); import sys; sys.stderr.write(str(o.shape) + str(int(o.std() > 0)))"
    )
    result = subprocess.run([sys.executable, "-c", code], env=environ, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""  # miniworld's "Falling back to num_samples" is swallowed
    assert result.stderr.endswith("(60, 80, 3)1")


def run_alone(env_id, seed, actions):
    env = envs.make_env(env_id, seed=seed)
    frames = [env.reset()[0]]
    frames += [env.step(a)[0] for a in actions]
    env.close()
    return frames


def test_envs_in_one_process_never_draw_each_others_geometry():
    actions = [FORWARD, TURN_LEFT, FORWARD, FORWARD, TURN_RIGHT, FORWARD] * 3
    expected_maze = run_alone("MiniWorld-MazeS3Fast-v0", 1, actions)
    expected_hall = run_alone("MiniWorld-Hallway-v0", 2, actions)
    maze = envs.make_env("MiniWorld-MazeS3Fast-v0", seed=1)
    hall = envs.make_env("MiniWorld-Hallway-v0", seed=2)
    other_maze = envs.make_env("MiniWorld-MazeS3Fast-v0", seed=7)
    try:
        maze_frames, hall_frames = [maze.reset()[0]], [hall.reset()[0]]
        other_maze.reset()
        for step, action in enumerate(actions):
            if step % 4 == 0:  # a reset rebuilds the other maze's static world
                other_maze.reset()
            maze_frames.append(maze.step(action)[0])
            other_maze.step(action)
            hall_frames.append(hall.step(action)[0])
        for got, want in zip(maze_frames + hall_frames, expected_maze + expected_hall, strict=True):
            assert np.array_equal(got, want)
    finally:
        for env in (maze, hall, other_maze):
            env.close()


def test_create_and_close_keeps_memory_flat():
    process = psutil.Process()
    trim = ctypes.CDLL("libc.so.6").malloc_trim  # memory freed but kept by glibc would hide growth
    env = envs.make_env("MiniWorld-Hallway-v0", seed=0)
    env.reset()
    env.close()
    trim(0)
    before = process.memory_info().rss
    for seed in range(30):
        env = envs.make_env("MiniWorld-Hallway-v0", seed=seed)
        env.reset()
        env.step(FORWARD)
        env.close()
    trim(0)
    growth_mb = (process.memory_info().rss - before) / 2**20
    # Each env's frame buffers (~0.5 MB) outlived it until close() deleted them: 14 MB here.
    assert growth_mb < 5, f"30 create/close cycles grew memory by {growth_mb:.1f} MB"


def test_same_seed_same_observations_in_process_and_across_processes():
    actions = [FORWARD, TURN_LEFT, FORWARD, TURN_RIGHT, FORWARD]
    first = run_alone("MiniWorld-FourRooms-v0", 3, actions)
    second = run_alone("MiniWorld-FourRooms-v0", 3, actions)
    other = run_alone("MiniWorld-FourRooms-v0", 4, actions)
    assert all(np.array_equal(a, b) for a, b in zip(first, second, strict=True))
    assert not np.array_equal(first[0], other[0])
    vec = envs.make_vec_env("MiniWorld-FourRooms-v0", 2, seed=3, vec_env="subproc", start_method="spawn")
    try:
        first_obs = vec.reset()
        frames = [first_obs[0]] + [vec.step(np.array([a, a]))[0][0] for a in actions]
    finally:
        vec.close()
    assert all(np.array_equal(a, b) for a, b in zip(first, frames, strict=True))
    assert np.array_equal(run_alone("MiniWorld-FourRooms-v0", 4, [])[0], first_obs[1])


def test_a_seed_given_to_the_first_reset_replaces_the_envs_own():
    def starts(first_reset_seed):
        env = envs.make_env("MiniWorld-FourRooms-v0", seed=0)
        try:
            return [env.reset(seed=first_reset_seed)[0], env.reset()[0], env.reset()[0]]
        finally:
            env.close()

    own, given = starts(None), starts(0)  # SB3 seeds a vec env's first reset when the model has a seed
    assert all(np.array_equal(a, b) for a, b in zip(own, given, strict=True))
    assert not np.array_equal(given[0], given[1])  # the second episode continues the stream, not a replay


def test_time_limit_is_truncation_not_termination():
    env = envs.make_env("MiniWorld-Hallway-v0", seed=0, max_episode_steps=6)
    try:
        env.reset()
        for step in range(1, 7):
            _, _, terminated, truncated, _ = env.step(TURN_LEFT)
            assert not terminated
            assert truncated == (step == 6)
    finally:
        env.close()


def test_vec_env_marks_time_outs_for_bootstrapping():
    vec = envs.make_vec_env("MiniWorld-Hallway-v0", 1, vec_env="dummy", max_episode_steps=3)
    try:
        vec.reset()
        for _ in range(3):
            _, _, dones, infos = vec.step(np.array([TURN_LEFT]))
        assert dones[0] and infos[0]["TimeLimit.truncated"] and "terminal_observation" in infos[0]
        assert infos[0]["episode"]["l"] == 3  # the Monitor wrapper logged the episode
    finally:
        vec.close()


def test_ground_truth_follows_the_agent():
    env = envs.make_env("MiniWorld-OneRoom-v0", seed=5)
    try:
        _, info = env.reset()
        assert set(info) >= {"agent_pos", "agent_dir", "goal_pos"}
        heading = info["agent_dir"]
        _, _, _, _, moved = env.step(FORWARD)
        displacement = moved["agent_pos"] - info["agent_pos"]
        assert np.linalg.norm(displacement) > 0.05
        # MiniWorld's heading points along (cos, -sin) in (x, z).
        direction = np.array([math.cos(heading), -math.sin(heading)])
        assert displacement @ direction / np.linalg.norm(displacement) > 0.95
        _, _, _, _, turned = env.step(TURN_LEFT)
        assert np.allclose(turned["agent_pos"], moved["agent_pos"])
        assert turned["agent_dir"] != pytest.approx(moved["agent_dir"])
        for _ in range(40):  # past 2 pi the heading stays wrapped
            _, _, _, _, info = env.step(TURN_LEFT)
            assert -math.pi <= info["agent_dir"] < math.pi
        goal = info["goal_pos"]
        goal[0] += 100  # a copy: the env's own state must not change
        assert env.step(TURN_LEFT)[4]["goal_pos"][0] != goal[0]
    finally:
        env.close()


def test_tasks_without_one_goal_have_no_goal_position():
    env = envs.make_env("MiniWorld-CollectHealth-v0", seed=0)
    try:
        _, info = env.reset()
        assert "goal_pos" not in info and "agent_pos" in info
    finally:
        env.close()


@pytest.mark.parametrize("start_method", ["fork", "forkserver", "spawn"])
def test_subprocess_vec_env_with_each_start_method(start_method):
    envs.make_env("MiniWorld-Hallway-v0").close()  # the parent has imported miniworld: the fork trap
    vec = envs.make_vec_env("MiniWorld-Hallway-v0", 2, seed=0, start_method=start_method)
    try:
        obs = vec.reset()
        obs, rewards, dones, infos = vec.step(np.array([FORWARD, TURN_LEFT]))
        assert obs.shape == (2, 60, 80, 3) and obs.dtype == np.uint8
        assert obs[0].std() > 0 and not np.array_equal(obs[0], obs[1])
        assert "agent_pos" in infos[0]
    finally:
        vec.close()


def test_obs_size_changes_observations():
    env = envs.make_env("MiniWorld-Hallway-v0", obs_size=(48, 64))
    try:
        assert env.reset()[0].shape == (48, 64, 3)
    finally:
        env.close()


def test_list_envs_holds_every_registered_miniworld_id():
    ids = envs.list_envs()
    assert "MiniWorld-Hallway-v0" in ids and set(envs.SUITE) <= set(ids)
    assert all(env_id.startswith(("MiniWorld-", "Vizdoom")) for env_id in ids)


def test_bad_input_gets_clear_errors():
    with pytest.raises(ValueError, match="Did you mean MiniWorld-Hallway-v0"):
        envs.make_env("MiniWorld-Halway-v0")
    with pytest.raises(ValueError, match=r"obs_size must be \(height, width\)"):
        envs.make_env("MiniWorld-Hallway-v0", obs_size=(0, 80))
    with pytest.raises(ValueError, match="n_envs must be an integer >= 1"):
        envs.make_vec_env("MiniWorld-Hallway-v0", 0)
    with pytest.raises(ValueError, match="vec_env must be one of"):
        envs.make_vec_env("MiniWorld-Hallway-v0", 1, vec_env="ray")
    with pytest.raises(ValueError, match="is not supported.*MiniWorld-SignMemory-v0"):
        envs.make_env("MiniWorld-Sign-v0")
    assert "MiniWorld-Sign-v0" not in envs.list_envs()


def test_sign_memory_draws_the_word_at_every_reset_and_hides_it_from_the_boxes():
    env = envs.make_env("MiniWorld-SignMemory-v0", seed=3)
    assert gym.spec("MiniWorld-SignMemory-v0") is not None
    assert "memory" in envs.list_envs(with_kinds=True)["MiniWorld-SignMemory-v0"]
    try:
        world = env.unwrapped
        colours, facing_sign, facing_boxes = set(), {}, {}
        for _ in range(30):
            obs, info = env.reset()
            assert obs.dtype == np.uint8 and obs.shape == (60, 80, 3)
            colour = info["sign_color"]
            colours.add(colour)
            np.testing.assert_allclose(info["goal_pos"], [world.boxes[colour].pos[0], world.boxes[colour].pos[2]])
            # The same pose for every colour: facing the sign the words differ, facing the boxes nothing does.
            world.agent.pos, world.agent.dir = np.array([4.5, 0.0, 4.0]), -math.pi / 2
            facing_sign[colour] = world.render_obs()
            world.agent.dir = math.pi / 2
            facing_boxes[colour] = world.render_obs()
        assert colours == {0, 1, 2}
        assert not np.array_equal(facing_sign[0], facing_sign[1]) and not np.array_equal(facing_sign[1], facing_sign[2])
        assert np.array_equal(facing_boxes[0], facing_boxes[1]) and np.array_equal(facing_boxes[1], facing_boxes[2])
        # Walking into the sign's box pays, another box ends the episode with nothing.
        for target, expect_reward in ((True, True), (False, False)):
            _, info = env.reset()
            box = world.boxes[info["sign_color"] if target else (info["sign_color"] + 1) % 3]
            world.agent.pos, world.agent.dir = box.pos + np.array([0.0, 0.0, 2.0]), math.pi / 2
            _, reward, terminated, truncated, info = env.step(world.actions.move_forward)
            assert terminated and not truncated and (reward > 0) == expect_reward
            assert "sign_color" in info and "agent_pos" in info
    finally:
        env.close()


# Poses where the agent must act on a cue it can no longer see: (x, z, heading) facing away from it.
CUE_BLIND_POSES = {
    "MiniWorld-CueCorridor-v0": [(2.5, 0.0, 0.0), (3.5, 0.5, 0.0), (4.0, 0.0, math.pi / 4)],
    "MiniWorld-CueTMaze-v0": [(2.5, 0.0, 0.0), (4.0, 0.0, math.pi / 2), (4.0, 0.0, -math.pi / 2)],
    "MiniWorld-CueMatch-v0": [(2.5, 0.0, 0.0), (3.5, 0.5, 0.0), (4.0, 0.0, math.pi / 4)],
}


@pytest.mark.parametrize("env_id", list(CUE_BLIND_POSES))
def test_cue_tasks_show_the_cue_at_the_start_and_hide_it_where_the_choice_is_made(env_id):
    env = envs.make_env(env_id, seed=5)
    assert gym.spec(env_id) is not None and "memory" in envs.list_envs(with_kinds=True)[env_id]
    world = env.unwrapped
    try:
        # Frames by (cue, boxes swapped): only CueMatch swaps, and its blind frames may differ by the
        # boxes' sides but never by the cue.
        start, blind = {}, {}
        for _ in range(16):
            obs, info = env.reset()
            cue, swapped = info["cue"], info.get("boxes_swapped", False)
            np.testing.assert_allclose(info["goal_pos"], [world.boxes[cue].pos[0], world.boxes[cue].pos[2]])
            assert world.box.color == envs.tasks.CUE_COLORS[cue] or world.box.color == "grey"
            world.agent.pos, world.agent.dir = np.array([2.0, 0.0, 0.0]), math.pi  # facing the cue
            start[cue] = world.render_obs()
            blind[cue, swapped] = []
            for x, z, heading in CUE_BLIND_POSES[env_id]:
                world.agent.pos, world.agent.dir = np.array([x, 0.0, z]), heading
                blind[cue, swapped].append(world.render_obs())
        assert set(start) == {0, 1}
        assert not np.array_equal(start[0], start[1])  # the cue is in view at the start...
        sides = {swapped for _, swapped in blind}
        assert sides == ({False, True} if env_id.endswith("CueMatch-v0") else {False})
        for swapped in sides:
            for one, other in zip(blind[0, swapped], blind[1, swapped], strict=True):
                assert np.array_equal(one, other)  # ...and nowhere to be seen where the choice is made
        if len(sides) == 2:  # where the boxes stand shows at the far end
            assert not np.array_equal(blind[0, False][-1], blind[0, True][-1])
        # The box the cue names pays; the other ends the episode with nothing.
        for named, expect_reward in ((True, True), (False, False)):
            _, info = env.reset()
            box = world.boxes[info["cue"] if named else 1 - info["cue"]]
            offset = (
                np.array([0, 0, -np.sign(box.pos[2]) * 2])
                if env_id.endswith("TMaze-v0")
                else np.array([-2.0, 0.0, 0.0])
            )
            world.agent.pos = box.pos + offset
            world.agent.dir = math.atan2(-(box.pos[2] - world.agent.pos[2]), box.pos[0] - world.agent.pos[0])
            _, reward, terminated, truncated, info = env.step(world.actions.move_forward)
            assert terminated and not truncated and (reward > 0) == expect_reward and info["cue"] in (0, 1)
    finally:
        env.close()


def test_an_unguarded_script_gets_a_clear_error(tmp_path):
    script = tmp_path / "unguarded.py"
    script.write_text("from cpc_rl import envs\nvec = envs.make_vec_env('MiniWorld-Hallway-v0', 2)\nvec.close()\n")
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=180, cwd=tmp_path)
    assert result.returncode != 0
    assert 'if __name__ == "__main__":' in result.stderr.strip().splitlines()[-1]


def test_a_missing_renderer_says_what_to_install():
    code = (
        "import sys; sys.modules['pyglet'] = None\n"  # as if pyglet or its GL libraries could not load
        "from cpc_rl import envs\n"
        "try:\n"
        "    envs.make_env('MiniWorld-Hallway-v0')\n"
        "except envs.RendererUnavailableError as error:\n"
        "    print(error)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "could not start an OpenGL renderer" in result.stdout and "apt-get install" in result.stdout


@pytest.mark.parametrize("texture", ["cardboard_1", "airduct_grate_1"])  # stored as RGB, and as RGBA
def test_textures_convert_with_numpy_to_pyglets_exact_bytes(texture):
    envs.make_env("MiniWorld-Hallway-v0").close()  # imports miniworld, with the numpy conversion
    import miniworld
    import pyglet
    from pyglet.image import ImageData

    from cpc_rl.envs.rendering import _convert_with_numpy

    assert ImageData._convert is not ImageData._pyglet_convert
    image = pyglet.image.load(os.path.join(os.path.dirname(miniworld.__file__), "textures", f"{texture}.png"))
    data = image.get_image_data()
    for fmt, sign in [("RGBA", 1), ("RGBA", -1), ("BGRA", 1), ("RGB", 1), ("ARGB", -1), ("L", 1)]:
        pitch = sign * data.width * len(fmt)
        converted = _convert_with_numpy(data, fmt, pitch, ImageData._pyglet_convert)
        assert converted == ImageData._pyglet_convert(data, fmt, pitch), (fmt, sign)
