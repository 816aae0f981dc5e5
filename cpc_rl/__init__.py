"""cpc-rl: Contrastive Predictive Coding as an auxiliary loss for reinforcement-learning agents."""

from cpc_rl.head import NEGATIVE_STRATEGIES, CPCHead, CPCOutput, valid_pairs
from cpc_rl.infonce import info_nce

__all__ = ["CPCHead", "CPCOutput", "NEGATIVE_STRATEGIES", "info_nce", "valid_pairs"]
__version__ = "0.2.0.dev0"
