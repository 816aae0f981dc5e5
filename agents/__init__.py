"""The agents that run_agent.py trains: networks, presets and their factory."""

from agents.factory import ALGORITHM_CLASSES, make_agent
from agents.networks import FrameEncoder
from agents.presets import ALGORITHMS, AUX_CHOICES, PRESETS, preset

__all__ = ["ALGORITHMS", "ALGORITHM_CLASSES", "AUX_CHOICES", "PRESETS", "FrameEncoder", "make_agent", "preset"]
