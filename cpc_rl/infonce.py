"""InfoNCE: the contrastive loss of CPC (van den Oord et al. 2018, eq. 4)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def scored_nce(
    logits: torch.Tensor,
    positive: torch.Tensor,
    allowed: torch.Tensor | None = None,
    num_candidates: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """
    Per-row InfoNCE from scores that are already computed.

    :param logits: ``(N, M)`` scores of each row's candidates.
    :param positive: ``(N,)`` column of each row's positive.
    :param allowed: optional ``(N, M)`` bool mask of the candidates each row may use; the
        positive must be allowed. Disallowed entries take no part and get zero gradient.
    :param num_candidates: ``(N,)`` number of allowed entries per row, if the caller knows it
        (saves a pass over ``allowed``).
    :return: per-row cross-entropy, per-row correctness (positive scored highest, as float)
        and per-row number of candidates (positive included).
    """
    if allowed is not None:
        # A finite fill (not -inf) keeps rows that end up with nothing allowed free of NaN.
        logits = logits.masked_fill(~allowed, torch.finfo(logits.dtype).min)
        if num_candidates is None:
            num_candidates = allowed.sum(dim=1)
    elif num_candidates is None:
        num_candidates = torch.full_like(positive, logits.shape[1])
    losses = F.cross_entropy(logits.float(), positive, reduction="none")
    correct = (logits.argmax(dim=1) == positive).float()
    return losses, correct, num_candidates


def info_nce(
    queries: torch.Tensor, keys: torch.Tensor, candidates: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """
    InfoNCE loss with dot-product scores: row ``i``'s positive is ``keys[i]``.

    With ``query = W_k c_t`` and ``key = z_{t+k}`` the score is the paper's
    ``log f_k = z_{t+k}^T W_k c_t``.

    :param queries: ``(N, D)``.
    :param keys: ``(N, D)``.
    :param candidates: optional ``(N, N)`` bool mask: ``candidates[i, j]`` lets row ``i`` use
        ``keys[j]`` as a negative. The positive (the diagonal) is always a candidate.
    :return: mean cross-entropy over rows (differentiable) and top-1 accuracy (fraction of rows
        whose positive scores highest).
    """
    if queries.ndim != 2 or keys.ndim != 2:
        raise ValueError(
            f"queries and keys must be (N, D); got queries {tuple(queries.shape)}, keys {tuple(keys.shape)}"
        )
    if queries.shape != keys.shape:
        raise ValueError(
            f"queries and keys must have the same shape; got queries {tuple(queries.shape)}, keys {tuple(keys.shape)}"
        )
    n = queries.shape[0]
    if n == 0:
        raise ValueError("queries must hold at least one row; got N=0")
    if candidates is not None:
        if candidates.shape != (n, n) or candidates.dtype != torch.bool:
            raise ValueError(
                f"candidates must be a bool tensor of shape ({n}, {n}); got "
                f"{candidates.dtype} {tuple(candidates.shape)}"
            )
        candidates = candidates | torch.eye(n, dtype=torch.bool, device=candidates.device)
    positive = torch.arange(n, device=queries.device)
    losses, correct, _ = scored_nce(queries @ keys.T, positive, candidates)
    return losses.mean(), correct.mean()
