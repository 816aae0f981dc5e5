"""Linear probes, probe targets, and the representation protocol end to end."""

import math

import numpy as np
import pytest

from cpc_rl import CPCHead
from cpc_rl.envs.exploration import HEADING_SECTORS, explore, probe_targets
from cpc_rl.experiments.representation import (
    ProtocolConfig,
    run_protocol,
    sample_windows,
    train_representation,
    write_document,
)
from cpc_rl.probe import linear_probe, ridge_r2, split_by_episode


def synthetic(steps_per_episode=40, episodes=20, dim=16, seed=0):
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(steps_per_episode * episodes, dim))
    episode_ids = np.repeat(np.arange(episodes), steps_per_episode)
    return features, episode_ids, rng


def test_probe_recovers_a_linear_target_and_finds_nothing_in_noise():
    features, episode_ids, rng = synthetic()
    weights = rng.normal(size=(16, 3))
    result = linear_probe(features, features @ weights + 0.5, episode_ids)
    assert result.score > 0.99
    assert len(result.per_target) == 3
    noise = linear_probe(features, rng.normal(size=(len(features), 2)), episode_ids)
    assert abs(noise.score) < 0.1


def test_probe_classes_by_accuracy():
    features, episode_ids, rng = synthetic()
    labels = (features[:, 0] > 0).astype(int) + 2 * (features[:, 1] > 0).astype(int)
    assert linear_probe(features, labels, episode_ids, classes=True).score > 0.95
    chance = linear_probe(features, rng.integers(0, 4, len(features)), episode_ids, classes=True).score
    assert chance < 0.4


def test_split_is_by_episode_never_by_step():
    episode_ids = np.repeat(np.arange(10), 7)
    train, test = split_by_episode(episode_ids, test_fraction=0.3, seed=3)
    assert not set(episode_ids[train]) & set(episode_ids[test])
    assert len(set(episode_ids[test])) == 3 and train.sum() + test.sum() == 70
    with pytest.raises(ValueError, match="at least 2 episodes"):
        split_by_episode(np.zeros(5))


def test_a_probe_split_by_step_would_cheat_where_the_episode_split_does_not():
    """Per-episode constants are memorised by a step split, not generalised by an episode split."""
    features, episode_ids, rng = synthetic(episodes=30, dim=40)
    episode_code = rng.normal(size=(30, 40))
    features = features * 0.1 + episode_code[episode_ids]
    target = rng.normal(size=30)[episode_ids]  # an episode-level quantity unrelated to the code
    by_step = rng.random(len(features)) < 0.7
    cheat = ridge_r2(features[by_step], target[by_step, None], features[~by_step], target[~by_step, None])[0]
    assert cheat > 0.7
    assert linear_probe(features, target, episode_ids).score < 0.3


def test_probe_targets_from_ground_truth():
    position = np.array([[1.0, 2.0], [1.0, 2.0]])
    heading = np.array([0.0, math.pi / 2])
    goal = np.array([[3.0, 2.0], [3.0, 2.0]])
    targets = probe_targets(position, heading, goal)
    assert np.allclose(targets["heading"][0], [[0, 1], [1, 0]], atol=1e-6)
    sectors = targets["heading_sector"][0]
    assert targets["heading_sector"][1] and sectors.min() >= 0 and sectors.max() < HEADING_SECTORS
    # Heading 0 faces +x: a goal 2 units along +x is 2 ahead; facing +pi/2 (towards -z) it is 2 to the right.
    assert np.allclose(targets["goal_relative"][0], [[2, 0], [0, -2]], atol=1e-5)
    assert "goal_relative" not in probe_targets(position, heading, None)
    cue, are_classes = probe_targets(position, heading, None, cue=np.array([1, 1]))["cue"]
    assert are_classes and cue.tolist() == [1, 1] and "cue" not in targets


@pytest.mark.parametrize("env_id", ["MiniWorld-CueCorridor-v0", "MiniWorld-SignMemory-v0"])
def test_memory_tasks_give_the_episode_cue_at_every_step(env_id):
    data = explore(env_id, 4, seed=3, max_episode_steps=15)
    assert data.cue is not None and len(data.cue) == len(data)
    for episode in np.unique(data.episode_ids):
        assert len(set(data.cue[data.episode_ids == episode])) == 1  # one cue per episode, also out of view
    assert set(data.cue) <= {0, 1, 2}
    assert explore("MiniWorld-Hallway-v0", 1, seed=3, max_episode_steps=5).cue is None


def test_exploring_policy_collects_whole_episodes_with_ground_truth():
    data = explore("MiniWorld-OneRoom-v0", 3, seed=0, max_episode_steps=30)
    assert data.observations.shape[1:] == (60, 80, 3) and len(data) == len(data.agent_pos)
    assert data.episode_starts.sum() == 3 and set(data.episode_ids) == {0, 1, 2}
    assert data.goal_pos is not None
    # Held actions cover ground: the agent moves well away from where it starts.
    assert np.linalg.norm(data.agent_pos[data.episode_ids == 0] - data.agent_pos[0], axis=1).max() > 1.0


def test_protocol_end_to_end_writes_the_document(tmp_path):
    config = ProtocolConfig(
        tasks=("MiniWorld-OneRoom-v0",),
        seeds=1,
        pretrain_episodes=3,
        probe_episodes=4,
        max_episode_steps=30,
        train_steps=3,
        batch=4,
        window=12,
        horizon=2,
        horizons=(1, 2),
        negatives=("all", "same_sequence"),
        ablation_task="MiniWorld-OneRoom-v0",
    )
    results = run_protocol(config, progress=False)
    # 4 methods + one more horizon + one more negative strategy, each probed on z and c for 4 targets.
    assert len(results) == (4 + 1 + 1) * 2 * 4
    path = write_document(results, config, tmp_path, seconds=60, machine="test machine")
    text = path.read_text()
    assert "## Main comparison" in text and "| OneRoom-v0 | supervised |" in text and "| same_sequence |" in text
    assert (tmp_path / "representation_k.png").stat().st_size > 1000
    assert (tmp_path / "representation.csv").is_file()


def test_cpc_training_raises_the_mutual_information_bound_on_held_out_episodes():
    """CPC learns on MiniWorld frames: its InfoNCE bound on unseen episodes rises above the untrained model's.

    Whether that makes agent position linearly decodable better than a random encoder does is
    not asserted: at budgets that fit a test (and at the protocol's) it did not hold reliably
    across seeds; docs/results/representation.md reports it.
    """
    import torch

    # At 1e-3 the outcome hung on the float order: 0.62 with 2 torch threads, -0.36 with 1.
    config = ProtocolConfig(train_steps=250, batch=8, window=24, learning_rate=5e-4, horizon=4)
    pretrain = explore("MiniWorld-OneRoom-v0", 20, seed=1000, max_episode_steps=60)
    held_out = explore("MiniWorld-OneRoom-v0", 8, seed=2000, max_episode_steps=60)

    def held_out_bound(model, head):
        rng = np.random.default_rng(0)
        with torch.no_grad():
            _, frames, starts, _ = sample_windows(held_out, 16, 24, rng)
            return head(*model(frames, starts), starts).mean_mi_bound

    untrained, _, _ = train_representation("random", pretrain, config, seed=0)
    torch.manual_seed(0)
    untrained_bound = held_out_bound(untrained, CPCHead(256, 256, 4))
    trained, head, _ = train_representation("cpc", pretrain, config, seed=0)
    trained_bound = held_out_bound(trained, head)
    assert trained_bound > untrained_bound + 0.3, (trained_bound, untrained_bound)
