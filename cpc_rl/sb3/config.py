"""The ``cpc_kwargs`` of the CPC algorithms: defaults and validation."""

from __future__ import annotations

from typing import Any

from gymnasium import spaces

from cpc_rl.head import NEGATIVE_STRATEGIES

CPC_DEFAULTS: dict[str, Any] = {
    "coef": 0.1,
    "horizon": 8,
    "negatives": "all",
    "num_negatives": None,
    "action_conditioned": False,
    "context_size": 128,
    "context_network": "lstm",
    "score_dim": None,
    "sequence_length": None,
    "mode": "balanced",
    "max_grad_ratio": 0.5,
}
"""
``coef``: weight of the CPC loss in the actor-critic loss (0 computes and logs it without
training on it). ``horizon``: steps predicted. ``coef=0.1`` and ``horizon=8`` are the presets'
setting since the first study's pilot (``docs/results/rl_study.md``), where the paper's weight
1 and horizon 30 were among the worst of 8 settings on both tasks; both defaults that study 2
confirms share them. ``negatives``, ``num_negatives``:
see :class:`cpc_rl.CPCHead`. ``action_conditioned``: CPC|A (discrete actions only).
``context_size``: hidden size of the recurrent network that gives feed-forward policies their
contexts; ``context_network``: ``"lstm"`` (default: one oneDNN call per sequence on the CPU, about
5 times faster there than a GRU, which torch steps one time step at a time) or ``"gru"`` (the
default until 0.1.0's successor; models saved without the key load with a GRU).
``score_dim``: score in a learned projection of ``z`` of this size (see :class:`cpc_rl.CPCHead`).
``sequence_length``: length of the time-contiguous pieces of the rollout that A2C/PPO minibatches
are made of (default ``min(n_steps, batch_size)``). ``mode``: ``"joint"`` adds ``coef * L_cpc`` to
the actor-critic loss, so the encoder (and the recurrent agent's LSTM) learn from both;
``"decoupled"`` stops the RL gradient at the encoder's output, so the encoder learns from CPC
alone and the heads (and LSTM) from RL as well (Stooke et al. 2021, ATC). With ``coef=0`` a
decoupled encoder never learns: its control is itself at ``coef=0``, not the joint ``control``.
``"balanced"`` is joint with CPC's weight lowered, minibatch by minibatch, so that CPC's gradient
where it enters the shared network (``z_t``; the LSTM output ``c_t`` of the recurrent agent) stays
within ``max_grad_ratio`` times RL's gradient there; ``coef`` is the most it may be. Balanced,
with CPC's gradient at most half of RL's, is the default since study 2's confirmation
(``docs/results/study2``, the recurrent agent); the presets before it trained ``"joint"``. The
feed-forward agent's confirmation (``results/ppo``: ``CPCPPO``, 5 tasks, 10 fresh seeds) found the
same setting safe on all 5 and faster on 2 of its 3 memory tasks; ``CPCA2C`` shares it untested.
"""

#: What a model saved before a ``cpc_kwargs`` key existed trained with: loading fills these in, not
#: today's defaults, so an old model goes on training as it was trained.
SETTINGS_BEFORE_THE_KEY: dict[str, Any] = {"context_network": "gru", "mode": "joint", "max_grad_ratio": 1.0}

#: The recurrent networks that can give feed-forward policies their CPC contexts.
CONTEXT_NETWORKS = ("gru", "lstm")

#: How CPC's gradient meets RL's (``cpc_kwargs["mode"]``, see :data:`CPC_DEFAULTS`).
CPC_MODES = ("joint", "decoupled", "balanced")


def resolve_cpc_kwargs(
    cpc_kwargs: dict[str, Any],
    action_space: spaces.Space | None,
    n_steps: int,
    sequence_length: int | None = None,
    sequence_source: str = "",
) -> dict[str, Any]:
    """
    Fill defaults into ``cpc_kwargs`` and check them.

    :param cpc_kwargs: the user's settings.
    :param action_space: the env's action space (None to skip the action check).
    :param n_steps: rollout length per env.
    :param sequence_length: the longest sequence the head will see, if shorter than ``n_steps``.
    :param sequence_source: where that length comes from and how to change it, for the error message.
    :return: the complete settings.
    :raises ValueError: naming the bad setting and what it needs.
    """
    if not isinstance(cpc_kwargs, dict):
        raise ValueError(f"cpc_kwargs must be a dict or None; got {type(cpc_kwargs).__name__}")
    unknown = sorted(set(cpc_kwargs) - set(CPC_DEFAULTS))
    if unknown:
        raise ValueError(f"unknown cpc_kwargs keys {unknown}; valid keys: {sorted(CPC_DEFAULTS)}")
    settings = {**CPC_DEFAULTS, **cpc_kwargs}
    coef = settings["coef"]
    if isinstance(coef, bool) or not isinstance(coef, (int, float)) or not coef >= 0:
        raise ValueError(f"cpc_kwargs['coef'] must be a number >= 0; got {coef!r}")
    settings["coef"] = float(coef)
    if settings["mode"] not in CPC_MODES:
        raise ValueError(f"cpc_kwargs['mode'] must be one of {CPC_MODES}; got {settings['mode']!r}")
    ratio = settings["max_grad_ratio"]
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not ratio > 0:
        raise ValueError(f"cpc_kwargs['max_grad_ratio'] must be a number > 0; got {ratio!r}")
    settings["max_grad_ratio"] = float(ratio)
    if settings["context_network"] not in CONTEXT_NETWORKS:
        raise ValueError(
            f"cpc_kwargs['context_network'] must be one of {CONTEXT_NETWORKS}; got {settings['context_network']!r}"
        )
    if settings["negatives"] not in NEGATIVE_STRATEGIES:
        raise ValueError(f"cpc_kwargs['negatives'] must be one of {NEGATIVE_STRATEGIES}; got {settings['negatives']!r}")
    for key in ("horizon", "context_size"):
        if not _positive_int(settings[key]):
            raise ValueError(f"cpc_kwargs[{key!r}] must be an integer >= 1; got {settings[key]!r}")
    for key in ("num_negatives", "score_dim", "sequence_length"):
        if settings[key] is not None and not _positive_int(settings[key]):
            raise ValueError(f"cpc_kwargs[{key!r}] must be None or an integer >= 1; got {settings[key]!r}")
    if not isinstance(settings["action_conditioned"], bool):
        raise ValueError(
            f"cpc_kwargs['action_conditioned'] must be True or False; got {settings['action_conditioned']!r}"
        )
    if settings["action_conditioned"] and action_space is not None and not isinstance(action_space, spaces.Discrete):
        raise ValueError(
            f"cpc_kwargs['action_conditioned']=True needs a Discrete action space; got {action_space}. "
            "Set action_conditioned=False for this env."
        )
    longest = min(n_steps, sequence_length) if sequence_length else n_steps
    if settings["horizon"] >= longest:
        what = "n_steps" if longest == n_steps else "the sequence length of a minibatch"
        source = sequence_source or "Lower the horizon or raise n_steps/batch_size."
        raise ValueError(
            f"cpc_kwargs['horizon']={settings['horizon']} must be < {what} ({longest}): no pair "
            f"(t, t+horizon) fits in a sequence. {source}"
        )
    return settings


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1
