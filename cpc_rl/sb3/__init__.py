"""The CPC auxiliary loss in Stable-Baselines3's actor-critic algorithms."""

from cpc_rl.sb3.algorithms import CPCA2C, CPCPPO, CPCRecurrentPPO
from cpc_rl.sb3.buffers import SequenceRecurrentRolloutBuffer, SequenceRolloutBuffer
from cpc_rl.sb3.config import CPC_DEFAULTS, resolve_cpc_kwargs
from cpc_rl.sb3.policies import (
    CPCActorCriticCnnPolicy,
    CPCActorCriticPolicy,
    CPCRecurrentActorCriticCnnPolicy,
    CPCRecurrentActorCriticPolicy,
    SequenceLayout,
)

__all__ = [
    "CPCA2C",
    "CPCPPO",
    "CPC_DEFAULTS",
    "CPCActorCriticCnnPolicy",
    "CPCActorCriticPolicy",
    "CPCRecurrentActorCriticCnnPolicy",
    "CPCRecurrentActorCriticPolicy",
    "CPCRecurrentPPO",
    "SequenceLayout",
    "SequenceRecurrentRolloutBuffer",
    "SequenceRolloutBuffer",
    "resolve_cpc_kwargs",
]
