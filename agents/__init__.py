"""The agents that run_agent.py trains: networks, presets and their factory.

Names load on first use, so that ``import agents.presets`` stays free of torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ALGORITHM_CLASSES": "agents.factory",
    "make_agent": "agents.factory",
    "FrameEncoder": "agents.networks",
    "ALGORITHMS": "agents.presets",
    "AUX_CHOICES": "agents.presets",
    "PRESETS": "agents.presets",
    "preset": "agents.presets",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'agents' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
