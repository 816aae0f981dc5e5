"""Networks of the paper's agent for MiniWorld's small first-person frames."""

from __future__ import annotations

import torch
from gymnasium import spaces
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import nn

from cpc_rl.agents.presets import PRECISIONS


class FrameEncoder(BaseFeaturesExtractor):
    """
    Conv encoder that maps each frame to one vector ``z_t`` (the CPC paper's ``g_enc``).

    Three strided convolutions sized for 60x80 frames (any size of at least 36x36 works),
    then a linear layer. Images arrive scaled to [0, 1] by SB3 (``normalize_images=True``).

    :param observation_space: a channel-first image ``Box`` (SB3 transposes channel-last images).
    :param features_dim: size of ``z_t``.
    :param precision: ``"float32"``, or ``"bfloat16"`` to run the encoder under autocast (weights
        and ``z_t`` stay float32). The encoder is most of the learner's arithmetic: bfloat16 made
        ``train()`` 1.35x faster on a CPU with AVX512-BF16 (docs/benchmarks.md), at the cost of
        results that differ from float32 runs in the low bits. CPUs without native bfloat16
        emulate it, slowly.
    """

    def __init__(self, observation_space: spaces.Box, features_dim: int = 256, precision: str = "float32") -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}")
        super().__init__(observation_space, features_dim)
        self.precision = precision
        if len(observation_space.shape) != 3:
            raise ValueError(
                f"FrameEncoder needs image observations (C, H, W); got shape {observation_space.shape}. "
                "Use an MlpPolicy for vector observations."
            )
        channels, height, width = observation_space.shape
        if min(height, width) < 36:
            raise ValueError(f"FrameEncoder needs frames of at least 36x36; got {height}x{width}")
        self.convolutions = nn.Sequential(
            nn.Conv2d(channels, 32, kernel_size=8, stride=4),
            nn.ReLU(),
            nn.Conv2d(32, 64, kernel_size=4, stride=2),
            nn.ReLU(),
            nn.Conv2d(64, 64, kernel_size=3, stride=1),
            nn.ReLU(),
            nn.Flatten(),
        )
        with torch.no_grad():
            flat_size = self.convolutions(torch.zeros(1, *observation_space.shape)).shape[1]
        self.projection = nn.Sequential(nn.Linear(flat_size, features_dim), nn.ReLU())

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        if self.precision == "float32":
            return self.projection(self.convolutions(observations))
        with torch.autocast(observations.device.type, dtype=torch.bfloat16):
            return self.projection(self.convolutions(observations)).float()
