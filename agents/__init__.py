"""The agents that run_agent.py trains: networks, presets and their factory.

Names load on first use, so that ``import agents.presets`` stays free of torch.
"""

from __future__ import annotations

if __name__ != "cpc_rl.agents":  # this folder imported by its own name, from a checkout's root
    raise ImportError("cpc-rl's agents/ folder installs as cpc_rl.agents: import it as `from cpc_rl import agents`")


import importlib
from typing import Any

_EXPORTS = {
    "ALGORITHM_CLASSES": "cpc_rl.agents.factory",
    "make_agent": "cpc_rl.agents.factory",
    "FrameEncoder": "cpc_rl.agents.networks",
    "ALGORITHMS": "cpc_rl.agents.presets",
    "AUX_CHOICES": "cpc_rl.agents.presets",
    "PRESETS": "cpc_rl.agents.presets",
    "preset": "cpc_rl.agents.presets",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'agents' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
