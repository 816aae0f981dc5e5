"""CPCHead: episode masking, negative strategies, gradients, learning, and input errors."""

import math

import pytest
import torch
from torch import nn

from cpc_rl import CPCHead, valid_pairs

pytestmark = pytest.mark.fast  # the fast tier: python -m pytest -m fast


@pytest.fixture(params=["steps_at_once", "step_by_step"])
def scoring(request, monkeypatch):
    """Run a test through both scoring paths of the head (they must agree)."""
    if request.param == "step_by_step":
        monkeypatch.setattr(CPCHead, "batched_scores_limit", 0)
    return request.param


def direct_valid_pairs(starts: torch.Tensor, horizon: int) -> torch.Tensor:
    num_steps, batch = starts.shape
    valid = torch.zeros(horizon, num_steps, batch, dtype=torch.bool)
    for k in range(1, horizon + 1):
        for t in range(num_steps):
            for b in range(batch):
                valid[k - 1, t, b] = t + k < num_steps and not starts[t + 1 : t + k + 1, b].any()
    return valid


def random_inputs(num_steps=12, batch=3, dim=6, start_prob=0.2, seed=0):
    generator = torch.Generator().manual_seed(seed)
    embeddings = torch.randn(num_steps, batch, dim, generator=generator, requires_grad=True)
    contexts = torch.randn(num_steps, batch, dim, generator=generator, requires_grad=True)
    starts = torch.rand(num_steps, batch, generator=generator) < start_prob
    return embeddings, contexts, starts


def test_valid_pairs_and_num_pairs_match_a_direct_count(scoring):
    for seed in range(5):
        _, _, starts = random_inputs(num_steps=15, batch=4, start_prob=0.25, seed=seed)
        expected = direct_valid_pairs(starts, 6)
        assert torch.equal(valid_pairs(starts, 6), expected)
        head = CPCHead(6, 6, horizon=6)
        embeddings, contexts, _ = random_inputs(num_steps=15, batch=4, seed=seed)
        out = head(embeddings, contexts, starts)
        assert out.num_pairs.tolist() == expected.sum(dim=(1, 2)).tolist()


@pytest.mark.parametrize("num_negatives", [None, 4])
@pytest.mark.parametrize("action_dim", [None, 3])
def test_inputs_only_in_pairs_across_episode_starts_get_exactly_zero_gradient(num_negatives, action_dim, scoring):
    embeddings, contexts, starts = random_inputs(num_steps=14, batch=3, start_prob=0.3, seed=4)
    head = CPCHead(6, 6, horizon=4, num_negatives=num_negatives, action_dim=action_dim)
    actions = torch.randint(0, 3, (14, 3)) if action_dim else None
    head(embeddings, contexts, starts, actions).loss.backward()
    valid = direct_valid_pairs(starts, 4)
    is_anchor = valid.any(dim=0)
    is_target = torch.zeros_like(is_anchor)
    for k in range(1, 5):
        is_target[k:] |= valid[k - 1, :-k]
    context_grad = contexts.grad.abs().sum(-1)
    embedding_grad = embeddings.grad.abs().sum(-1)
    assert torch.all(context_grad[~is_anchor] == 0)
    assert torch.all(context_grad[is_anchor] > 0)
    assert torch.all(embedding_grad[~is_target] == 0)
    if num_negatives is None:  # sampled negatives may leave a valid target unused
        assert torch.all(embedding_grad[is_target] > 0)


def test_all_episode_starts_give_zero_loss_without_nan(scoring):
    embeddings, contexts, _ = random_inputs()
    head = CPCHead(6, 6, horizon=3)
    out = head(embeddings, contexts, torch.ones(12, 3, dtype=torch.bool))
    out.loss.backward()
    assert out.loss.item() == 0.0
    assert out.num_pairs.sum().item() == 0
    assert torch.isfinite(embeddings.grad).all() and torch.isfinite(contexts.grad).all()
    assert torch.isfinite(head.predictors.grad).all()
    assert math.isnan(out.mean_accuracy)


def test_horizon_longer_than_sequence_has_no_pairs_beyond_it(scoring):
    embeddings, contexts, _ = random_inputs(num_steps=5)
    out = CPCHead(6, 6, horizon=8)(embeddings, contexts, torch.zeros(5, 3, dtype=torch.bool))
    assert out.num_pairs.tolist() == [12, 9, 6, 3, 0, 0, 0, 0]
    assert torch.isnan(out.accuracy[4:]).all() and not torch.isnan(out.accuracy[:4]).any()
    assert torch.isfinite(out.loss)


def reference_loss(head, embeddings, contexts, starts, allowed_fn):
    """The loss written out anchor by anchor, with candidates chosen by ``allowed_fn``."""
    predictions = head.predict(contexts)
    valid = direct_valid_pairs(starts, head.horizon)
    step_losses = []
    num_steps, batch = starts.shape
    for k in range(1, head.horizon + 1):
        losses = []
        for t in range(num_steps):
            for b in range(batch):
                if not valid[k - 1, t, b]:
                    continue
                keys = [(s, c) for s in range(k, num_steps) for c in range(batch) if valid[k - 1, s - k, c]]
                keys = [(s, c) for s, c in keys if (s, c) == (t + k, b) or allowed_fn(b, c)]
                scores = torch.stack([predictions[k - 1, t, b] @ embeddings[s, c] for s, c in keys])
                positive = keys.index((t + k, b))
                losses.append(torch.logsumexp(scores, 0) - scores[positive])
        if losses:
            step_losses.append(torch.stack(losses).mean())
    return torch.stack(step_losses).mean()


@pytest.mark.parametrize(
    ("negatives", "allowed_fn"),
    [
        ("all", lambda b, c: True),
        ("same_sequence", lambda b, c: b == c),
        ("other_sequences", lambda b, c: b != c),
    ],
)
def test_negative_strategies_use_exactly_the_right_candidates(negatives, allowed_fn, scoring):
    embeddings, contexts, starts = random_inputs(num_steps=8, batch=3, start_prob=0.2, seed=7)
    head = CPCHead(6, 6, horizon=3, negatives=negatives)
    out = head(embeddings, contexts, starts)
    expected = reference_loss(head, embeddings, contexts, starts, allowed_fn)
    assert torch.allclose(out.loss, expected, atol=1e-5)


def test_both_scoring_paths_agree(monkeypatch):
    embeddings, contexts, starts = random_inputs(num_steps=10, batch=3, start_prob=0.2, seed=11)
    for negatives in ("all", "same_sequence", "other_sequences"):
        head = CPCHead(6, 6, horizon=12, negatives=negatives)
        at_once = head(embeddings, contexts, starts)
        monkeypatch.setattr(CPCHead, "batched_scores_limit", 0)
        by_step = head(embeddings, contexts, starts)
        monkeypatch.undo()
        assert torch.allclose(at_once.loss, by_step.loss, atol=1e-5)
        assert torch.allclose(at_once.accuracy, by_step.accuracy, equal_nan=True)
        assert torch.allclose(at_once.mi_bound, by_step.mi_bound, atol=1e-5, equal_nan=True)


@pytest.mark.parametrize("negatives", ["all", "same_sequence", "other_sequences"])
def test_sampled_negatives_come_from_the_allowed_pool(negatives, monkeypatch):
    """Scores tag each key by (time, sequence); sampled logits must only show allowed keys."""
    num_steps, batch, horizon = 9, 4, 2
    starts = torch.zeros(num_steps, batch, dtype=torch.bool)
    starts[5, 1] = True
    head = CPCHead(2, 2, horizon=horizon, negatives=negatives, num_negatives=50)
    seen = []
    original = torch.bmm

    def spy(queries, keys_t):
        seen.append(keys_t.transpose(1, 2).detach().clone())
        return original(queries, keys_t)

    monkeypatch.setattr(torch, "bmm", spy)
    times = torch.arange(num_steps, dtype=torch.float)[:, None].expand(num_steps, batch)
    sequences = torch.arange(batch, dtype=torch.float)[None, :].expand(num_steps, batch)
    embeddings = torch.stack([times, sequences], dim=-1)
    head(embeddings, torch.randn(num_steps, batch, 2), starts)
    valid = direct_valid_pairs(starts, horizon)
    assert len(seen) == horizon
    for k, keys in enumerate(seen, start=1):
        for b in range(batch):
            for time, sequence in keys[b].long().tolist():
                assert valid[k - 1, time - k, sequence], "an invalid target was sampled"
                if negatives == "same_sequence":
                    assert sequence == b
                if negatives == "other_sequences":
                    assert sequence != b
        if negatives == "all":
            assert {s for b in range(batch) for _, s in keys[b].long().tolist()} == set(range(batch))


def test_sampled_negatives_cost_scales_with_num_negatives():
    embeddings, contexts, starts = random_inputs(num_steps=20, batch=4, seed=3)
    out = CPCHead(6, 6, horizon=2, num_negatives=5)(embeddings, contexts, starts)
    mi_upper = math.log(6)
    assert (out.mi_bound[~torch.isnan(out.mi_bound)] <= mi_upper + 1e-6).all()


def test_mi_bound_is_at_most_log_n(scoring):
    embeddings, contexts, starts = random_inputs(num_steps=10, batch=2, start_prob=0.0, seed=5)
    out = CPCHead(6, 6, horizon=2)(embeddings * 10, contexts * 10, starts)
    for k in range(2):
        assert out.mi_bound[k].item() <= math.log(out.num_pairs[k].item()) + 1e-6


def test_gradients_reach_embeddings_contexts_and_head(scoring):
    embeddings, contexts, starts = random_inputs(start_prob=0.0)
    head = CPCHead(6, 6, horizon=3)
    head(embeddings, contexts, starts).loss.backward()
    assert embeddings.grad.abs().sum() > 0
    assert contexts.grad.abs().sum() > 0
    assert head.predictors.grad.abs().sum() > 0


def test_action_conditioned_head_uses_actions():
    embeddings, contexts, starts = random_inputs(start_prob=0.0)
    head = CPCHead(6, 6, horizon=3, action_dim=4)
    actions = torch.randint(0, 4, (12, 3))
    first = head(embeddings, contexts, starts, actions).loss
    second = head(embeddings, contexts, starts, (actions + 1) % 4).loss
    assert not torch.allclose(first, second)


def test_learns_simple_latent_dynamics_better_for_near_future():
    """Unit vectors rotated a fixed amount each step, plus noise: near steps are predictable."""
    torch.manual_seed(0)
    dim, num_steps, batch = 8, 24, 16
    angle = torch.tensor(0.7)
    rotation = torch.eye(dim)
    for i in range(0, dim, 2):
        rotation[i : i + 2, i : i + 2] = torch.tensor(
            [[torch.cos(angle), -torch.sin(angle)], [torch.sin(angle), torch.cos(angle)]]
        )

    def rollout():
        state = nn.functional.normalize(torch.randn(batch, dim), dim=-1)
        states = []
        for _ in range(num_steps):
            states.append(state)
            state = nn.functional.normalize(state @ rotation.T + 0.1 * torch.randn(batch, dim), dim=-1)
        return torch.stack(states) * 3

    gru = nn.GRU(dim, 32)
    head = CPCHead(dim, 32, horizon=8)
    optimizer = torch.optim.Adam([*gru.parameters(), *head.parameters()], lr=3e-3)
    starts = torch.zeros(num_steps, batch, dtype=torch.bool)
    for _ in range(400):
        embeddings = rollout()
        out = head(embeddings, gru(embeddings)[0], starts)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
    with torch.no_grad():
        embeddings = rollout()
        out = head(embeddings, gru(embeddings)[0], starts)
    assert out.accuracy[0] > 0.9, out.accuracy
    assert out.accuracy[7] < out.accuracy[0] - 0.2, out.accuracy


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"horizon": 0}, "horizon must be an integer >= 1"),
        ({"negatives": "nearby"}, "negatives must be one of"),
        ({"num_negatives": 0}, "num_negatives must be None or an integer >= 1"),
        ({"action_dim": 0}, "action_dim must be None"),
    ],
)
def test_bad_construction_raises(kwargs, match):
    with pytest.raises(ValueError, match=match):
        CPCHead(**{"embed_dim": 4, "context_dim": 4, "horizon": 2, **kwargs})


def test_bad_inputs_raise_naming_the_argument():
    head = CPCHead(4, 5, horizon=2)
    z, c, s = torch.randn(6, 2, 4), torch.randn(6, 2, 5), torch.zeros(6, 2, dtype=torch.bool)
    with pytest.raises(ValueError, match=r"embeddings must be \(T, B, 4\); got \(6, 4\)"):
        head(z[:, 0], c, s)
    with pytest.raises(ValueError, match="contexts must be"):
        head(z, c[:5], s)
    with pytest.raises(ValueError, match="contexts must be"):
        head(z, torch.randn(6, 2, 4), s)
    with pytest.raises(ValueError, match="episode_starts must be"):
        head(z, c, s[:, :1])
    conditioned = CPCHead(4, 5, horizon=2, action_dim=3)
    with pytest.raises(ValueError, match="actions are required"):
        conditioned(z, c, s)
    with pytest.raises(ValueError, match=r"actions must lie in \[0, 3\)"):
        conditioned(z, c, s, torch.full((6, 2), 3))
