"""Linear probes: how much of a quantity a frozen representation holds, linearly.

Fit a linear read-out from features to targets on training episodes and score it on held-out
episodes: R^2 for continuous targets (closed-form ridge regression), accuracy for classes (a
short L2-regularised multinomial logistic fit). Steps of one episode are strongly correlated,
so the split is by episode, never by step.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass
class ProbeResult:
    """
    :param score: R^2 averaged over target dimensions (regression) or accuracy (classes), on
        held-out episodes.
    :param per_target: R^2 of each target dimension (regression) or ``[accuracy]``.
    :param train_size: training steps.
    :param test_size: held-out steps.
    """

    score: float
    per_target: list[float]
    train_size: int
    test_size: int


def split_by_episode(
    episode_ids: np.ndarray, test_fraction: float = 0.3, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """
    Boolean masks ``(train, test)`` over steps, holding out whole episodes.

    :param episode_ids: ``(N,)`` episode of each step.
    :param test_fraction: share of episodes held out (at least one each side).
    """
    episodes = np.unique(episode_ids)
    if len(episodes) < 2:
        raise ValueError(f"a probe needs at least 2 episodes to split by episode; got {len(episodes)}")
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1); got {test_fraction}")
    rng = np.random.default_rng(seed)
    shuffled = rng.permutation(episodes)
    held_out = shuffled[: min(len(episodes) - 1, max(1, round(test_fraction * len(episodes))))]
    test = np.isin(episode_ids, held_out)
    return ~test, test


def _standardise(train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean, std = train.mean(0), train.std(0) + 1e-6
    return (train - mean) / std, (test - mean) / std


def ridge_r2(
    train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray, ridge: float = 1.0
) -> list[float]:
    """Held-out R^2 of each target column of a ridge regression (features standardised on train)."""
    train_x, test_x = _standardise(train_x.astype(np.float64), test_x.astype(np.float64))
    train_x = np.hstack([train_x, np.ones((len(train_x), 1))])
    test_x = np.hstack([test_x, np.ones((len(test_x), 1))])
    penalty = ridge * np.eye(train_x.shape[1])
    penalty[-1, -1] = 0.0  # no penalty on the intercept
    weights = np.linalg.solve(train_x.T @ train_x + penalty, train_x.T @ train_y.astype(np.float64))
    residual = ((test_y - test_x @ weights) ** 2).sum(0)
    total = ((test_y - test_y.mean(0)) ** 2).sum(0)
    return [float(1 - r / t) if t > 0 else 0.0 for r, t in zip(residual, total, strict=True)]


def logistic_accuracy(
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    l2: float = 1e-3,
    iterations: int = 100,
) -> float:
    """Held-out accuracy of an L2-regularised multinomial logistic regression (L-BFGS)."""
    train_x, test_x = _standardise(train_x.astype(np.float32), test_x.astype(np.float32))
    classes = int(max(train_y.max(), test_y.max())) + 1
    inputs, labels = torch.from_numpy(train_x), torch.from_numpy(train_y.astype(np.int64))
    weights = torch.zeros(train_x.shape[1], classes, requires_grad=True, device=inputs.device)
    bias = torch.zeros(classes, requires_grad=True, device=inputs.device)
    optimizer = torch.optim.LBFGS([weights, bias], max_iter=iterations, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(inputs @ weights + bias, labels) + l2 * (weights**2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        predicted = (torch.from_numpy(test_x) @ weights + bias).argmax(1).numpy()
    return float((predicted == test_y).mean())


RIDGES = (0.1, 1.0, 10.0, 100.0, 1000.0, 10000.0)


def choose_ridge(features: np.ndarray, targets: np.ndarray, episode_ids: np.ndarray, seed: int = 0) -> float:
    """The ridge penalty of :data:`RIDGES` with the best R^2 on a split of the training episodes."""
    if len(np.unique(episode_ids)) < 3:
        return 1.0
    fit, check = split_by_episode(episode_ids, 0.3, seed + 1)
    scores = [np.mean(ridge_r2(features[fit], targets[fit], features[check], targets[check], r)) for r in RIDGES]
    return RIDGES[int(np.argmax(scores))]


def linear_probe(
    features: np.ndarray,
    targets: np.ndarray,
    episode_ids: np.ndarray,
    classes: bool = False,
    test_fraction: float = 0.3,
    seed: int = 0,
    ridge: float | None = None,
) -> ProbeResult:
    """
    Fit a linear probe on training episodes and score it on held-out ones.

    :param features: ``(N, D)`` frozen features, one row per step.
    :param targets: ``(N, T)`` continuous targets (or ``(N,)``), or ``(N,)`` class labels if ``classes``.
    :param episode_ids: ``(N,)`` episode of each step (the split is by episode).
    :param classes: targets are integer classes: score is accuracy.
    :param ridge: L2 penalty of the regression (on standardised features); None chooses it among
        :data:`RIDGES` on held-out training episodes (never the test episodes).
    :return: a :class:`ProbeResult`.
    """
    features, targets, episode_ids = np.asarray(features), np.asarray(targets), np.asarray(episode_ids)
    if features.ndim != 2:
        raise ValueError(f"features must be (N, D); got shape {features.shape}")
    if len(targets) != len(features) or len(episode_ids) != len(features):
        raise ValueError(
            f"features, targets and episode_ids need one row per step; got {len(features)}, {len(targets)}, "
            f"{len(episode_ids)}"
        )
    train, test = split_by_episode(episode_ids, test_fraction, seed)
    if classes:
        accuracy = logistic_accuracy(features[train], targets[train], features[test], targets[test])
        return ProbeResult(accuracy, [accuracy], int(train.sum()), int(test.sum()))
    targets = targets.reshape(len(targets), -1)
    if ridge is None:
        ridge = choose_ridge(features[train], targets[train], episode_ids[train], seed)
    per_target = ridge_r2(features[train], targets[train], features[test], targets[test], ridge)
    return ProbeResult(float(np.mean(per_target)), per_target, int(train.sum()), int(test.sum()))
