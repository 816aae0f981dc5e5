"""The CPC head: multi-step InfoNCE over time-major sequences of embeddings and contexts."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from cpc_rl.infonce import scored_nce

#: Where negatives come from: every valid target of the batch, the anchor's own sequence, or the others.
NEGATIVE_STRATEGIES = ("all", "same_sequence", "other_sequences")


@dataclass
class CPCOutput:
    """
    What :class:`CPCHead` returns.

    :param loss: scalar loss to minimise (differentiable).
    :param accuracy: ``(K,)`` top-1 accuracy of picking the positive at each step ``k``;
        NaN where step ``k`` has no valid pair.
    :param mi_bound: ``(K,)`` InfoNCE lower bound on ``I(x_{t+k}; c_t)`` in nats,
        ``mean(log N_i - L_i)`` over the anchors of step ``k``; NaN where there is no pair.
    :param num_pairs: ``(K,)`` number of valid (anchor, positive) pairs at each step.
    """

    loss: torch.Tensor
    accuracy: torch.Tensor
    mi_bound: torch.Tensor
    num_pairs: torch.Tensor

    @property
    def mean_accuracy(self) -> float:
        """Accuracy averaged over the steps that have pairs (NaN if none has)."""
        return _mean_over_steps_with_pairs(self.accuracy)

    @property
    def mean_mi_bound(self) -> float:
        """MI bound averaged over the steps that have pairs (NaN if none has)."""
        return _mean_over_steps_with_pairs(self.mi_bound)


def _mean_over_steps_with_pairs(values: torch.Tensor) -> float:
    present = ~torch.isnan(values)
    return float(values[present].mean()) if present.any() else math.nan


def _summarise(
    losses: torch.Tensor, correct: torch.Tensor, num_candidates: torch.Tensor, rows: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mean loss, accuracy and MI bound over the valid ``rows`` (last dimension)."""
    count = rows.sum(-1).clamp(min=1)
    mean_loss = torch.where(rows, losses, 0.0).sum(-1) / count
    with torch.no_grad():
        accuracy = (correct * rows).sum(-1) / count
        bound = torch.where(rows, torch.log(num_candidates.float()) - losses, 0.0).sum(-1) / count
    return mean_loss, accuracy, bound


def valid_pairs(episode_starts: torch.Tensor, horizon: int) -> torch.Tensor:
    """
    Which (t, t+k) pairs may be used.

    :param episode_starts: ``(T, B)``, non-zero where a step begins a new episode.
    :param horizon: largest ``k``.
    :return: ``(K, T, B)`` bool, ``[k-1, t, b]`` True iff ``t+k < T`` and no episode
        starts in ``(t, t+k]`` of sequence ``b``.
    """
    starts_so_far = torch.cumsum((episode_starts != 0).long(), dim=0)
    # Counts are >= 0, so a -1 past the end never equals the anchor's count: no pair.
    padded = torch.cat([starts_so_far, starts_so_far.new_full((horizon, starts_so_far.shape[1]), -1)])
    windows = padded.unfold(0, horizon + 1, 1)  # (T, B, K+1): windows[t, b, j] = padded[t+j, b]
    return (windows[..., 1:] == windows[..., :1]).permute(2, 0, 1)


class CPCHead(nn.Module):
    """
    Contrastive Predictive Coding head (van den Oord et al. 2018).

    Predicts ``z_{t+k}`` from ``c_t`` for ``k = 1..horizon`` (``W_k c_t``, one linear map per
    ``k`` stored as one ``(K, context_dim, embed_dim)`` parameter) and scores every prediction
    against the true future embedding and negatives with a dot product (InfoNCE).

    The loss weights every ``k`` equally: it is the mean over the steps that have valid pairs of
    the mean cross-entropy over that step's valid anchors. A pair ``(t, t+k)`` is valid iff
    ``t+k < T`` and no episode starts in ``(t, t+k]``; invalid pairs are neither positives nor
    negatives. A horizon longer than ``T`` is allowed: the steps past ``T`` have no pairs.

    :param embed_dim: size of the per-step embeddings ``z_t`` (the encoder's output).
    :param context_dim: size of the contexts ``c_t`` (the autoregressive model's output).
    :param horizon: number of future steps ``K`` predicted.
    :param negatives: where negatives come from: ``"all"`` (every valid target of the same ``k``
        in the batch), ``"same_sequence"`` (other times of the anchor's sequence) or
        ``"other_sequences"`` (targets of the other sequences).
    :param num_negatives: if set, sample this many negatives (with replacement) per anchor from
        the allowed ones instead of using them all, so cost grows as ``O(N * num_negatives)``
        rather than ``O(N^2)``. Anchors of one sequence share their sample.
    :param action_dim: if set, the head is action-conditioned (CPC|A, Guo et al. 2018): a GRU
        started from ``c_t`` and fed the embedded actions ``a_t .. a_{t+k-1}`` predicts
        ``z_{t+k}``. ``forward`` then needs ``actions``.
    :param action_embed_dim: size of the action embedding of CPC|A.
    :param score_dim: if set, score in a learned ``score_dim``-dimensional projection of ``z``:
        ``f_k = (P z_{t+k})^T W_k c_t``, a rank-``score_dim`` bilinear critic that costs about
        ``embed_dim / score_dim`` times less than scoring in the embedding space (None, the paper).
    """

    def __init__(
        self,
        embed_dim: int,
        context_dim: int,
        horizon: int,
        negatives: str = "all",
        num_negatives: int | None = None,
        action_dim: int | None = None,
        action_embed_dim: int = 32,
        score_dim: int | None = None,
    ) -> None:
        super().__init__()
        for name, value in (("embed_dim", embed_dim), ("context_dim", context_dim), ("horizon", horizon)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1; got {value!r}")
        if score_dim is not None and (not isinstance(score_dim, int) or score_dim < 1):
            raise ValueError(f"score_dim must be None or an integer >= 1; got {score_dim!r}")
        if negatives not in NEGATIVE_STRATEGIES:
            raise ValueError(f"negatives must be one of {NEGATIVE_STRATEGIES}; got {negatives!r}")
        if num_negatives is not None and (not isinstance(num_negatives, int) or num_negatives < 1):
            raise ValueError(f"num_negatives must be None or an integer >= 1; got {num_negatives!r}")
        if action_dim is not None and (not isinstance(action_dim, int) or action_dim < 1):
            raise ValueError(f"action_dim must be None or the number of discrete actions (>= 1); got {action_dim!r}")
        self.embed_dim = embed_dim
        self.context_dim = context_dim
        self.horizon = horizon
        self.negatives = negatives
        self.num_negatives = num_negatives
        self.action_dim = action_dim
        self.score_dim = score_dim or embed_dim
        self.key_projection = None if score_dim is None else nn.Linear(embed_dim, score_dim, bias=False)
        if action_dim is None:
            bound = 1.0 / math.sqrt(context_dim)
            self.predictors = nn.Parameter(torch.empty(horizon, context_dim, self.score_dim).uniform_(-bound, bound))
        else:
            self.action_embedding = nn.Embedding(action_dim, action_embed_dim)
            self.belief_init = nn.Linear(context_dim, context_dim)
            self.belief_gru = nn.GRU(action_embed_dim, context_dim)
            self.belief_readout = nn.Linear(context_dim, self.score_dim)

    def extra_repr(self) -> str:
        return (
            f"embed_dim={self.embed_dim}, context_dim={self.context_dim}, horizon={self.horizon}, "
            f"negatives={self.negatives!r}, num_negatives={self.num_negatives}, action_dim={self.action_dim}, "
            f"score_dim={self.score_dim}"
        )

    def predict(self, contexts: torch.Tensor, actions: torch.Tensor | None = None) -> torch.Tensor:
        """
        Predicted future embeddings.

        :param contexts: ``(T, B, context_dim)``.
        :param actions: ``(T, B)`` discrete actions (CPC|A only).
        :return: ``(K, T, B, score_dim)``: ``[k-1, t]`` predicts ``z_{t+k}`` (its projection if
            ``score_dim`` is set).
        """
        if self.action_dim is None:
            return torch.einsum("tbc,kce->ktbe", contexts, self.predictors)
        num_steps, batch, _ = contexts.shape
        embedded = self.action_embedding(actions.long())
        # Actions past the end only feed predictions of targets past the end (no valid pairs).
        padded = torch.cat([embedded, embedded.new_zeros(self.horizon - 1, batch, embedded.shape[-1])])
        windows = padded.unfold(0, self.horizon, 1)  # (T, B, A, K): windows[t, ..., j] = a_{t+j}
        inputs = windows.permute(3, 0, 1, 2).reshape(self.horizon, num_steps * batch, -1)
        initial = torch.tanh(self.belief_init(contexts.reshape(1, num_steps * batch, -1)))
        beliefs, _ = self.belief_gru(inputs, initial.contiguous())
        return self.belief_readout(beliefs).reshape(self.horizon, num_steps, batch, self.score_dim)

    def forward(
        self,
        embeddings: torch.Tensor,
        contexts: torch.Tensor,
        episode_starts: torch.Tensor,
        actions: torch.Tensor | None = None,
    ) -> CPCOutput:
        """
        Multi-step InfoNCE loss.

        :param embeddings: ``(T, B, embed_dim)`` encoder outputs ``z_t``.
        :param contexts: ``(T, B, context_dim)`` autoregressive outputs ``c_t``.
        :param episode_starts: ``(T, B)``, True (or non-zero) where a step begins an episode.
        :param actions: ``(T, B)`` discrete actions taken at each step (needed iff ``action_dim``).
        :return: a :class:`CPCOutput`.
        """
        self._check_inputs(embeddings, contexts, episode_starts, actions)
        num_steps, batch, _ = embeddings.shape
        valid = valid_pairs(episode_starts, self.horizon)
        predictions = self.predict(contexts, actions)
        keys = embeddings if self.key_projection is None else self.key_projection(embeddings)
        num_pairs = valid.sum(dim=(1, 2))
        reachable = min(self.horizon, num_steps - 1)
        cells = num_steps * batch
        if self.num_negatives is None and reachable * cells * cells <= self.batched_scores_limit:
            step_loss, accuracy, mi_bound = self._score_steps_at_once(predictions, keys, valid)
        else:
            step_loss, accuracy, mi_bound = self._score_step_by_step(predictions, keys, valid)
        has_pairs = num_pairs > 0
        # The mean over the steps with pairs, by masking rather than indexing: no wait for a GPU to
        # say how many there are. With no pair at all it is zero and still connected to the inputs
        # (step losses are finite everywhere), so backward() works and gives zero gradients.
        loss = torch.where(has_pairs, step_loss, 0.0).sum() / has_pairs.sum().clamp(min=1)
        nan = torch.tensor(math.nan, device=embeddings.device)
        return CPCOutput(
            loss=loss,
            accuracy=torch.where(has_pairs, accuracy.detach(), nan),
            mi_bound=torch.where(has_pairs, mi_bound.detach(), nan),
            num_pairs=num_pairs,
        )

    # Above this many scores (K * N * N) the steps are scored one k at a time, on exactly the
    # anchors and targets that fit; below it, all at once, where op count outweighs wasted FLOPs.
    batched_scores_limit = 2**22

    def _score_step_by_step(
        self, predictions: torch.Tensor, embeddings: torch.Tensor, valid: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        num_steps = embeddings.shape[0]
        # One unbind instead of K slices: each slice's backward would zero a (K, T, B, E) buffer.
        step_predictions = predictions.unbind(0)
        zero = None
        summaries = []
        for k in range(1, self.horizon + 1):
            anchors = valid[k - 1, : num_steps - k]  # (T-k, B); also the valid targets, shifted by k
            if k >= num_steps or not anchors.any():
                if zero is None:  # connected to the inputs: a minibatch without pairs still backpropagates
                    zero = (predictions.sum() + embeddings.sum()) * 0.0
                summaries.append((zero, zero.detach(), zero.detach()))
                continue
            queries = step_predictions[k - 1][: num_steps - k]
            targets = embeddings[k:]
            if self.num_negatives is None:
                scored = self._score_all_candidates(queries, targets, anchors)
                rows = anchors.reshape(-1)
            else:
                scored = self._score_sampled_candidates(queries, targets, anchors)
                rows = anchors.T.reshape(-1)
            summaries.append(_summarise(*scored, rows))
        step_loss, accuracy, mi_bound = (torch.stack(column) for column in zip(*summaries, strict=True))
        return step_loss, accuracy, mi_bound

    def _score_steps_at_once(
        self, predictions: torch.Tensor, embeddings: torch.Tensor, valid: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """All ``(K, N, N)`` scores in one matmul; row ``(t, b)``'s positive at step k is ``(t+k, b)``."""
        horizon, num_steps, batch, _ = predictions.shape
        cells = num_steps * batch
        device = embeddings.device
        logits = torch.matmul(predictions.reshape(horizon, cells, -1), embeddings.reshape(cells, -1).T)
        steps = torch.arange(1, horizon + 1, device=device)
        # Target (s, b) is valid at step k iff anchor (s-k, b) is.
        source = torch.arange(num_steps, device=device)[None, :] - steps[:, None]
        target_valid = valid.gather(1, source.clamp(min=0)[..., None].expand(-1, -1, batch)) & (source >= 0)[..., None]
        cell = torch.arange(cells, device=device)
        positive = (cell[None, :] + steps[:, None] * batch).clamp(max=cells - 1)  # (K, N)
        allowed = target_valid.reshape(horizon, 1, cells)
        valid_targets = target_valid.reshape(horizon, cells).float()
        if self.negatives == "all":
            num_candidates = valid_targets.sum(1, keepdim=True).expand(horizon, cells)
        else:
            same = (cell % batch)[:, None] == (cell % batch)[None, :]
            by_sequence = same if self.negatives == "same_sequence" else ~same
            is_positive = cell[None, None, :] == positive[:, :, None]
            allowed = allowed & (by_sequence | is_positive)
            # Counted by a matmul rather than summing the (K, N, N) mask; the positive is counted
            # for "other_sequences" only, as "same_sequence" already holds it.
            num_candidates = valid_targets @ by_sequence.float().T + float(self.negatives == "other_sequences")
        # Masked here, where the mask can broadcast, rather than materialised for scored_nce.
        logits = logits.masked_fill(~allowed, torch.finfo(logits.dtype).min)
        losses, correct, num_candidates = scored_nce(
            logits.reshape(horizon * cells, cells),
            positive.reshape(-1),
            num_candidates=num_candidates.round().long().reshape(-1),
        )
        reshape = (horizon, cells)
        return _summarise(
            losses.view(reshape), correct.view(reshape), num_candidates.view(reshape), valid.reshape(reshape)
        )

    def _score_all_candidates(
        self, queries: torch.Tensor, targets: torch.Tensor, anchors: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Rows and columns are ``(t, b)`` flattened time-major; row ``i``'s positive is column ``i``."""
        num_rows = anchors.numel()
        batch = anchors.shape[1]
        logits = queries.reshape(num_rows, -1) @ targets.reshape(num_rows, -1).T
        positive = torch.arange(num_rows, device=logits.device)
        if self.negatives == "all":
            allowed = None if bool(anchors.all()) else anchors.reshape(1, -1).expand(num_rows, -1)
        else:
            sequence = positive % batch
            same = sequence[:, None] == sequence[None, :]
            by_sequence = same if self.negatives == "same_sequence" else ~same
            allowed = (by_sequence | torch.eye(num_rows, dtype=torch.bool, device=logits.device)) & anchors.reshape(
                1, -1
            )
        return scored_nce(logits, positive, allowed)

    def _score_sampled_candidates(
        self, queries: torch.Tensor, targets: torch.Tensor, anchors: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """
        Each sequence draws ``num_negatives`` targets from the pool its anchors may use; rows are
        ``(b, t)`` flattened sequence-major and column 0 is the positive.
        """
        steps, batch = anchors.shape
        device = queries.device
        flat_targets = targets.reshape(steps * batch, -1)
        column = torch.arange(steps * batch, device=device)
        column_sequence = column % batch
        # The pool: valid target columns sorted by sequence, so each sequence is one block.
        order_key = torch.where(anchors.reshape(-1), column_sequence * steps * batch + column, steps * batch * batch)
        pool = torch.argsort(order_key)[: int(anchors.sum())]
        per_sequence = anchors.sum(dim=0)
        block_start = torch.cumsum(per_sequence, 0) - per_sequence
        pool_size = pool.numel()
        if self.negatives == "same_sequence":
            low, high = block_start, block_start + per_sequence
            excluded_start, excluded_len = block_start, torch.zeros_like(per_sequence)
        else:
            low, high = torch.zeros_like(per_sequence), torch.full_like(per_sequence, pool_size)
            excluded_start = block_start
            excluded_len = per_sequence if self.negatives == "other_sequences" else torch.zeros_like(per_sequence)
        choices = (high - low - excluded_len)[:, None]  # (B, 1)
        draws = (torch.rand(batch, self.num_negatives, device=device) * choices).long()
        position = low[:, None] + torch.minimum(draws, (choices - 1).clamp(min=0))
        position = position + (position >= excluded_start[:, None]) * excluded_len[:, None]
        negative_columns = pool[position.clamp(max=pool_size - 1)]  # (B, M)

        grouped_queries = queries.transpose(0, 1)  # (B, T-k, E)
        positive_logits = (grouped_queries * targets.transpose(0, 1)).sum(-1, keepdim=True)
        negative_logits = torch.bmm(grouped_queries, flat_targets[negative_columns].transpose(1, 2))
        logits = torch.cat([positive_logits, negative_logits], dim=-1).reshape(batch * steps, -1)
        own_column = (
            torch.arange(steps, device=device)[None, :, None] * batch
            + torch.arange(batch, device=device)[:, None, None]
        )
        allowed = (negative_columns[:, None, :] != own_column) & (choices[:, :, None] > 0)
        allowed = torch.cat([torch.ones_like(allowed[..., :1]), allowed], dim=-1).reshape(batch * steps, -1)
        positive = torch.zeros(batch * steps, dtype=torch.long, device=device)
        return scored_nce(logits, positive, allowed)

    def _check_inputs(
        self,
        embeddings: torch.Tensor,
        contexts: torch.Tensor,
        episode_starts: torch.Tensor,
        actions: torch.Tensor | None,
    ) -> None:
        def shape(x: torch.Tensor) -> tuple[int, ...]:
            return tuple(x.shape)

        if embeddings.ndim != 3 or embeddings.shape[-1] != self.embed_dim:
            raise ValueError(f"embeddings must be (T, B, {self.embed_dim}); got {shape(embeddings)}")
        num_steps, batch = embeddings.shape[:2]
        if contexts.ndim != 3 or contexts.shape != (num_steps, batch, self.context_dim):
            raise ValueError(
                f"contexts must be (T, B, context_dim) = ({num_steps}, {batch}, {self.context_dim}) "
                f"to match embeddings; got {shape(contexts)}"
            )
        if episode_starts.shape != (num_steps, batch):
            raise ValueError(
                f"episode_starts must be (T, B) = ({num_steps}, {batch}) to match embeddings; "
                f"got {shape(episode_starts)}"
            )
        if self.action_dim is None:
            return
        if actions is None:
            raise ValueError(
                f"actions are required: this head is action-conditioned (action_dim={self.action_dim}); "
                f"pass the (T, B) = ({num_steps}, {batch}) discrete actions"
            )
        if actions.shape != (num_steps, batch):
            raise ValueError(f"actions must be (T, B) = ({num_steps}, {batch}); got {shape(actions)}")
        if actions.is_floating_point() and not torch.equal(actions, actions.round()):
            raise ValueError("actions must be discrete action indices; got non-integer values")
        if actions.numel() and (int(actions.min()) < 0 or int(actions.max()) >= self.action_dim):
            raise ValueError(
                f"actions must lie in [0, {self.action_dim}); got values in "
                f"[{int(actions.min())}, {int(actions.max())}]"
            )
