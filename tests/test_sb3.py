"""cpc_rl.sb3 on real MiniWorld: parity with the parents, CPC gradients, logging, save/load, errors."""

import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
import torch
from sb3_contrib import RecurrentPPO
from stable_baselines3 import A2C, PPO
from stable_baselines3.common.logger import configure
from stable_baselines3.common.vec_env import DummyVecEnv

from cpc_rl import envs
from cpc_rl.agents import FrameEncoder, make_agent
from cpc_rl.agents.presets import PRESETS
from cpc_rl.sb3 import CPC_DEFAULTS, CPCA2C, CPCPPO, CPCRecurrentPPO
from cpc_rl.sb3.buffers import piece_length
from cpc_rl.sequences import lstm_step

SMALL = {"features_extractor_class": FrameEncoder, "features_extractor_kwargs": {"features_dim": 32}}
CASES = {
    "a2c": (CPCA2C, A2C, "CnnPolicy", {"n_steps": 12}),
    "ppo": (CPCPPO, PPO, "CnnPolicy", {"n_steps": 12, "batch_size": 12, "n_epochs": 2}),
    "recurrent_ppo": (
        CPCRecurrentPPO,
        RecurrentPPO,
        "CnnLstmPolicy",
        {"n_steps": 12, "batch_size": 12, "n_epochs": 2},
    ),
}
CPC = {"horizon": 4, "context_size": 16, "mode": "joint"}  # the mechanics below are joint CPC's, whatever the default


def vec_env(n_envs=2, env_id="MiniWorld-Hallway-v0", **kwargs):
    return envs.make_vec_env(env_id, n_envs, seed=0, vec_env="dummy", obs_size=(40, 40), **kwargs)


def build(algo, cpc_kwargs, parent=False, seed=0, **kwargs):
    cpc_class, parent_class, policy, algo_kwargs = CASES[algo]
    policy_kwargs = dict(SMALL)
    if algo == "recurrent_ppo":
        policy_kwargs["lstm_hidden_size"] = 16
    settings = {**algo_kwargs, "policy_kwargs": policy_kwargs, "seed": seed, "device": "cpu", **kwargs}
    env = settings.pop("env", None) or vec_env()
    if parent:
        model = parent_class(policy, env, **settings)
    else:
        model = cpc_class(policy, env, cpc_kwargs=cpc_kwargs, **settings)
    model.set_logger(configure(None, []))
    return model


def learn_updates(model, updates=2):
    model.learn(model.n_steps * model.n_envs * updates)
    return {name: tensor.detach().clone() for name, tensor in model.policy.state_dict().items()}


@pytest.mark.fast
def test_the_presets_train_cpc_as_the_library_defaults():
    training = ("coef", "horizon", "mode", "max_grad_ratio")
    for algo, preset in PRESETS.items():
        settings = {key: preset["cpc_kwargs"][key] for key in training}
        assert settings == {key: CPC_DEFAULTS[key] for key in training}, f"{algo}: presets and CPC_DEFAULTS differ"
        assert preset["cpc_kwargs"]["score_dim"] == 64  # cheaper scores than z's 256 dimensions


@pytest.mark.fast
@pytest.mark.parametrize("algo", ["a2c", "ppo"])
def test_without_cpc_equals_the_parent_bit_for_bit(algo):
    ours = learn_updates(build(algo, None))
    parent = learn_updates(build(algo, None, parent=True))
    assert ours.keys() == parent.keys()
    assert all(torch.equal(ours[name], parent[name]) for name in ours)


def test_recurrent_control_trains_the_agent_exactly_as_without_cpc():
    """The `control` arm (head at weight 0) differs from `none` only by what the head computes aside."""
    control = learn_updates(build("recurrent_ppo", {**CPC, "coef": 0.0}), updates=3)
    plain = learn_updates(build("recurrent_ppo", None), updates=3)
    head = [name for name in control if name not in plain]
    assert head and all(name.startswith("cpc") for name in head)
    assert all(torch.equal(control[name], plain[name]) for name in plain)


def test_control_at_the_presets_trains_the_recurrent_agent_bit_for_bit_as_none():
    """
    With the presets (gradient clipping active, 4 envs, minibatches of 200), zero CPC gradients
    once changed the rounding of the clipping norm, and so every update after the first: study 2's
    `control` leaned below `none` with nothing but that chaos between them.
    """
    from cpc_rl.agents import make_agent

    def trained(aux, cpc_kwargs):
        env = envs.make_vec_env("MiniWorld-Hallway-v0", 4, seed=3, vec_env="dummy")
        model = make_agent("recurrent_ppo", env, aux=aux, seed=3, cpc_kwargs=cpc_kwargs)
        model.set_logger(configure(None, []))
        model.learn(800)
        env.close()
        return {name: value for name, value in model.policy.state_dict().items() if not name.startswith("cpc")}

    plain, control = trained("none", None), trained("cpc", {"coef": 0.0})
    assert all(torch.equal(control[name], plain[name]) for name in plain)


def test_recurrent_without_cpc_equals_the_parent_to_float_tolerance():
    # One minibatch of the whole rollout: sb3-contrib's padded sequences and our unpadded pieces
    # then hold the same steps, so the losses and updates must agree (smaller minibatches group
    # the steps differently by design). SGD: Adam's first steps would turn a float rounding of a
    # near-zero gradient into a full step of either sign.
    sgd = {**SMALL, "lstm_hidden_size": 16, "optimizer_class": torch.optim.SGD}
    ours = learn_updates(build("recurrent_ppo", None, batch_size=24, policy_kwargs=sgd))
    parent = learn_updates(build("recurrent_ppo", None, parent=True, batch_size=24, policy_kwargs=sgd))
    assert ours.keys() == parent.keys()
    for name in ours:
        assert torch.allclose(ours[name], parent[name], atol=1e-6), name


def test_recurrent_minibatches_are_unpadded_pieces_with_their_stored_states():
    model = build("recurrent_ppo", {"horizon": 4}, n_steps=12, batch_size=12, env=vec_env(n_envs=3))
    layouts = []
    model.rollout_buffer.sequence_listener = layouts.append
    model.learn(36)
    buffer = model.rollout_buffer
    list(buffer.get(12))  # flattens the buffer env-major
    buffer.values[:] = np.arange(36).reshape(buffer.values.shape)  # each step's index, to find it again
    batches = list(buffer.get(12))
    assert len(batches) == 3 and len(layouts) >= 3
    seen = set()
    for batch in batches:
        assert batch.observations.shape[0] == 12 and bool(batch.mask.all()), "no padding"
        steps = batch.old_values.numpy().astype(int)
        first = steps[0]
        assert first % 12 == 0 and np.array_equal(steps, np.arange(first, first + 12)), "one whole env column"
        seen.add(first // 12)
        assert torch.equal(batch.lstm_states.pi[0][:, 0], torch.as_tensor(buffer.hidden_states_pi[first]))
        assert torch.equal(batch.episode_starts, torch.as_tensor(buffer.episode_starts[first : first + 12]).flatten())
    assert seen == {0, 1, 2}, "each env's piece appears once per epoch"


def test_recurrent_piece_length_fits_the_minibatch_and_one_batch_takes_whole_columns():
    assert piece_length(100, 4, 200) == 100 and piece_length(128, 8, 64) == 64
    assert piece_length(100, 4, 512) == 100, "a minibatch larger than the rollout takes whole columns"
    assert piece_length(20, 2, 6) == 2
    with pytest.raises(ValueError, match=r"sequence length of a minibatch \(3\).*gcd\(n_steps=12, batch_size=9\) = 3"):
        build("recurrent_ppo", {"horizon": 4}, n_steps=12, batch_size=9)  # pieces of 3 steps


def test_whole_sequence_lstm_path_equals_the_step_by_step_path():
    model = build("recurrent_ppo", None)
    policy = model.policy
    torch.manual_seed(0)
    num_sequences, length = 3, 9
    features = torch.randn(num_sequences * length, policy.features_dim)
    starts = (torch.rand(num_sequences * length) < 0.25).float()
    shape = (1, num_sequences, policy.lstm_actor.hidden_size)
    states = (torch.randn(shape), torch.randn(shape))
    policy._whole_sequences = True
    fast, _ = policy._process_sequence(features, states, starts, policy.lstm_actor)
    policy._whole_sequences = False
    slow, _ = policy._process_sequence(features, states, starts, policy.lstm_actor)
    assert starts.reshape(num_sequences, length)[:, 1:].any()  # resets in mid-sequence
    assert torch.allclose(fast, slow, atol=1e-6)


@pytest.mark.parametrize("layers", [1, 2])
def test_acting_one_step_equals_nn_lstm(layers):
    lstm = torch.nn.LSTM(8, 16, num_layers=layers)
    torch.manual_seed(layers)
    inputs, state = torch.randn(5, 8), (torch.randn(layers, 5, 16), torch.randn(layers, 5, 16))
    output, (hidden, cell) = lstm_step(lstm, inputs, state)
    want, (want_hidden, want_cell) = lstm(inputs[None], state)
    assert torch.allclose(output, want[0], atol=1e-6)
    assert torch.allclose(hidden, want_hidden, atol=1e-6) and torch.allclose(cell, want_cell, atol=1e-6)
    # Through the policy, with episode starts zeroing the state, as sb3-contrib's step does.
    policy = build("recurrent_ppo", None).policy
    features = torch.randn(3, policy.features_dim)
    shape = (1, 3, policy.lstm_actor.hidden_size)
    states, starts = (torch.randn(shape), torch.randn(shape)), torch.tensor([0.0, 1.0, 0.0])
    ours, (ours_hidden, _) = policy._process_sequence(features, states, starts, policy.lstm_actor)
    theirs, (theirs_hidden, _) = RecurrentPPO.policy_aliases["CnnLstmPolicy"]._process_sequence(
        features, states, starts, policy.lstm_actor
    )
    assert torch.allclose(ours, theirs, atol=1e-6) and torch.allclose(ours_hidden, theirs_hidden, atol=1e-6)


@pytest.mark.parametrize("algo", list(CASES))
def test_cpc_gradients_reach_encoder_and_core_and_train_the_head(algo):
    def encoder(state):
        return {name: value for name, value in state.items() if "features_extractor" in name}

    def head(state):
        return {name: value for name, value in state.items() if name.startswith("cpc_head")}

    untrained = build(algo, {**CPC, "coef": 1.0})
    initial = {name: value.clone() for name, value in untrained.policy.state_dict().items()}
    with_cpc = learn_updates(untrained, updates=1)
    probe_only = learn_updates(build(algo, {**CPC, "coef": 0.0}), updates=1)
    changed = [name for name in encoder(with_cpc) if not torch.equal(with_cpc[name], probe_only[name])]
    assert changed, "the CPC loss did not change the encoder's update"
    assert any(not torch.equal(with_cpc[n], initial[n]) for n in head(with_cpc))
    assert all(torch.equal(probe_only[n], initial[n]) for n in head(probe_only))
    if algo == "recurrent_ppo":
        lstm = [n for n in with_cpc if n.startswith("lstm_actor")]
        assert any(not torch.equal(with_cpc[n], probe_only[n]) for n in lstm)


@pytest.mark.parametrize("algo", list(CASES))
def test_repeated_updates_on_a_fixed_rollout_lower_the_cpc_loss_and_log_every_key(algo):
    model = build(algo, {**CPC, "coef": 1.0}, learning_rate=1e-3, max_grad_norm=10.0)
    model.learn(model.n_steps * model.n_envs)
    logged = model.logger.name_to_value
    assert {
        "train/cpc_loss",
        "train/cpc_accuracy",
        "train/cpc_accuracy_k1",
        "train/cpc_accuracy_k2",
        "train/cpc_accuracy_k3",
        "train/cpc_accuracy_k4",
        "train/cpc_mi_bound",
    } <= set(logged)
    losses = []
    for _ in range(60):  # an LSTM context starts slower than a GRU: 40 A2C updates took it 11% down, 60 took it 31%
        model.train()
        losses.append(model.logger.name_to_value["train/cpc_loss"])
    assert min(losses[-5:]) < losses[0] * 0.85, losses


@pytest.mark.parametrize("algo", list(CASES))
def test_the_gradient_meter_splits_cpc_and_rl_gradients_at_the_shared_representation(algo):
    model = build(algo, {**CPC, "coef": 1.0})
    model.learn(model.n_steps * model.n_envs)
    logged = model.logger.name_to_value
    assert logged["train/cpc_grad_norm_z"] > 0 and logged["train/rl_grad_norm_z"] > 0
    assert -1.0 <= logged["train/grad_cosine_z"] <= 1.0
    if algo == "recurrent_ppo":  # the actor LSTM's output is c_t: both losses use it
        assert logged["train/cpc_grad_norm_c"] > 0 and logged["train/rl_grad_norm_c"] > 0
    # The split is exact: with coef=0 CPC sends nothing, with twice the weight twice as much.
    control = build(algo, {**CPC, "coef": 0.0})
    control.learn(control.n_steps * control.n_envs)
    assert control.logger.name_to_value["train/cpc_grad_norm_z"] == 0.0
    if algo == "a2c":  # one gradient step on the same rollout (each build reseeds the global RNGs)
        norms = []
        for coef in (1.0, 2.0):
            model = build(algo, {**CPC, "coef": coef})
            model.learn(model.n_steps * model.n_envs)
            norms.append(model.logger.name_to_value["train/cpc_grad_norm_z"])
        assert norms[1] == pytest.approx(2 * norms[0], rel=1e-5)


@pytest.mark.parametrize("algo", list(CASES))
def test_decoupled_mode_trains_the_encoder_on_cpc_alone(algo):
    def encoder(state):
        return {name: value for name, value in state.items() if "features_extractor" in name}

    model = build(algo, {**CPC, "coef": 0.0, "mode": "decoupled"})
    initial = {name: value.clone() for name, value in model.policy.state_dict().items()}
    after = learn_updates(model, updates=1)
    # No CPC weight and no RL gradient: the encoder stays as it was, the rest learns.
    assert all(torch.equal(after[n], initial[n]) for n in encoder(after))
    assert any(not torch.equal(after[n], initial[n]) for n in after if n.startswith(("action_net", "value_net")))
    assert model.logger.name_to_value["train/rl_grad_norm_z"] == 0.0
    trained = build(algo, {**CPC, "coef": 1.0, "mode": "decoupled"})
    after = learn_updates(trained, updates=1)
    assert any(not torch.equal(after[n], initial[n]) for n in encoder(after))
    assert trained.logger.name_to_value["train/rl_grad_norm_z"] == 0.0
    assert trained.logger.name_to_value["train/cpc_grad_norm_z"] > 0


@pytest.mark.parametrize("algo", list(CASES))
def test_balanced_mode_caps_cpc_gradient_and_at_weight_0_is_the_control(algo):
    control = learn_updates(build(algo, {**CPC, "coef": 0.0}), updates=1)
    balanced_control = learn_updates(build(algo, {**CPC, "coef": 0.0, "mode": "balanced"}), updates=1)
    assert all(torch.equal(control[name], balanced_control[name]) for name in control)

    where = "c" if algo == "recurrent_ppo" else "z"
    ratios = {}
    for mode in ("joint", "balanced"):
        # Several minibatches per update (A2C: one per update, so three updates).
        more = {} if algo == "a2c" else {"n_epochs": 4}
        model = build(algo, {**CPC, "coef": 1.0, "mode": mode, "max_grad_ratio": 0.05}, **more)
        model.learn(model.n_steps * model.n_envs * (3 if algo == "a2c" else 1))
        logged = model.logger.name_to_value
        ratios[mode] = logged[f"train/cpc_grad_norm_{where}"] / logged[f"train/rl_grad_norm_{where}"]
        if mode == "balanced":
            assert logged["train/cpc_effective_coef"] < 1.0
    # The first minibatch runs at the full weight; the later ones hold CPC near 0.05 x RL.
    assert ratios["balanced"] < ratios["joint"] / 2, ratios


def test_feed_forward_context_network_is_an_lstm_or_a_gru_and_old_models_keep_their_settings(tmp_path):
    import json
    import zipfile

    from torch import nn

    model = build("ppo", CPC)
    assert isinstance(model.policy.cpc_context, nn.LSTM)  # the default
    model.learn(model.n_steps * model.n_envs)
    assert np.isfinite(model.logger.name_to_value["train/cpc_loss"])
    model.save(tmp_path / "lstm.zip")
    assert isinstance(CPCPPO.load(tmp_path / "lstm.zip", device="cpu").policy.cpc_context, nn.LSTM)
    gru = build("ppo", {**CPC, "context_network": "gru"})
    assert isinstance(gru.policy.cpc_context, nn.GRU)
    gru.save(tmp_path / "gru.zip")
    # A model saved before the choices existed (0.1.0) stores cpc_kwargs without them; it was a GRU
    # trained jointly, whatever today's defaults say.
    with zipfile.ZipFile(tmp_path / "gru.zip") as archive:
        entries = {name: archive.read(name) for name in archive.namelist()}
    data = json.loads(entries["data"])
    for stored in (data["policy_kwargs"]["cpc_kwargs"], data["cpc_kwargs"]):
        assert stored.pop("context_network") == "gru"
        assert stored.pop("mode") == "joint" and stored.pop("max_grad_ratio")
    entries["data"] = json.dumps(data).encode()
    with zipfile.ZipFile(tmp_path / "old.zip", "w") as archive:
        for name, content in entries.items():
            archive.writestr(name, content)
    old = CPCPPO.load(tmp_path / "old.zip", device="cpu")
    assert isinstance(old.policy.cpc_context, nn.GRU)
    assert old.cpc_kwargs["mode"] == old.policy.cpc_kwargs["mode"] == "joint"
    assert old.cpc_kwargs["max_grad_ratio"] == 1.0
    for name, tensor in gru.policy.cpc_context.state_dict().items():
        assert torch.equal(old.policy.cpc_context.state_dict()[name], tensor)
    with open(tmp_path / "old.zip", "rb") as file:  # a file object, as SB3 takes
        assert isinstance(CPCPPO.load(file, device="cpu").policy.cpc_context, nn.GRU)
    with pytest.raises(ValueError, match="context_network"):
        build("ppo", {**CPC, "context_network": "transformer"})


def test_cpca_head_is_action_conditioned():
    model = build("ppo", {**CPC, "action_conditioned": True})
    assert model.policy.cpc_head.action_dim == 3
    learn_updates(model, updates=1)
    assert np.isfinite(model.logger.name_to_value["train/cpc_loss"])


SAVE_LOAD_CHECK = """
import sys, numpy as np, torch
from cpc_rl.sb3 import CPCRecurrentPPO
model = CPCRecurrentPPO.load(sys.argv[1], device="cpu")
observations = np.load(sys.argv[2])
actions, _ = model.predict(observations, deterministic=True)
head = sum(p.sum().item() for p in model.policy.cpc_head.parameters())
print(model.cpc_kwargs["horizon"], " ".join(map(str, actions)), repr(head))
"""


def test_save_and_load_in_a_fresh_process_keep_head_settings_and_actions(tmp_path):
    model = build("recurrent_ppo", CPC)
    learn_updates(model, updates=1)
    path = tmp_path / "model.zip"
    model.save(path)
    observations = np.stack([model.env.reset()[0]] * 2)
    np.save(tmp_path / "obs.npy", observations)
    actions, _ = model.predict(observations, deterministic=True)
    head = sum(p.sum().item() for p in model.policy.cpc_head.parameters())
    result = subprocess.run(
        [sys.executable, "-c", SAVE_LOAD_CHECK, str(path), str(tmp_path / "obs.npy")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    horizon, *loaded_actions, loaded_head = result.stdout.split()
    assert int(horizon) == CPC["horizon"]
    assert list(map(int, loaded_actions)) == list(actions)
    assert float(loaded_head) == pytest.approx(head, rel=1e-6)


def test_device_auto_puts_the_head_where_the_policy_is():
    model = build("ppo", CPC, device="auto")
    expected = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    devices = {p.device.type for p in model.policy.parameters()}
    assert devices == {expected.type}
    assert next(model.policy.cpc_head.parameters()).device.type == expected.type


def test_make_agent_builds_each_preset_with_and_without_cpc():
    env = vec_env(n_envs=1)
    for algo in CASES:
        for aux, has_head in (("cpc", True), ("cpca", True), ("none", False)):
            sizes = {"n_steps": 40} if algo == "a2c" else {"n_steps": 40, "batch_size": 40}
            cpc_kwargs = {"horizon": 8, "sequence_length": 40} if has_head else None
            model = make_agent(algo, env, aux=aux, device="cpu", cpc_kwargs=cpc_kwargs, **sizes)
            assert hasattr(model.policy, "cpc_head") == has_head
            if aux == "cpca":
                assert model.policy.cpc_head.action_dim == 3


@pytest.mark.skipif(not torch.ops.mkldnn._is_mkldnn_bf16_supported(), reason="no native bfloat16 on this CPU")
def test_bfloat16_encoder_trains_and_stays_close_to_float32():
    env = vec_env(n_envs=2)
    sizes = {"n_steps": 40, "batch_size": 40}
    plain = make_agent("recurrent_ppo", env, aux="cpc", device="cpu", cpc_kwargs={"horizon": 4}, **sizes)
    fast = make_agent(
        "recurrent_ppo", env, aux="cpc", device="cpu", precision="bfloat16", cpc_kwargs={"horizon": 4}, **sizes
    )
    assert fast.policy.features_extractor.precision == "bfloat16"
    frames = torch.rand(8, *plain.policy.observation_space.shape)
    z_plain = plain.policy.features_extractor(frames)
    z_fast = fast.policy.features_extractor(frames)
    # Same seed, same weights: only the arithmetic differs (bfloat16 keeps ~3 significant digits).
    assert z_fast.dtype == torch.float32
    assert torch.allclose(z_fast, z_plain, rtol=0.05, atol=0.02) and not torch.equal(z_fast, z_plain)
    fast.set_logger(configure(None, []))
    before = [p.detach().clone() for p in fast.policy.features_extractor.parameters()]
    fast.learn(80)
    after = list(fast.policy.features_extractor.parameters())
    assert all(p.dtype == torch.float32 and torch.isfinite(p).all() for p in after)
    assert any(not torch.equal(a, b) for a, b in zip(after, before, strict=True))
    assert np.isfinite(fast.cpc_figures["train/cpc_loss"])


@pytest.mark.fast
def test_bad_precision_is_refused():
    with pytest.raises(ValueError, match="precision must be one of"):
        make_agent("recurrent_ppo", vec_env(n_envs=1), aux="none", device="cpu", precision="float16")


@pytest.mark.fast
@pytest.mark.parametrize(
    ("cpc_kwargs", "match"),
    [
        ({"horizon": 12}, r"horizon.*must be < n_steps"),
        ({"negatives": "nearby"}, "negatives"),
        ({"coef": -0.5}, r"coef.*>= 0"),
        ({"horizont": 3}, "unknown cpc_kwargs keys"),
    ],
)
@pytest.mark.parametrize("algo", list(CASES))
def test_bad_configuration_raises(algo, cpc_kwargs, match):
    with pytest.raises(ValueError, match=match):
        build(algo, cpc_kwargs)


def test_action_conditioned_needs_discrete_actions():
    env = DummyVecEnv([lambda: gym.make("Pendulum-v1")])
    with pytest.raises(ValueError, match="needs a Discrete action space"):
        CPCPPO("MlpPolicy", env, n_steps=16, batch_size=16, cpc_kwargs={"horizon": 4, "action_conditioned": True})


def test_ppo_horizon_must_fit_the_minibatch_sequences():
    with pytest.raises(ValueError, match="sequence length of a minibatch.*It is cpc_kwargs\\['sequence_length'\\]"):
        build("ppo", {"horizon": 8, "sequence_length": 6})
    with pytest.raises(ValueError, match="must be a multiple of the CPC sequence length"):
        build("ppo", {"horizon": 3, "sequence_length": 5})


def test_ppo_with_cpc_normalizes_advantages_over_the_rollout_not_each_piece_minibatch():
    """
    Minibatches of a few pieces, normalized each on its own, would scale up the advantages of a
    piece in which nothing happened; CPCPPO normalizes over the rollout, as plain PPO's shuffled
    minibatches nearly do.
    """

    def minibatches_seen(model):
        seen = []
        draw = model.rollout_buffer.get

        def recording_get(batch_size=None):
            for samples in draw(batch_size):
                seen.append((samples.advantages.clone(), model.normalize_advantage))
                yield samples

        model.rollout_buffer.get = recording_get
        model.learn(model.n_steps * model.n_envs)
        return seen

    cpc = build("ppo", {**CPC, "coef": 0.0}, n_steps=24, batch_size=12, n_epochs=1, env=vec_env(n_envs=2))
    seen = minibatches_seen(cpc)
    advantages = torch.cat([batch for batch, _ in seen])
    assert len(seen) == 4 and not any(flag for _, flag in seen)  # PPO's own normalization was off
    assert abs(advantages.mean().item()) < 1e-5 and abs(advantages.std().item() - 1) < 1e-4
    assert max(abs(batch.std().item() - 1) for batch, _ in seen) > 0.05  # minibatches were not normalized each
    assert cpc.normalize_advantage  # restored after the update, so saving records the user's setting

    plain = build("ppo", None, n_steps=24, batch_size=12, n_epochs=1, env=vec_env(n_envs=2))
    assert all(flag for _, flag in minibatches_seen(plain))  # plain PPO: SB3's per-minibatch normalization


def sign_vec_env(n_envs=2):
    """MiniWorld's own Sign task: Dict(obs=image, goal=Discrete(2)) observations."""
    envs.list_envs()  # imports miniworld headless, with one display list per env

    def make():
        return gym.make("MiniWorld-Sign-v0", window_width=32, window_height=24, obs_width=40, obs_height=40)

    return DummyVecEnv([make] * n_envs)


DICT_CASES = {
    "ppo": (CPCPPO, "MultiInputPolicy", {"n_steps": 16, "batch_size": 16, "n_epochs": 2}),
    "a2c": (CPCA2C, "MultiInputPolicy", {"n_steps": 16}),
    "recurrent_ppo": (CPCRecurrentPPO, "MultiInputLstmPolicy", {"n_steps": 16, "batch_size": 16, "n_epochs": 2}),
}


@pytest.mark.parametrize("algo", list(DICT_CASES))
def test_dict_observations_carry_cpc_and_cpca(algo):
    algorithm, policy, settings = DICT_CASES[algo]
    for action_conditioned in (False, True):
        model = algorithm(
            policy,
            sign_vec_env(),
            cpc_kwargs={**CPC, "action_conditioned": action_conditioned},
            policy_kwargs={"net_arch": [16]} if algo != "recurrent_ppo" else {"lstm_hidden_size": 16},
            seed=0,
            **settings,
        )
        model.set_logger(configure(None, []))
        head = [p.detach().clone() for p in model.policy.cpc_head.parameters()]
        model.learn(model.n_steps * model.n_envs * 2)
        # z_t is the CombinedExtractor's output (image CNN + one-hot goal); the head trained on it.
        assert model.policy.cpc_head.embed_dim == model.policy.features_dim
        assert any(not torch.equal(a, b) for a, b in zip(head, model.policy.cpc_head.parameters(), strict=True))
        assert 0 <= model.cpc_figures["train/cpc_accuracy_k1"] <= 1
        assert (model.policy.cpc_head.action_dim is not None) == action_conditioned


OBSERVATION_WRAPPERS = {
    "Discrete": None,
    "MultiBinary": (gym.spaces.MultiBinary(16), lambda s: np.eye(16, dtype=np.int8)[s]),
    "MultiDiscrete": (gym.spaces.MultiDiscrete([4, 4]), lambda s: np.array(divmod(s, 4))),
}


@pytest.mark.parametrize("space", list(OBSERVATION_WRAPPERS))
def test_discrete_multidiscrete_and_multibinary_observations_carry_cpc(space):
    def frozen_lake():
        env = gym.make("FrozenLake-v1")
        if OBSERVATION_WRAPPERS[space] is not None:
            observation_space, transform = OBSERVATION_WRAPPERS[space]
            env = gym.wrappers.TransformObservation(env, transform, observation_space)
        return env

    model = CPCPPO("MlpPolicy", DummyVecEnv([frozen_lake] * 2), n_steps=16, batch_size=16, cpc_kwargs=CPC, seed=0)
    model.learn(64)
    # SB3 flattens each space to a vector (one-hot for Discrete parts): that vector is z_t.
    assert model.policy.cpc_head.embed_dim == {"Discrete": 16, "MultiBinary": 16, "MultiDiscrete": 8}[space]
    assert np.isfinite(model.cpc_figures["train/cpc_loss"])


SAVE_LOAD_DICT_CHECK = """
import sys, numpy as np
from cpc_rl import envs
envs.list_envs()
from cpc_rl.sb3 import CPCPPO
model = CPCPPO.load(sys.argv[1], policy_kwargs={"net_arch": [16]})
obs = dict(np.load(sys.argv[2]))
actions, _ = model.predict(obs, deterministic=True)
print(model.policy.cpc_kwargs["horizon"], *actions)
"""


def test_dict_model_loads_in_a_fresh_process_with_the_kwargs_it_was_made_with(tmp_path):
    model = CPCPPO(
        "MultiInputPolicy", sign_vec_env(), n_steps=16, batch_size=16, cpc_kwargs=CPC, policy_kwargs={"net_arch": [16]}
    )
    model.learn(32)
    path = tmp_path / "model.zip"
    model.save(path)
    observations = model.env.reset()
    np.savez(tmp_path / "obs.npz", **observations)
    actions, _ = model.predict(observations, deterministic=True)
    result = subprocess.run(
        [sys.executable, "-c", SAVE_LOAD_DICT_CHECK, str(path), str(tmp_path / "obs.npz")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    horizon, *loaded = result.stdout.split()
    assert int(horizon) == CPC["horizon"] and list(map(int, loaded)) == list(actions)


def test_a_dict_without_images_or_vectors_is_refused_with_a_reason():
    class Empty(gym.Env):
        observation_space = gym.spaces.Dict({})
        action_space = gym.spaces.Discrete(2)

    with pytest.raises(ValueError, match="CPC needs observations; got an empty Dict space"):
        CPCPPO("MultiInputPolicy", DummyVecEnv([Empty]), n_steps=16, batch_size=16, cpc_kwargs=CPC)
