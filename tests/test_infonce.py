"""info_nce against the formula, its bound, and its estimate of a known mutual information."""

import math

import pytest
import torch

from cpc_rl import info_nce

pytestmark = pytest.mark.fast  # the fast tier: python -m pytest -m fast


def test_matches_written_out_cross_entropy():
    torch.manual_seed(0)
    queries, keys = torch.randn(7, 5), torch.randn(7, 5)
    loss, accuracy = info_nce(queries, keys)
    scores = queries @ keys.T
    expected = torch.stack([-(scores[i, i] - torch.log(torch.exp(scores[i]).sum())) for i in range(7)]).mean()
    expected_accuracy = sum(int(scores[i].argmax() == i) for i in range(7)) / 7
    assert torch.allclose(loss, expected, atol=1e-5)
    assert accuracy.item() == pytest.approx(expected_accuracy)


def test_candidate_mask_restricts_the_softmax_and_always_keeps_the_positive():
    torch.manual_seed(1)
    queries, keys = torch.randn(6, 4), torch.randn(6, 4)
    candidates = torch.rand(6, 6) < 0.5
    candidates.fill_diagonal_(False)  # the positive must be added back by info_nce
    loss, _ = info_nce(queries, keys, candidates)
    scores = queries @ keys.T
    rows = []
    for i in range(6):
        allowed = candidates[i].clone()
        allowed[i] = True
        rows.append(-(scores[i, i] - torch.logsumexp(scores[i][allowed], 0)))
    assert torch.allclose(loss, torch.stack(rows).mean(), atol=1e-5)


def test_bound_never_exceeds_log_n():
    torch.manual_seed(2)
    for n in (2, 16, 128):
        loss, _ = info_nce(torch.randn(n, 8) * 5, torch.randn(n, 8) * 5)
        assert math.log(n) - loss.item() <= math.log(n) + 1e-6
        assert loss.item() >= 0


def test_perfect_critic_scores_accuracy_one():
    keys = torch.eye(10) * 10
    loss, accuracy = info_nce(keys.clone(), keys)
    assert accuracy.item() == 1.0
    assert loss.item() < 1e-3


@pytest.mark.parametrize(
    ("queries", "keys", "match"),
    [
        (torch.randn(3, 4, 2), torch.randn(3, 4), "queries and keys must be"),
        (torch.randn(3, 4), torch.randn(5, 4), "same shape"),
    ],
)
def test_bad_shapes_raise(queries, keys, match):
    with pytest.raises(ValueError, match=match):
        info_nce(queries, keys)


def test_bad_candidate_mask_raises():
    with pytest.raises(ValueError, match="candidates must be a bool tensor of shape"):
        info_nce(torch.randn(3, 2), torch.randn(3, 2), torch.ones(3, 3))


def test_estimates_known_mutual_information_of_correlated_gaussians():
    """x ~ N(0, I), y = rho x + sqrt(1 - rho^2) e: I(x; y) = -d/2 log(1 - rho^2).

    The log density ratio is x^T A y + beta ||y||^2 + (terms in x alone, which cancel in the
    softmax), so queries [A x, beta] against keys [y, ||y||^2] can express the optimal critic.
    """
    torch.manual_seed(3)
    dim, rho, batch = 4, 0.8, 512
    true_mi = -dim / 2 * math.log(1 - rho**2)
    assert true_mi < math.log(batch) / 2
    bilinear = torch.nn.Parameter(torch.zeros(dim, dim))
    beta = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.Adam([bilinear, beta], lr=0.05)

    def sample(n):
        x = torch.randn(n, dim)
        return x, rho * x + math.sqrt(1 - rho**2) * torch.randn(n, dim)

    def critic_inputs(x, y):
        queries = torch.cat([x @ bilinear, beta.expand(len(x), 1)], dim=1)
        keys = torch.cat([y, (y**2).sum(1, keepdim=True)], dim=1)
        return queries, keys

    for _ in range(300):
        loss, _ = info_nce(*critic_inputs(*sample(batch)))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        estimates = [math.log(batch) - info_nce(*critic_inputs(*sample(batch)))[0].item() for _ in range(20)]
    estimate = sum(estimates) / len(estimates)
    assert estimate >= 0.9 * true_mi, (estimate, true_mi)
    assert estimate <= true_mi * 1.05
