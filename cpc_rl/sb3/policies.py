"""SB3 actor-critic policies that carry a CPC head and add its loss to the actor-critic loss.

The CPC loss is computed inside ``evaluate_actions`` from the features and LSTM outputs the
policy computes anyway for the actor-critic loss of the minibatch, and joins that loss through
the returned values: :class:`_AddLossGradient` leaves the values unchanged in the forward pass
and, in the backward pass of SB3's own ``loss.backward()``, adds ``coef * d(cpc_loss)``. So the CPC
gradient is part of the same backward pass, gradient clipping and optimizer step as the
actor-critic loss, without touching SB3's training loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from sb3_contrib.common.recurrent.policies import (
    RecurrentActorCriticCnnPolicy,
    RecurrentActorCriticPolicy,
    RecurrentMultiInputActorCriticPolicy,
)
from stable_baselines3.common.policies import ActorCriticCnnPolicy, ActorCriticPolicy, MultiInputActorCriticPolicy
from torch import nn

from cpc_rl.head import CPCHead, CPCOutput
from cpc_rl.sequences import lstm_step, run_rnn_with_resets


class _AddLossGradient(torch.autograd.Function):
    """Identity on ``values``; its backward also sends gradient ``coef`` into ``loss``."""

    @staticmethod
    def forward(ctx: Any, values: torch.Tensor, loss: torch.Tensor, coef: float | torch.Tensor) -> torch.Tensor:
        ctx.coef = coef
        ctx.loss_shape = loss.shape
        return values.clone()

    @staticmethod
    def backward(ctx: Any, grad_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None]:
        # coef is a float, or balanced mode's 0-dim tensor on the model's device (never read back)
        coef = torch.as_tensor(ctx.coef, dtype=grad_values.dtype, device=grad_values.device)
        return grad_values, coef.expand(ctx.loss_shape).clone(), None


class _GradientProbe(torch.autograd.Function):
    """Identity on ``tensor``; its backward hands the gradient to ``record`` on its way through."""

    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor, record: Any) -> torch.Tensor:
        ctx.record = record
        return tensor.clone()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        ctx.record(grad)
        return grad, None


class GradientMeter:
    """
    What the CPC and RL gradients do to a representation both losses use (``z_t``, and ``c_t`` of
    the recurrent agent's shared LSTM), per minibatch, at no extra backward pass: a probe on the
    CPC branch catches CPC's gradient, a hook on the tensor catches the total, and RL's is the
    difference. Reported as norms (summed over the minibatch) and their cosine.
    """

    def __init__(self) -> None:
        # Tensors until popped, so that measuring never waits for a GPU (a float() per minibatch would).
        self.records: list[dict[str, torch.Tensor]] = []
        self.latest: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # name -> (CPC's, RL's norm), last minibatch
        self._pending: dict[str, dict[str, torch.Tensor]] = {}

    def watch(self, tensor: torch.Tensor, name: str) -> torch.Tensor:
        """Return the tensor CPC must use instead of ``tensor``; the RL loss keeps using ``tensor``."""
        if not tensor.requires_grad:
            return tensor
        tensor.register_hook(lambda grad: self._arrive(name, "total", grad))
        return _GradientProbe.apply(tensor, lambda grad: self._arrive(name, "cpc", grad))

    def _arrive(self, name: str, part: str, grad: torch.Tensor) -> None:
        parts = self._pending.setdefault(name, {})
        parts[part] = grad.detach()
        if len(parts) < 2:
            return
        del self._pending[name]
        cpc, rl = parts["cpc"].flatten().float(), (parts["total"] - parts["cpc"]).flatten().float()
        cpc_norm, rl_norm = cpc.norm(), rl.norm()
        self.latest[name] = (cpc_norm, rl_norm)
        self.records.append(
            {
                f"cpc_grad_norm_{name}": cpc_norm,
                f"rl_grad_norm_{name}": rl_norm,
                f"grad_cosine_{name}": (cpc @ rl) / (cpc_norm * rl_norm),  # NaN where either is zero
            }
        )

    def pop(self) -> list[dict[str, float]]:
        """The records since the last call, as numbers (read back from the device in one transfer)."""
        records, self.records, self._pending = self.records, [], {}
        if not records:
            return []
        numbers = iter(torch.stack([value.float() for record in records for value in record.values()]).tolist())
        return [{key: next(numbers) for key in record} for record in records]


@dataclass
class SequenceLayout:
    """
    How the flat minibatch handed to ``evaluate_actions`` splits into sequences.

    Samples are sequence-major: sample ``b * num_steps + t`` is step ``t`` of sequence ``b``.

    :param num_sequences: ``B``.
    :param num_steps: ``T``.
    :param episode_starts: ``(T, B)`` bool; padding is marked as episode starts.
    :param piece_sizes: ``(pieces, longest)`` of the sequences cut at episode starts, counted on
        the host by the buffer (:func:`cpc_rl.sequences.piece_sizes`) so that the device is not asked.
    """

    num_sequences: int
    num_steps: int
    episode_starts: torch.Tensor
    piece_sizes: tuple[int, int] | None = None

    def time_major(self, flat: torch.Tensor) -> torch.Tensor:
        """``(B * T, ...)`` sequence-major samples to ``(T, B, ...)``."""
        return flat.reshape(self.num_sequences, self.num_steps, *flat.shape[1:]).transpose(0, 1)


class _CPCPolicyMixin:
    """What the feed-forward and recurrent CPC policies share."""

    cpc_kwargs: dict[str, Any] | None
    cpc_head: CPCHead

    def _init_cpc_state(self, cpc_kwargs: dict[str, Any] | None) -> None:
        self.cpc_kwargs = cpc_kwargs
        self._pending_layout: SequenceLayout | None = None
        self._stashed_features: torch.Tensor | None = None
        self._cpc_outputs: list[CPCOutput] = []
        self.gradient_meter = GradientMeter()
        # CPC's weight in each minibatch since the last log (0-dim tensors in balanced mode)
        self.effective_coefs: list[float | torch.Tensor] = []

    @property
    def has_cpc(self) -> bool:
        return self.cpc_kwargs is not None

    @property
    def decoupled(self) -> bool:
        """The encoder learns from CPC only: the RL losses see its output detached (ATC's choice)."""
        return self.has_cpc and self.cpc_kwargs.get("mode", "joint") == "decoupled"

    # Where CPC's gradient enters the network that RL also trains, and the two can be told apart:
    # z_t for feed-forward policies (the context network over z is CPC's own), c_t for the recurrent agent.
    _balance_at = "z"

    def _effective_coef(self) -> float | torch.Tensor:
        """
        ``coef``, or in ``balanced`` mode at most what keeps CPC's gradient at the shared
        representation within ``max_grad_ratio`` times RL's, judged on the previous minibatch
        (CPC's gradient grows linearly with the weight, so one measurement sets the next weight).
        The balanced weight stays a tensor on the model's device: reading it would wait for a GPU.
        """
        coef = self.cpc_kwargs["coef"]
        if self.cpc_kwargs.get("mode") != "balanced" or coef == 0:
            return coef
        if self._balance_at not in self.gradient_meter.latest:
            return coef
        cpc_norm, rl_norm = self.gradient_meter.latest[self._balance_at]
        used = torch.as_tensor(getattr(self, "_last_coef", coef), dtype=cpc_norm.dtype, device=cpc_norm.device)
        capped = torch.clamp(self.cpc_kwargs["max_grad_ratio"] * rl_norm * used / cpc_norm, max=coef)
        return torch.where((cpc_norm == 0) | (used == 0), coef, capped)

    def _make_cpc_head(self, context_dim: int) -> CPCHead:
        settings = self.cpc_kwargs
        action_dim = int(self.action_space.n) if settings["action_conditioned"] else None
        return CPCHead(
            int(self.features_dim),  # numpy int64 for MultiDiscrete observations
            context_dim,
            settings["horizon"],
            negatives=settings["negatives"],
            num_negatives=settings["num_negatives"],
            action_dim=action_dim,
            score_dim=settings["score_dim"],
        )

    def expect_sequences(self, layout: SequenceLayout) -> None:
        """Called by the rollout buffer before it yields a minibatch laid out as ``layout``."""
        self._pending_layout = layout

    def _take_layout(self) -> SequenceLayout | None:
        layout, self._pending_layout = self._pending_layout, None
        return layout if self.has_cpc else None

    def extract_features(self, obs: Any, *args: Any, **kwargs: Any) -> Any:
        features = super().extract_features(obs, *args, **kwargs)
        if self._stashed_features is None and self._collecting:
            self._stashed_features = features if isinstance(features, torch.Tensor) else features[0]
            if self.decoupled:
                detached = [part.detach() for part in (features if isinstance(features, tuple) else (features,))]
                return tuple(detached) if isinstance(features, tuple) else detached[0]
        return features

    _collecting = False

    def _cpc_loss(
        self, layout: SequenceLayout, features: torch.Tensor, contexts: torch.Tensor, actions: torch.Tensor
    ) -> torch.Tensor:
        starts = layout.episode_starts.to(features.device)
        conditioned_actions = layout.time_major(actions.long().flatten()) if self.cpc_head.action_dim else None
        output = self.cpc_head(layout.time_major(features), contexts, starts, conditioned_actions)
        self._cpc_outputs.append(CPCOutput(output.loss.detach(), output.accuracy, output.mi_bound, output.num_pairs))
        return output.loss

    def _join(self, values: torch.Tensor, cpc_loss: torch.Tensor) -> torch.Tensor:
        self._last_coef = coef = self._effective_coef()
        self.effective_coefs.append(coef)
        if isinstance(coef, (int, float)) and coef == 0:
            # `control`: the head computes and logs, but joins no gradient. Zero gradients would
            # still enter the clipping norm and shift its rounding, and so every later update.
            return values
        return _AddLossGradient.apply(values, cpc_loss, coef)

    def pop_cpc_outputs(self) -> list[CPCOutput]:
        """The CPC outputs of the minibatches since the last call (for logging)."""
        outputs, self._cpc_outputs = self._cpc_outputs, []
        return outputs

    def _rebuild_optimizer(self, lr_schedule: Any) -> None:
        self.optimizer = self.optimizer_class(self.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data["cpc_kwargs"] = self.cpc_kwargs
        return data


class CPCActorCriticPolicy(_CPCPolicyMixin, ActorCriticPolicy):
    """
    SB3's ``ActorCriticPolicy`` with a CPC head. ``z_t`` is the features extractor's output and
    ``c_t`` the output of an LSTM (or GRU: ``cpc_kwargs["context_network"]``) over ``z``, the
    head's own context network, reset at episode starts.

    :param cpc_kwargs: resolved CPC settings (see :data:`cpc_rl.sb3.config.CPC_DEFAULTS`), or None
        for no head.
    """

    def __init__(self, *args: Any, cpc_kwargs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        self._init_cpc_state(cpc_kwargs)
        super().__init__(*args, **kwargs)

    def _build(self, lr_schedule: Any) -> None:
        super()._build(lr_schedule)
        if not self.has_cpc:
            return
        # A forked RNG keeps every other initial weight and later random draw as without CPC.
        with torch.random.fork_rng(devices=[]):
            # Models saved before the choice existed hold no "context_network": theirs is a GRU.
            network = nn.LSTM if self.cpc_kwargs.get("context_network", "gru") == "lstm" else nn.GRU
            self.cpc_context = network(int(self.features_dim), self.cpc_kwargs["context_size"])
            self.cpc_head = self._make_cpc_head(self.cpc_kwargs["context_size"])
        self._rebuild_optimizer(lr_schedule)

    def evaluate_actions(self, obs: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, ...]:
        layout = self._take_layout()
        if layout is None:
            return super().evaluate_actions(obs, actions)
        self._collecting, self._stashed_features = True, None
        try:
            values, log_prob, entropy = super().evaluate_actions(obs, actions)
        finally:
            self._collecting = False
        features = self.gradient_meter.watch(self._stashed_features, "z")
        embeddings = layout.time_major(features)
        starts = layout.episode_starts.to(embeddings.device)
        contexts = run_rnn_with_resets(self.cpc_context, embeddings, starts, piece_sizes=layout.piece_sizes)
        loss = self._cpc_loss(layout, features, contexts, actions)
        self._stashed_features = None
        return self._join(values, loss), log_prob, entropy


class CPCActorCriticCnnPolicy(CPCActorCriticPolicy, ActorCriticCnnPolicy):
    """:class:`CPCActorCriticPolicy` with SB3's CNN defaults (``NatureCNN``)."""


class CPCMultiInputActorCriticPolicy(CPCActorCriticPolicy, MultiInputActorCriticPolicy):
    """:class:`CPCActorCriticPolicy` for ``Dict`` observations: ``z_t`` is SB3's ``CombinedExtractor`` output."""


class CPCRecurrentActorCriticPolicy(_CPCPolicyMixin, RecurrentActorCriticPolicy):
    """
    sb3-contrib's ``RecurrentActorCriticPolicy`` with a CPC head on the actor LSTM (``c_t``, as in
    the paper) over the features extractor's output (``z_t``).

    Training runs each minibatch's sequences through the LSTMs in one call per LSTM, resetting
    the state at episode starts without a Python loop over time steps.

    :param cpc_kwargs: resolved CPC settings, or None for no head (the faster LSTM path stays).
    """

    _balance_at = "c"

    def __init__(self, *args: Any, cpc_kwargs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        self._init_cpc_state(cpc_kwargs)
        self._whole_sequences = False
        self._minibatch_pieces: tuple[int, int] | None = None  # the buffer's count for this minibatch
        self._actor_outputs: torch.Tensor | None = None
        super().__init__(*args, **kwargs)

    def _build(self, lr_schedule: Any) -> None:
        super()._build(lr_schedule)
        if self.has_cpc:
            # sb3-contrib rebuilds the optimizer over all parameters once its LSTMs exist.
            with torch.random.fork_rng(devices=[]):
                self.cpc_head = self._make_cpc_head(self.lstm_output_dim)

    def _process_sequence(
        self,
        features: torch.Tensor,
        lstm_states: tuple[torch.Tensor, torch.Tensor],
        episode_starts: torch.Tensor,
        lstm: nn.LSTM,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        if not self._whole_sequences:
            if features.shape[0] == lstm_states[0].shape[1]:  # one step per env: acting
                keep = (1.0 - episode_starts).view(1, -1, 1)
                return lstm_step(lstm, features, (lstm_states[0] * keep, lstm_states[1] * keep))
            return RecurrentActorCriticPolicy._process_sequence(features, lstm_states, episode_starts, lstm)
        num_sequences = lstm_states[0].shape[1]
        layout = SequenceLayout(num_sequences, features.shape[0] // num_sequences, episode_starts)
        inputs = layout.time_major(features)
        starts = layout.time_major(episode_starts)
        outputs = run_rnn_with_resets(lstm, inputs, starts, lstm_states, piece_sizes=self._minibatch_pieces)
        if lstm is self.lstm_actor and self._collecting:
            self._actor_outputs = outputs
        # Training discards the final states: only the outputs are computed.
        return outputs.transpose(0, 1).reshape(-1, outputs.shape[-1]), lstm_states

    def evaluate_actions(
        self, obs: torch.Tensor, actions: torch.Tensor, lstm_states: Any, episode_starts: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        pending = self._pending_layout
        self._minibatch_pieces = None if pending is None else pending.piece_sizes
        layout = self._take_layout()
        self._whole_sequences = True
        self._collecting, self._stashed_features = layout is not None, None
        try:
            values, log_prob, entropy = super().evaluate_actions(obs, actions, lstm_states, episode_starts)
        finally:
            self._whole_sequences = self._collecting = False
        if layout is None:
            return values, log_prob, entropy
        features = self.gradient_meter.watch(self._stashed_features, "z")
        if self.decoupled:
            # The RL losses ran the actor LSTM over the detached features; CPC's contexts come from
            # the same LSTM over the features themselves, so CPC trains the encoder through c_t too.
            starts = layout.time_major(episode_starts)
            contexts = run_rnn_with_resets(
                self.lstm_actor, layout.time_major(features), starts, lstm_states.pi, piece_sizes=layout.piece_sizes
            )
        else:
            contexts = self.gradient_meter.watch(self._actor_outputs, "c")
        loss = self._cpc_loss(layout, features, contexts, actions)
        self._stashed_features = self._actor_outputs = None
        return self._join(values, loss), log_prob, entropy


class CPCRecurrentActorCriticCnnPolicy(CPCRecurrentActorCriticPolicy, RecurrentActorCriticCnnPolicy):
    """:class:`CPCRecurrentActorCriticPolicy` with the CNN defaults (``NatureCNN``)."""


class CPCRecurrentMultiInputActorCriticPolicy(CPCRecurrentActorCriticPolicy, RecurrentMultiInputActorCriticPolicy):
    """:class:`CPCRecurrentActorCriticPolicy` for ``Dict`` observations (``CombinedExtractor`` by default)."""
