"""The CPC path on any device, checked on CPU: no tensor made on another device, no per-minibatch wait.

A GPU run fails where a tensor lands on the CPU beside CUDA ones, and slows where the host reads a
device value (``.item()``, ``bool(tensor)``, a boolean index) in every minibatch. The first is
checked on torch's ``meta`` device (which, like CUDA, refuses to mix with CPU tensors) and by
reading every tensor creation in ``cpc_rl/``; the second by counting such reads during updates.
"""

import ast
import collections
import traceback
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.overrides import TorchFunctionMode

from cpc_rl import envs
from cpc_rl.agents.presets import preset
from cpc_rl.head import CPCHead
from cpc_rl.sb3 import CPCPPO, CPCRecurrentPPO
from cpc_rl.sequences import piece_sizes, run_rnn_with_resets

CPC_RL = Path(__file__).resolve().parent.parent / "cpc_rl"


@pytest.mark.fast
@pytest.mark.parametrize("negatives", ["all", "same_sequence", "other_sequences"])
def test_the_cpc_head_and_context_network_run_on_a_device_that_is_not_the_cpu(negatives):
    with torch.device("meta"):
        head = CPCHead(16, 8, horizon=4, negatives=negatives, score_dim=6)
        context_network = torch.nn.LSTM(16, 8)
        embeddings = torch.randn(10, 3, 16, requires_grad=True)
        starts = torch.zeros(10, 3, dtype=torch.bool)
    host_starts = np.zeros((10, 3), dtype=bool)
    host_starts[[0, 4, 7], [0, 1, 2]] = True
    contexts = run_rnn_with_resets(context_network, embeddings, starts, piece_sizes=piece_sizes(host_starts))
    output = head(embeddings, contexts, starts)
    output.loss.backward()
    assert {output.loss.device.type, output.accuracy.device.type, embeddings.grad.device.type} == {"meta"}


# Factories that make a tensor on the default device unless given one.
FACTORIES = {"zeros", "ones", "empty", "full", "arange", "tensor", "eye", "rand", "randn", "randint", "linspace"}


@pytest.mark.fast
def test_every_tensor_made_in_cpc_rl_names_its_device():
    undeviced = []
    for path in sorted(CPC_RL.rglob("*.py")):
        tree = ast.parse(path.read_text())
        for function in ast.walk(tree):
            if not isinstance(function, ast.FunctionDef) or function.name == "__init__":
                continue  # parameters are made at construction and moved with the module
            for call in ast.walk(function):
                if (
                    isinstance(call, ast.Call)
                    and isinstance(call.func, ast.Attribute)
                    and isinstance(call.func.value, ast.Name)
                    and call.func.value.id == "torch"
                    and call.func.attr in FACTORIES
                    and not any(keyword.arg == "device" for keyword in call.keywords)
                ):
                    undeviced.append(f"{path.relative_to(CPC_RL.parent)}:{call.lineno} torch.{call.func.attr}")
    assert not undeviced, f"tensors made without device=: {undeviced}"


READS = {
    torch.Tensor.item,
    torch.Tensor.tolist,
    torch.Tensor.cpu,
    torch.Tensor.numpy,
    torch.Tensor.__bool__,
    torch.Tensor.__int__,
    torch.Tensor.__float__,
    torch.Tensor.__index__,
    torch.Tensor.nonzero,
    torch.nonzero,
    torch.masked_select,
}


class DeviceReads(TorchFunctionMode):
    """Counts host reads of tensor values, by the file that asked (torch.optim's CPU step counters excluded)."""

    def __init__(self) -> None:
        super().__init__()
        self.by_caller: collections.Counter = collections.Counter()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        is_read = func in READS
        if func is torch.Tensor.__getitem__ and len(args) > 1:
            index = args[1] if isinstance(args[1], tuple) else (args[1],)
            is_read = any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in index)
        if is_read:
            frames = [frame.filename for frame in traceback.extract_stack()[:-1]]
            if not any("/torch/optim/" in name for name in frames):
                caller = next(name for name in reversed(frames) if "/torch/" not in name)
                self.by_caller["cpc_rl" if "/cpc_rl/" in caller else "sb3"] += 1
        return func(*args, **(kwargs or {}))


def reads_per_update(algorithm, policy, cpc_kwargs, n_epochs):
    # Episodes of 10 steps: every minibatch holds episode starts (the context network cuts sequences there).
    vec = envs.make_vec_env("MiniWorld-Hallway-v0", 2, vec_env="dummy", max_episode_steps=10)
    policy_kwargs = preset("ppo", "none")["algo_kwargs"]["policy_kwargs"]
    policy_kwargs["features_extractor_kwargs"] = {"features_dim": 32}
    if algorithm is CPCRecurrentPPO:
        policy_kwargs["lstm_hidden_size"] = 32
    model = algorithm(
        policy, vec, n_steps=40, batch_size=20, n_epochs=n_epochs, cpc_kwargs=cpc_kwargs, seed=0,
        policy_kwargs=policy_kwargs,
    )  # fmt: skip
    try:
        model.learn(80)  # two updates: balanced mode's weight then comes from measured gradients
        counter = DeviceReads()
        with counter:
            model.train()
    finally:
        vec.close()
    return counter.by_caller


@pytest.mark.parametrize(
    ("algorithm", "policy", "cpc_kwargs"),
    [
        (CPCPPO, "CnnPolicy", {"sequence_length": 20, "mode": "balanced"}),
        (CPCRecurrentPPO, "CnnLstmPolicy", {"mode": "balanced"}),
    ],
)
def test_a_cpc_update_reads_the_device_once_per_update_not_per_minibatch(algorithm, policy, cpc_kwargs):
    one_epoch, three_epochs = (reads_per_update(algorithm, policy, cpc_kwargs, n) for n in (1, 3))
    assert 0 < one_epoch["cpc_rl"] == three_epochs["cpc_rl"] <= 8  # the figures logged after the update
    plain_one, plain_three = (reads_per_update(algorithm, policy, None, n) for n in (1, 3))
    # SB3's own reads (its logging, per minibatch) are the same with and without CPC.
    assert three_epochs["sb3"] - one_epoch["sb3"] <= plain_three["sb3"] - plain_one["sb3"]
