"""A2C, PPO and RecurrentPPO with the CPC auxiliary loss: drop-in subclasses taking ``cpc_kwargs``."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from sb3_contrib import RecurrentPPO
from stable_baselines3 import A2C, PPO
from stable_baselines3.common.policies import ActorCriticCnnPolicy, ActorCriticPolicy, MultiInputActorCriticPolicy

from cpc_rl.sb3.buffers import (
    SequenceDictRolloutBuffer,
    SequenceRecurrentDictRolloutBuffer,
    SequenceRecurrentRolloutBuffer,
    SequenceRolloutBuffer,
    piece_length,
)
from cpc_rl.sb3.config import SETTINGS_BEFORE_THE_KEY, resolve_cpc_kwargs
from cpc_rl.sb3.policies import (
    CPCActorCriticCnnPolicy,
    CPCActorCriticPolicy,
    CPCMultiInputActorCriticPolicy,
    CPCRecurrentActorCriticCnnPolicy,
    CPCRecurrentActorCriticPolicy,
    CPCRecurrentMultiInputActorCriticPolicy,
    _CPCPolicyMixin,
)

_FEEDFORWARD_POLICIES: dict[Any, type] = {
    "MlpPolicy": CPCActorCriticPolicy,
    "CnnPolicy": CPCActorCriticCnnPolicy,
    "MultiInputPolicy": CPCMultiInputActorCriticPolicy,
    ActorCriticPolicy: CPCActorCriticPolicy,
    ActorCriticCnnPolicy: CPCActorCriticCnnPolicy,
    MultiInputActorCriticPolicy: CPCMultiInputActorCriticPolicy,
}


def _cpc_policy_class(policy: Any, known: dict[Any, type]) -> type:
    if isinstance(policy, type) and issubclass(policy, _CPCPolicyMixin):
        return policy
    if policy in known:
        return known[policy]
    names = sorted(name for name in known if isinstance(name, str))
    raise ValueError(
        f"policy {policy!r} cannot carry a CPC head: use one of {names}, a cpc_rl.sb3 policy class, "
        "or a subclass of one"
    )


def _stored_data(path: Any, custom_objects: Any) -> dict[str, Any]:
    """The ``data`` entry of a saved model (its arguments, not its weights); {} if it has none."""
    import zipfile

    from stable_baselines3.common.save_util import json_to_data, open_path

    try:
        file = open_path(path, "r", verbose=0, suffix="zip")  # as SB3's load finds it
    except (OSError, ValueError):
        return {}  # SB3's own load says what is wrong with the path
    try:
        with zipfile.ZipFile(file) as archive:
            if "data" not in archive.namelist():
                return {}
            return json_to_data(archive.read("data").decode(), custom_objects=custom_objects) or {}
    except (zipfile.BadZipFile, ValueError):
        return {}  # and with the file
    finally:
        if file is path:
            path.seek(0)  # SB3's load reads the caller's file object next
        else:
            file.close()


_FLAT_SPACES = (spaces.Box, spaces.Discrete, spaces.MultiDiscrete, spaces.MultiBinary)


def _check_observation_space(space: spaces.Space) -> None:
    """Refuse what gives CPC no ``z_t``: an empty ``Dict``, or a ``Dict`` holding anything but images and vectors."""
    if not isinstance(space, spaces.Dict):
        return
    if not space.spaces:
        raise ValueError("CPC needs observations; got an empty Dict space")
    other = {key: type(sub).__name__ for key, sub in space.spaces.items() if not isinstance(sub, _FLAT_SPACES)}
    if other:
        raise ValueError(
            f"CPC takes a Dict of images and vectors (Box, Discrete, MultiDiscrete, MultiBinary); keys {other} "
            "are not. Flatten them in a wrapper (e.g. gymnasium.wrappers.FlattenObservation) or set cpc_kwargs=None."
        )


class _CPCAlgorithmMixin:
    """Shared by the CPC algorithms: settings, logging of the CPC figures."""

    cpc_kwargs: dict[str, Any] | None
    cpc_figures: dict[str, float] = {}  # the last update's, as logged

    def _prepare_cpc(
        self, known_policies: dict[Any, type], sequence_length: int | None, sequence_source: str = ""
    ) -> dict[str, Any] | None:
        """
        Resolve ``cpc_kwargs`` and point the policy class and kwargs at the CPC policy.

        :param sequence_source: how the minibatch sequence length follows from the settings (for errors).
        """
        if self.cpc_kwargs is None:
            return None
        # z_t is the features extractor's output, a vector for every space SB3 takes.
        _check_observation_space(self.observation_space)
        settings = resolve_cpc_kwargs(
            self.cpc_kwargs, self.action_space, self.n_steps, sequence_length, sequence_source
        )
        self.cpc_kwargs = settings
        self.policy_class = _cpc_policy_class(self.policy_class, known_policies)
        self.policy_kwargs = {**self.policy_kwargs, "cpc_kwargs": settings}
        return settings

    @classmethod
    def load(cls, path: Any, env: Any = None, device: Any = "auto", custom_objects: Any = None, **kwargs: Any):
        """
        SB3's ``load``. ``policy_kwargs`` given as when the model was made (SB3's idiom) are
        accepted: the ``cpc_kwargs`` the model stores in its policy kwargs are added to them. A
        model saved before a ``cpc_kwargs`` key existed keeps what it was trained with
        (:data:`~cpc_rl.sb3.config.SETTINGS_BEFORE_THE_KEY`: a GRU context, joint CPC), not
        today's default.
        """
        data = _stored_data(path, custom_objects)
        stored_cpc = data.get("cpc_kwargs")
        if isinstance(stored_cpc, dict) and "cpc_kwargs" not in kwargs:
            missing = {key: value for key, value in SETTINGS_BEFORE_THE_KEY.items() if key not in stored_cpc}
            if missing:
                kwargs["cpc_kwargs"] = {**stored_cpc, **missing}
        given = kwargs.get("policy_kwargs")
        if given is not None and "cpc_kwargs" not in given:
            stored = data.get("policy_kwargs", {})
            if "cpc_kwargs" in stored:
                kwargs["policy_kwargs"] = {**given, "cpc_kwargs": stored["cpc_kwargs"]}
        return super().load(path, env=env, device=device, custom_objects=custom_objects, **kwargs)

    def _record_cpc_figures(self) -> None:
        outputs = self.policy.pop_cpc_outputs()
        if not outputs:
            return
        accuracy = torch.stack([output.accuracy for output in outputs]).float().cpu().numpy()
        mi_bound = torch.stack([output.mi_bound for output in outputs]).float().cpu().numpy()
        loss = torch.stack([output.loss for output in outputs]).float().cpu().numpy()
        horizon = accuracy.shape[1]
        with warnings.catch_warnings():  # a step k with no pair in any minibatch is NaN, not an error
            warnings.simplefilter("ignore", RuntimeWarning)
            per_step = np.nanmean(accuracy, axis=0)
            self.cpc_figures = {
                "train/cpc_loss": float(loss.mean()),
                "train/cpc_accuracy": float(np.nanmean(per_step)),
                **{f"train/cpc_accuracy_k{k}": float(per_step[k - 1]) for k in range(1, horizon + 1)},
                "train/cpc_mi_bound": float(np.nanmean(mi_bound)),
            }
        coefs, self.policy.effective_coefs = self.policy.effective_coefs, []
        if coefs and self.cpc_kwargs.get("mode") == "balanced":
            device = self.policy.device
            used = torch.stack([torch.as_tensor(coef, dtype=torch.float32, device=device) for coef in coefs])
            self.cpc_figures["train/cpc_effective_coef"] = float(used.mean())
        gradients = self.policy.gradient_meter.pop()
        if gradients:
            with warnings.catch_warnings():  # a cosine is NaN where one gradient is zero (coef=0, decoupled)
                warnings.simplefilter("ignore", RuntimeWarning)
                for key in dict.fromkeys(key for record in gradients for key in record):
                    values = np.array([record.get(key, np.nan) for record in gradients], dtype=float)
                    self.cpc_figures[f"train/{key}"] = float(np.nanmean(values))
        for key, value in self.cpc_figures.items():
            self.logger.record(key, value)


class _FeedForwardCPCMixin(_CPCAlgorithmMixin):
    def _setup_model(self) -> None:
        batch_size = getattr(self, "batch_size", None)
        requested = (self.cpc_kwargs or {}).get("sequence_length")
        length = requested or (min(self.n_steps, batch_size) if batch_size else self.n_steps)
        source = (
            "It is cpc_kwargs['sequence_length']: raise it or lower the horizon."
            if requested
            else f"It is min(n_steps={self.n_steps}, batch_size={batch_size}): raise both or lower the horizon."
        )
        settings = self._prepare_cpc(_FEEDFORWARD_POLICIES, length, source if batch_size or requested else "")
        if settings is not None and batch_size and batch_size % length:
            raise ValueError(
                f"batch_size ({batch_size}) must be a multiple of the CPC sequence length ({length}) so that "
                "minibatches hold whole sequences; change batch_size or cpc_kwargs['sequence_length']"
            )
        if settings is not None:
            dict_observations = isinstance(self.observation_space, spaces.Dict)
            self.rollout_buffer_class = SequenceDictRolloutBuffer if dict_observations else SequenceRolloutBuffer
            self.rollout_buffer_kwargs = {**self.rollout_buffer_kwargs, "sequence_length": length}
        super()._setup_model()
        if settings is not None:
            self.rollout_buffer.sequence_listener = self.policy.expect_sequences

    def train(self) -> None:
        super().train()
        if self.cpc_kwargs is not None:
            self._record_cpc_figures()


class CPCA2C(_FeedForwardCPCMixin, A2C):
    """
    SB3's A2C with the CPC auxiliary loss (the paper's RL setting). Takes every argument of
    ``A2C`` plus ``cpc_kwargs`` (see :data:`cpc_rl.sb3.config.CPC_DEFAULTS`); ``cpc_kwargs=None``
    is plain A2C. Contexts come from a recurrent network over the encoder's features that the
    head brings (an LSTM; ``cpc_kwargs["context_network"]``).

    :param cpc_kwargs: CPC settings, or None for no auxiliary loss.
    """

    def __init__(self, policy: Any, env: Any, *args: Any, cpc_kwargs: dict[str, Any] | None = None, **kwargs: Any):
        self.cpc_kwargs = cpc_kwargs
        super().__init__(policy, env, *args, **kwargs)


class CPCPPO(_FeedForwardCPCMixin, PPO):
    """
    SB3's PPO with the CPC auxiliary loss. With CPC, minibatches are made of time-contiguous
    pieces of ``cpc_kwargs['sequence_length']`` steps (default ``min(n_steps, batch_size)``), and
    ``normalize_advantage`` normalizes the advantages over the whole rollout instead of each
    minibatch: over shuffled steps (plain PPO) the two are nearly the same, but a minibatch of a
    few pieces in which nothing was rewarded would have its advantages scaled up several times
    (see :meth:`train`).

    :param cpc_kwargs: CPC settings, or None for plain PPO.
    """

    def __init__(self, policy: Any, env: Any, *args: Any, cpc_kwargs: dict[str, Any] | None = None, **kwargs: Any):
        self.cpc_kwargs = cpc_kwargs
        super().__init__(policy, env, *args, **kwargs)

    def train(self) -> None:
        """
        PPO's update. With CPC and ``normalize_advantage``, the rollout's advantages are
        normalized once, over all of it, and PPO's per-minibatch normalization is off for the
        update. Measured on SignMemory rollouts of a trained agent (4 envs x 100 steps, pieces of
        50): per-minibatch normalization rescaled 12% of the piece minibatches by more than 2x
        (up to 4.4x) relative to the rollout, and no shuffled minibatch by more than 1.4x.
        """
        if self.cpc_kwargs is None or not self.normalize_advantage:
            super().train()
            return
        advantages = self.rollout_buffer.advantages
        self.rollout_buffer.advantages = (advantages - advantages.mean()) / (advantages.std(ddof=1) + 1e-8)
        self.normalize_advantage = False
        try:
            super().train()
        finally:
            self.normalize_advantage = True


class CPCRecurrentPPO(_CPCAlgorithmMixin, RecurrentPPO):
    """
    sb3-contrib's RecurrentPPO with the CPC auxiliary loss on the actor LSTM (the paper's
    agent: conv encoder + LSTM). Its policies run each training sequence through the LSTMs in
    one call, also with ``cpc_kwargs=None``, which is RecurrentPPO otherwise.

    :param cpc_kwargs: CPC settings, or None for no auxiliary loss.
    """

    def __init__(self, policy: Any, env: Any, *args: Any, cpc_kwargs: dict[str, Any] | None = None, **kwargs: Any):
        self.cpc_kwargs = cpc_kwargs
        super().__init__(policy, env, *args, **kwargs)

    def _setup_model(self) -> None:
        from sb3_contrib.common.recurrent.policies import (
            RecurrentActorCriticCnnPolicy,
            RecurrentActorCriticPolicy,
            RecurrentMultiInputActorCriticPolicy,
        )

        known = {
            RecurrentActorCriticPolicy: CPCRecurrentActorCriticPolicy,
            RecurrentActorCriticCnnPolicy: CPCRecurrentActorCriticCnnPolicy,
            RecurrentMultiInputActorCriticPolicy: CPCRecurrentMultiInputActorCriticPolicy,
        }
        pieces = piece_length(self.n_steps, self.n_envs, self.batch_size)  # see SequenceRecurrentRolloutBuffer
        source = (
            f"Minibatches are whole pieces of gcd(n_steps={self.n_steps}, batch_size={self.batch_size}) = {pieces} "
            "steps of each env's rollout: lower the horizon, or choose batch_size so that the gcd exceeds it "
            "(a multiple of n_steps gives pieces of n_steps)."
        )
        if self._prepare_cpc(known, pieces, source) is None and self.policy_class in known:
            self.policy_class = known[self.policy_class]  # the faster sequence path, no head
        super()._setup_model()
        if isinstance(self.policy, CPCRecurrentActorCriticPolicy):
            # Unpadded pieces: the policy's LSTM path resets at episode starts within a piece.
            buffer = self.rollout_buffer
            dict_observations = isinstance(self.observation_space, spaces.Dict)
            buffer_class = SequenceRecurrentDictRolloutBuffer if dict_observations else SequenceRecurrentRolloutBuffer
            self.rollout_buffer = buffer_class(
                self.n_steps,
                self.observation_space,
                self.action_space,
                buffer.hidden_state_shape,
                self.device,
                gamma=self.gamma,
                gae_lambda=self.gae_lambda,
                n_envs=self.n_envs,
            )
            if self.cpc_kwargs is not None:
                self.rollout_buffer.sequence_listener = self.policy.expect_sequences

    def train(self) -> None:
        super().train()
        if self.cpc_kwargs is not None:
            self._record_cpc_figures()
