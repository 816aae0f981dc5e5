"""Building the agents of the presets."""

from __future__ import annotations

from typing import Any

from stable_baselines3.common.base_class import BaseAlgorithm

from cpc_rl.agents.presets import preset
from cpc_rl.sb3 import CPCA2C, CPCPPO, CPCRecurrentPPO

#: The CPC algorithm class of each preset name.
ALGORITHM_CLASSES: dict[str, type[BaseAlgorithm]] = {
    "a2c": CPCA2C,
    "ppo": CPCPPO,
    "recurrent_ppo": CPCRecurrentPPO,
}


def make_agent(
    algo: str, env: Any, aux: str | None = "cpc", seed: int = 0, precision: str = "float32", **overrides: Any
) -> BaseAlgorithm:
    """
    Build an agent from its preset.

    :param algo: ``"a2c"``, ``"ppo"`` or ``"recurrent_ppo"``.
    :param env: an SB3 ``VecEnv`` (or anything SB3 accepts as env).
    :param aux: ``"cpc"``, ``"cpca"`` (action-conditioned), or ``"none"``/None for no auxiliary loss.
    :param seed: seed of the algorithm.
    :param precision: of the encoder's arithmetic, ``"float32"`` or ``"bfloat16"`` (see
        :class:`agents.networks.FrameEncoder`).
    :param overrides: replace preset hyper-parameters (any argument of the algorithm);
        ``cpc_kwargs`` and ``policy_kwargs`` given as dicts update the preset's.
    :return: the model, not yet trained.
    """
    config = preset(algo, aux)
    kwargs = config["algo_kwargs"]
    cpc_kwargs = config["cpc_kwargs"]
    if "cpc_kwargs" in overrides:
        extra = overrides.pop("cpc_kwargs")
        if cpc_kwargs is None and extra:
            raise ValueError(f"cpc_kwargs {extra} given with aux={aux!r}: choose aux='cpc' or 'cpca'")
        cpc_kwargs = None if cpc_kwargs is None else {**cpc_kwargs, **(extra or {})}
    if "policy_kwargs" in overrides:
        kwargs["policy_kwargs"] = {**kwargs["policy_kwargs"], **overrides.pop("policy_kwargs")}
    if precision != "float32":
        _set_encoder_precision(kwargs["policy_kwargs"], precision, overrides.get("device"))
    policy = overrides.pop("policy", config["policy"])
    kwargs.update(overrides)
    return ALGORITHM_CLASSES[algo](policy, env, cpc_kwargs=cpc_kwargs, seed=seed, **kwargs)


def _set_encoder_precision(policy_kwargs: dict[str, Any], precision: str, device: Any) -> None:
    import torch

    from cpc_rl.agents.networks import FrameEncoder

    if policy_kwargs.get("features_extractor_class") is not FrameEncoder:
        raise ValueError(f"precision={precision!r} needs the preset's FrameEncoder as features extractor")
    on_gpu = device not in (None, "cpu") and torch.cuda.is_available()
    native = torch.cuda.is_bf16_supported() if on_gpu else torch.ops.mkldnn._is_mkldnn_bf16_supported()
    if precision == "bfloat16" and not native:
        raise ValueError(
            "this machine has no native bfloat16 arithmetic (it would be emulated, slower than float32); "
            "use precision='float32'"
        )
    policy_kwargs["features_extractor_kwargs"] = {
        **policy_kwargs.get("features_extractor_kwargs", {}),
        "precision": precision,
    }
