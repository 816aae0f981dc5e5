"""The private SB3 / sb3-contrib internals that cpc_rl.sb3 overrides still have the shape it relies on.

setup.cfg bounds both packages to the minor versions tested; when a new release moves one of these,
this test names what changed, so that lifting the bound starts from a clear message, not a
wrong update deep in training.
"""

import inspect

import pytest
from sb3_contrib.common.recurrent.buffers import RecurrentRolloutBuffer
from sb3_contrib.common.recurrent.policies import RecurrentActorCriticPolicy
from sb3_contrib.common.recurrent.type_aliases import RecurrentRolloutBufferSamples
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.policies import ActorCriticPolicy

pytestmark = pytest.mark.fast  # the fast tier: python -m pytest -m fast

EXPECTED_PARAMETERS = [
    (RecurrentActorCriticPolicy._process_sequence, ["features", "lstm_states", "episode_starts", "lstm"]),
    (RecurrentActorCriticPolicy.evaluate_actions, ["self", "obs", "actions", "lstm_states", "episode_starts"]),
    (ActorCriticPolicy.evaluate_actions, ["self", "obs", "actions"]),
    (ActorCriticPolicy.extract_features, ["self", "obs", "features_extractor"]),
    (RolloutBuffer.get, ["self", "batch_size"]),
    (RolloutBuffer._get_samples, ["self", "batch_inds", "env"]),
    (RolloutBuffer.swap_and_flatten, ["arr"]),
    (RecurrentRolloutBuffer.get, ["self", "batch_size"]),
]


@pytest.mark.parametrize(("function", "parameters"), EXPECTED_PARAMETERS, ids=lambda x: getattr(x, "__qualname__", ""))
def test_the_overridden_methods_take_what_cpc_rl_passes(function, parameters):
    found = list(inspect.signature(function).parameters)
    assert found == parameters, (
        f"{function.__qualname__} now takes {found}, not {parameters}: cpc_rl.sb3 overrides or calls it; "
        "check cpc_rl/sb3/policies.py and buffers.py against the new release before lifting setup.cfg's bound"
    )


def test_the_recurrent_samples_and_buffer_hold_the_fields_cpc_rl_fills():
    assert issubclass(RecurrentRolloutBufferSamples, tuple) and hasattr(RecurrentRolloutBufferSamples, "_fields")
    fields = set(RecurrentRolloutBufferSamples._fields)
    needed = {"observations", "actions", "old_values", "old_log_prob", "advantages", "returns", "lstm_states"}
    needed |= {"episode_starts", "mask"}
    assert fields == needed, (
        f"RecurrentRolloutBufferSamples fields are now {sorted(fields)}; cpc_rl/sb3/buffers.py fills {sorted(needed)}"
    )
    source = inspect.getsource(RecurrentRolloutBuffer.reset)
    for name in ("hidden_states_pi", "cell_states_pi", "hidden_states_vf", "cell_states_vf"):
        assert name in source, f"RecurrentRolloutBuffer no longer stores {name}, which cpc_rl/sb3/buffers.py samples"
