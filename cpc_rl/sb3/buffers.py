"""Rollout buffers whose minibatches keep time order, so that CPC can read them as sequences."""

from __future__ import annotations

from collections.abc import Callable, Generator

import numpy as np
import torch
from sb3_contrib.common.recurrent.buffers import RecurrentDictRolloutBuffer, RecurrentRolloutBuffer
from stable_baselines3.common.buffers import DictRolloutBuffer, RolloutBuffer

from cpc_rl.sb3.policies import SequenceLayout

SequenceListener = Callable[[SequenceLayout], None]

_FLATTENED = ("observations", "actions", "values", "log_probs", "advantages", "returns")


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

    def _flatten(self) -> None:
        """Make every field env-major, as the parent's ``get`` does: sample ``e * n_steps + t``."""
        raise NotImplementedError

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
            self._flatten()
            self.generator_ready = True
        pieces = np.random.permutation(total // length)
        per_batch = batch_size // length
        for first in range(0, len(pieces), per_batch):
            chosen = pieces[first : first + per_batch]
            indices = (chosen[:, None] * length + np.arange(length)).reshape(-1)
            starts = starts_by_env.reshape(-1)[indices].reshape(len(chosen), length).T
            if self.sequence_listener is not None:
                self.sequence_listener(
                    SequenceLayout(len(chosen), length, torch.as_tensor(starts != 0, device=self.device))
                )
            yield self._get_samples(indices)


class SequenceRolloutBuffer(_SequenceSampling, RolloutBuffer):
    """
    A ``RolloutBuffer`` whose minibatches are time-contiguous pieces of trajectories.

    :param sequence_length: steps per piece; must divide ``buffer_size`` (n_steps). None: n_steps.
    """

    def __init__(self, *args, sequence_length: int | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._init_sequences(sequence_length)

    def _flatten(self) -> None:
        for name in _FLATTENED:
            self.__dict__[name] = self.swap_and_flatten(self.__dict__[name])


class SequenceDictRolloutBuffer(_SequenceSampling, DictRolloutBuffer):
    """:class:`SequenceRolloutBuffer` for ``Dict`` observations (SB3's ``DictRolloutBuffer``)."""

    def __init__(self, *args, sequence_length: int | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._init_sequences(sequence_length)

    def _flatten(self) -> None:
        for key, observations in self.observations.items():
            self.observations[key] = self.swap_and_flatten(observations)
        for name in _FLATTENED[1:]:
            self.__dict__[name] = self.swap_and_flatten(self.__dict__[name])


class _RecurrentLayoutListener:
    """Tells ``sequence_listener`` each minibatch's padded layout (sb3-contrib's recurrent buffers)."""

    sequence_listener: SequenceListener | None = None
    seq_start_indices: np.ndarray

    def _get_samples(self, batch_inds: np.ndarray, env_change: np.ndarray, env=None):
        samples = super()._get_samples(batch_inds, env_change, env)
        if self.sequence_listener is not None:
            num_sequences = len(self.seq_start_indices)
            # sb3-contrib pads sequence-major; padding counts as episode starts, so no CPC pair reaches into it.
            padding = samples.mask.reshape(num_sequences, -1).T < 0.5
            self.sequence_listener(SequenceLayout(num_sequences, padding.shape[0], padding))
        return samples


class SequenceRecurrentRolloutBuffer(_RecurrentLayoutListener, RecurrentRolloutBuffer):
    """sb3-contrib's recurrent buffer that tells ``sequence_listener`` each minibatch's padded layout."""


class SequenceRecurrentDictRolloutBuffer(_RecurrentLayoutListener, RecurrentDictRolloutBuffer):
    """:class:`SequenceRecurrentRolloutBuffer` for ``Dict`` observations."""
