"""Rollout buffers whose minibatches keep time order, so that CPC can read them as sequences."""

from __future__ import annotations

import math
from collections.abc import Callable, Generator
from typing import NamedTuple

import numpy as np
import torch
from sb3_contrib.common.recurrent.buffers import RecurrentDictRolloutBuffer, RecurrentRolloutBuffer
from sb3_contrib.common.recurrent.type_aliases import (
    RecurrentDictRolloutBufferSamples,
    RecurrentRolloutBufferSamples,
    RNNStates,
)
from stable_baselines3.common.buffers import DictRolloutBuffer, RolloutBuffer

from cpc_rl.sb3.policies import SequenceLayout
from cpc_rl.sequences import piece_sizes

SequenceListener = Callable[[SequenceLayout], None]

_FLATTENED = ("observations", "actions", "values", "log_probs", "advantages", "returns")


class _BoxFields:
    """Env-major flattening (``e * n_steps + t``, as SB3's ``get`` does) of a Box-observation buffer."""

    def _flatten_fields(self) -> None:
        for name in _FLATTENED:
            self.__dict__[name] = self.swap_and_flatten(self.__dict__[name])

    def _observations(self, indices: np.ndarray) -> torch.Tensor:
        return self.to_torch(self.observations[indices])


class _DictFields:
    """:class:`_BoxFields` for ``Dict`` observations."""

    def _flatten_fields(self) -> None:
        for key, observations in self.observations.items():
            self.observations[key] = self.swap_and_flatten(observations)
        for name in _FLATTENED[1:]:
            self.__dict__[name] = self.swap_and_flatten(self.__dict__[name])

    def _observations(self, indices: np.ndarray) -> dict[str, torch.Tensor]:
        return {key: self.to_torch(observations[indices]) for key, observations in self.observations.items()}


class _SequenceSampling:
    """
    Minibatches made of time-contiguous pieces of the envs' trajectories (``sequence_length``
    steps each, in shuffled order) instead of shuffled steps. Before each minibatch it tells
    ``sequence_listener`` (the policy) its layout. Shared by the Box and Dict buffers.
    """

    buffer_size: int
    n_envs: int
    full: bool
    generator_ready: bool
    episode_starts: np.ndarray
    device: torch.device

    def _init_sequences(self, sequence_length: int | None) -> None:
        self.sequence_length = sequence_length or self.buffer_size
        if self.buffer_size % self.sequence_length:
            raise ValueError(
                f"the CPC sequence length ({self.sequence_length}) must divide n_steps ({self.buffer_size}); "
                "set cpc_kwargs['sequence_length'] or batch_size to a divisor of n_steps"
            )
        self.sequence_listener: SequenceListener | None = None

    def get(self, batch_size: int | None = None) -> Generator:
        assert self.full, "the rollout buffer must be full before sampling from it"
        length = self.sequence_length
        total = self.buffer_size * self.n_envs
        batch_size = batch_size or total
        if batch_size % length:
            raise ValueError(
                f"batch_size ({batch_size}) must be a multiple of the CPC sequence length ({length}) "
                "so that each minibatch holds whole sequences"
            )
        starts_by_env = self.episode_starts.T.copy()  # (n_envs, n_steps), before flattening
        if not self.generator_ready:
            self._flatten_fields()
            self.generator_ready = True
        pieces = np.random.permutation(total // length)
        per_batch = batch_size // length
        for first in range(0, len(pieces), per_batch):
            chosen = pieces[first : first + per_batch]
            indices = (chosen[:, None] * length + np.arange(length)).reshape(-1)
            starts = starts_by_env.reshape(-1)[indices].reshape(len(chosen), length).T
            if self.sequence_listener is not None:
                self.sequence_listener(
                    SequenceLayout(
                        len(chosen), length, torch.as_tensor(starts != 0, device=self.device), piece_sizes(starts)
                    )
                )
            yield self._get_samples(indices)


class SequenceRolloutBuffer(_BoxFields, _SequenceSampling, RolloutBuffer):
    """
    A ``RolloutBuffer`` whose minibatches are time-contiguous pieces of trajectories.

    :param sequence_length: steps per piece; must divide ``buffer_size`` (n_steps). None: n_steps.
    """

    def __init__(self, *args, sequence_length: int | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._init_sequences(sequence_length)


class SequenceDictRolloutBuffer(_DictFields, _SequenceSampling, DictRolloutBuffer):
    """:class:`SequenceRolloutBuffer` for ``Dict`` observations (SB3's ``DictRolloutBuffer``)."""

    def __init__(self, *args, sequence_length: int | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._init_sequences(sequence_length)


def piece_length(n_steps: int, n_envs: int, batch_size: int) -> int:
    """Steps per piece of a recurrent minibatch: ``gcd(n_steps, batch_size)``, or all of
    ``n_steps`` when one minibatch takes the whole rollout."""
    return n_steps if batch_size >= n_steps * n_envs else math.gcd(n_steps, batch_size)


class _RecurrentPieceSampling:
    """
    Minibatches of sb3-contrib's recurrent buffers made of whole, unpadded pieces of each env's
    rollout (:func:`piece_length` steps each, in shuffled order), with the LSTM states
    stored at each piece's first step.

    sb3-contrib cuts a minibatch at every episode start and pads each cut to the longest one, so
    the encoder and the losses also run on padding (a third or more of the frames here). The
    policy's LSTM path resets its state at episode starts inside a piece instead (see
    :func:`cpc_rl.sequences.run_rnn_with_resets`): the same outputs, without padded frames.
    Before each minibatch, ``sequence_listener`` (the policy's CPC) gets its layout.
    """

    _STATES = ("hidden_states_pi", "cell_states_pi", "hidden_states_vf", "cell_states_vf")
    sequence_listener: SequenceListener | None = None
    buffer_size: int
    n_envs: int
    full: bool
    generator_ready: bool
    device: torch.device

    def get(self, batch_size: int | None = None) -> Generator:
        assert self.full, "the rollout buffer must be full before sampling from it"
        total = self.buffer_size * self.n_envs
        batch_size = batch_size or total
        length = piece_length(self.buffer_size, self.n_envs, batch_size)
        if not self.generator_ready:
            for name in self._STATES:  # (n_steps, layers, n_envs, dim) -> (n_envs * n_steps, layers, dim)
                self.__dict__[name] = self.swap_and_flatten(self.__dict__[name].swapaxes(1, 2))
            self._flatten_fields()
            self.episode_starts = self.swap_and_flatten(self.episode_starts)
            self.generator_ready = True
        pieces = np.random.permutation(total // length)
        per_batch = max(batch_size // length, 1)
        for first in range(0, len(pieces), per_batch):
            firsts = pieces[first : first + per_batch] * length
            indices = (firsts[:, None] + np.arange(length)).reshape(-1)
            yield self._piece_samples(indices, firsts, length)

    def _piece_samples(self, indices: np.ndarray, firsts: np.ndarray, length: int) -> NamedTuple:
        def states(network: str) -> tuple[torch.Tensor, torch.Tensor]:
            # (pieces, layers, dim) -> (layers, pieces, dim), as nn.LSTM takes it
            names = (f"hidden_states_{network}", f"cell_states_{network}")
            return tuple(self.to_torch(self.__dict__[name][firsts].swapaxes(0, 1)).contiguous() for name in names)

        episode_starts = self.episode_starts[indices]
        if self.sequence_listener is not None:
            starts = episode_starts.reshape(len(firsts), length).T != 0
            on_device = torch.as_tensor(starts, device=self.device)
            layout = SequenceLayout(len(firsts), length, on_device, piece_sizes(starts))
            self.sequence_listener(layout)
        fields = dict(
            observations=self._observations(indices),
            actions=self.to_torch(self.actions[indices]),
            old_values=self.to_torch(self.values[indices].flatten()),
            old_log_prob=self.to_torch(self.log_probs[indices].flatten()),
            advantages=self.to_torch(self.advantages[indices].flatten()),
            returns=self.to_torch(self.returns[indices].flatten()),
            lstm_states=RNNStates(states("pi"), states("vf")),
            episode_starts=self.to_torch(episode_starts.flatten()),
            mask=torch.ones(len(indices), device=self.device),
        )
        return self._samples_class(**fields)


class SequenceRecurrentRolloutBuffer(_BoxFields, _RecurrentPieceSampling, RecurrentRolloutBuffer):
    """sb3-contrib's ``RecurrentRolloutBuffer`` whose minibatches are unpadded pieces of trajectories."""

    _samples_class = RecurrentRolloutBufferSamples


class SequenceRecurrentDictRolloutBuffer(_DictFields, _RecurrentPieceSampling, RecurrentDictRolloutBuffer):
    """:class:`SequenceRecurrentRolloutBuffer` for ``Dict`` observations."""

    _samples_class = RecurrentDictRolloutBufferSamples
