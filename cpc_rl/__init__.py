"""cpc-rl: Contrastive Predictive Coding as an auxiliary loss for reinforcement-learning agents.

Names load on first use, so that importing a subpackage (the command line's ``--help``, the
presets) does not import torch.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

# In a checkout, agents/, envs/ and experiments/ sit beside this folder and install as
# cpc_rl.agents, ... (setup.cfg's package_dir). Looking for subpackages in the checkout too makes
# a checkout's run_agent.py run that checkout's code even where another checkout is the installed
# one (a study's frozen worktree beside the main checkout), instead of a mix of both.
_root = Path(__file__).resolve().parent.parent
CHECKOUT_ROOT: Path | None = None
"""The checkout this package runs from, or None when it is installed (a wheel)."""
if (_root / "setup.cfg").is_file() and (_root / "envs" / "__init__.py").is_file():
    CHECKOUT_ROOT = _root
    __path__.append(str(_root))  # noqa: F821 (a package's __path__)

_EXPORTS = {
    "CPCHead": "cpc_rl.head",
    "CPCOutput": "cpc_rl.head",
    "NEGATIVE_STRATEGIES": "cpc_rl.head",
    "valid_pairs": "cpc_rl.head",
    "info_nce": "cpc_rl.infonce",
}

__all__ = ["CPCHead", "CPCOutput", "NEGATIVE_STRATEGIES", "info_nce", "valid_pairs"]
__version__ = "0.2.0.dev0"


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'cpc_rl' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)


def __dir__() -> list[str]:
    # Tab completion and Sphinx's autodoc list the lazy names too.
    return sorted({*globals(), *__all__})
