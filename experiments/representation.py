"""Does the representation learn the world? Linear probes of agents, and the CPC paper's protocol.

The protocol (``run_agent.py representation``): frames from an exploring policy; the conv
encoder + GRU trained with the CPC loss alone (or CPC|A, or supervised on the probe targets, or
left at random initialisation), frozen; linear probes of ``z_t`` and ``c_t`` on held-out
episodes. Ablations over the steps predicted and the negative strategy, as in the paper.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from gymnasium import spaces
from torch import nn

from cpc_rl import CPCHead
from cpc_rl.agents.networks import FrameEncoder
from cpc_rl.envs.exploration import Trajectories, TrajectoryRecorder, explore, probe_targets
from cpc_rl.experiments.files import save_figure_atomically, write_text_atomically
from cpc_rl.probe import linear_probe
from cpc_rl.sequences import run_rnn_with_resets

METHODS = ("random", "cpc", "cpca", "supervised")
REGRESSION_TARGETS = ("position", "heading", "goal_relative")


def probe_features(features: dict[str, np.ndarray], trajectories: Trajectories, seed: int = 0) -> list[dict[str, Any]]:
    """Probe each named feature set for every target: one row per (features, target)."""
    rows = []
    targets = probe_targets(trajectories.agent_pos, trajectories.agent_dir, trajectories.goal_pos, trajectories.cue)
    for feature_name, values in features.items():
        for target_name, (target, classes) in targets.items():
            result = linear_probe(values, target, trajectories.episode_ids, classes=classes, seed=seed)
            rows.append(
                {
                    "features": feature_name,
                    "target": target_name,
                    "metric": "accuracy" if classes else "R2",
                    "score": result.score,
                }
            )
    return rows


class SequenceEncoder(nn.Module):
    """The paper's encoder (``FrameEncoder``, ``z_t``) and autoregressive GRU (``c_t``)."""

    def __init__(self, frame_shape: tuple[int, int, int], embed_dim: int = 256, context_dim: int = 256) -> None:
        super().__init__()
        height, width, channels = frame_shape
        space = spaces.Box(0, 255, (channels, height, width), np.uint8)
        self.encoder = FrameEncoder(space, features_dim=embed_dim)
        self.context = nn.GRU(embed_dim, context_dim)

    def forward(self, frames: torch.Tensor, episode_starts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """
        :param frames: ``(T, B, H, W, 3)`` uint8.
        :param episode_starts: ``(T, B)`` bool.
        :return: ``z`` ``(T, B, embed_dim)`` and ``c`` ``(T, B, context_dim)``.
        """
        steps, batch = frames.shape[:2]
        images = frames.reshape(steps * batch, *frames.shape[2:]).permute(0, 3, 1, 2).float() / 255.0
        embeddings = self.encoder(images).reshape(steps, batch, -1)
        return embeddings, run_rnn_with_resets(self.context, embeddings, episode_starts)

    @torch.no_grad()
    def encode(self, trajectories: Trajectories, chunk: int = 512) -> dict[str, np.ndarray]:
        """``z`` and ``c`` of every step, episodes run from their start."""
        self.eval()
        frames = torch.from_numpy(trajectories.observations)
        starts = torch.from_numpy(trajectories.episode_starts)
        embeddings, contexts, state = [], [], None
        for first in range(0, len(frames), chunk):
            images = frames[first : first + chunk].permute(0, 3, 1, 2).float() / 255.0
            z = self.encoder(images)[:, None]
            # The GRU carries its state across chunks and resets at episode starts.
            c = run_rnn_with_resets(self.context, z, starts[first : first + chunk, None], state)
            state = c[-1:].contiguous()
            embeddings.append(z[:, 0])
            contexts.append(c[:, 0])
        self.train()
        return {"z": torch.cat(embeddings).numpy(), "c": torch.cat(contexts).numpy()}


@dataclass
class ProtocolConfig:
    """Budget of the unsupervised protocol (the defaults finish within an hour on 2 CPU cores)."""

    tasks: tuple[str, ...] = ("MiniWorld-OneRoom-v0", "MiniWorld-FourRooms-v0")
    seeds: int = 3
    pretrain_episodes: int = 40
    probe_episodes: int = 30
    max_episode_steps: int = 100
    train_steps: int = 300
    batch: int = 16
    window: int = 40
    learning_rate: float = 1e-3
    horizon: int = 12
    horizons: tuple[int, ...] = (1, 2, 4, 8, 12, 16, 30)
    negatives: tuple[str, ...] = ("all", "same_sequence", "other_sequences")
    ablation_task: str = "MiniWorld-OneRoom-v0"


def sample_windows(trajectories: Trajectories, batch: int, window: int, rng: np.random.Generator) -> tuple:
    """``batch`` random windows of ``window`` consecutive steps: frames, starts, actions, targets."""
    first = rng.integers(0, len(trajectories) - window + 1, size=batch)
    index = first[None, :] + np.arange(window)[:, None]  # (T, B)
    starts = trajectories.episode_starts[index].copy()
    starts[0] = True  # each window begins from a fresh context
    return (
        index,
        torch.from_numpy(trajectories.observations[index]),
        torch.from_numpy(starts),
        torch.from_numpy(trajectories.actions[index]),
    )


def supervised_targets(trajectories: Trajectories) -> np.ndarray:
    """The regression probe targets, standardised, as one matrix (the supervised reference's labels)."""
    targets = probe_targets(trajectories.agent_pos, trajectories.agent_dir, trajectories.goal_pos)
    columns = np.concatenate([targets[name][0] for name in REGRESSION_TARGETS if name in targets], axis=1)
    return (columns - columns.mean(0)) / (columns.std(0) + 1e-6)


def train_representation(
    method: str,
    data: Trajectories,
    config: ProtocolConfig,
    seed: int,
    horizon: int | None = None,
    negatives: str = "all",
) -> tuple[SequenceEncoder, nn.Module | None, dict[str, float]]:
    """
    Train the encoder + GRU with ``method``: ``cpc``, ``cpca`` (action-conditioned), ``supervised``
    (regression on the probe targets from ``z`` and ``c``) or ``random`` (no training).

    :return: the model, the head it was trained with (None for ``random``) and its last training figures.
    """
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = SequenceEncoder(data.observations.shape[1:])
    figures: dict[str, float] = {}
    if method == "random":
        return model, None, figures
    horizon = horizon or config.horizon
    if method in ("cpc", "cpca"):
        head = CPCHead(256, 256, horizon, negatives=negatives, action_dim=3 if method == "cpca" else None)
    elif method == "supervised":
        labels = torch.from_numpy(supervised_targets(data)).float()
        head = nn.ModuleDict({"z": nn.Linear(256, labels.shape[1]), "c": nn.Linear(256, labels.shape[1])})
    else:
        raise ValueError(f"unknown method {method!r}; choose one of {METHODS}")
    optimizer = torch.optim.Adam([*model.parameters(), *head.parameters()], lr=config.learning_rate)
    for _ in range(config.train_steps):
        index, frames, starts, actions = sample_windows(data, config.batch, config.window, rng)
        embeddings, contexts = model(frames, starts)
        if method == "supervised":
            target = labels[torch.from_numpy(index)]
            loss = nn.functional.mse_loss(head["z"](embeddings), target) + nn.functional.mse_loss(
                head["c"](contexts), target
            )
        else:
            output = head(embeddings, contexts, starts, actions if method == "cpca" else None)
            loss = output.loss
            figures = {"cpc_loss": float(loss.detach()), "cpc_accuracy": output.mean_accuracy}
        optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_([*model.parameters(), *head.parameters()], 5.0)
        optimizer.step()
    if method == "supervised":
        figures = {"mse": float(loss.detach())}
    return model, head, figures


def run_protocol(config: ProtocolConfig, progress: bool = True) -> pd.DataFrame:
    """Every probe of the protocol: one row per (task, seed, method, variant, features, target)."""
    from tqdm import tqdm

    jobs = [
        (task, seed, method, config.horizon, "all")
        for task in config.tasks
        for seed in range(config.seeds)
        for method in METHODS
    ]
    jobs += [(config.ablation_task, 0, "cpc", k, "all") for k in config.horizons if k != config.horizon]
    jobs += [(config.ablation_task, 0, "cpc", config.horizon, n) for n in config.negatives if n != "all"]
    datasets: dict[tuple[str, int], tuple[Trajectories, Trajectories]] = {}
    rows = []
    for task, seed, method, horizon, negatives in tqdm(jobs, desc="representations", disable=not progress):
        if (task, seed) not in datasets:
            datasets[(task, seed)] = (
                explore(task, config.pretrain_episodes, seed=1000 + seed, max_episode_steps=config.max_episode_steps),
                explore(task, config.probe_episodes, seed=2000 + seed, max_episode_steps=config.max_episode_steps),
            )
        pretrain, probe = datasets[(task, seed)]
        start = time.perf_counter()
        model, _, figures = train_representation(method, pretrain, config, seed, horizon, negatives)
        seconds = time.perf_counter() - start
        for row in probe_features(model.encode(probe), probe, seed=seed):
            rows.append(
                {
                    "task": task,
                    "seed": seed,
                    "method": method,
                    "horizon": horizon,
                    "negatives": negatives,
                    **row,
                    "train_seconds": seconds,
                    **figures,
                }
            )
    return pd.DataFrame(rows)


def _main_table(results: pd.DataFrame, config: ProtocolConfig) -> str:
    main = results[(results["horizon"] == config.horizon) & (results["negatives"] == "all")]
    columns = [
        ("c", "position"),
        ("z", "position"),
        ("c", "heading"),
        ("c", "heading_sector"),
        ("c", "goal_relative"),
        ("z", "goal_relative"),
    ]
    header = " | ".join(f"{target} ({'acc' if target == 'heading_sector' else 'R²'}) from {f}" for f, target in columns)
    lines = [f"| task | method | {header} |", "|---|---|" + "---|" * len(columns)]
    for task in config.tasks:
        for method in METHODS:
            cells = []
            for feature, target in columns:
                scores = main[
                    (main["task"] == task)
                    & (main["method"] == method)
                    & (main["features"] == feature)
                    & (main["target"] == target)
                ]["score"]
                cells.append(
                    f"{scores.mean():.3f} ± {scores.std(ddof=1) if len(scores) > 1 else 0:.3f}" if len(scores) else "—"
                )
            lines.append(f"| {task.removeprefix('MiniWorld-')} | {method} | {' | '.join(cells)} |")
    return "\n".join(lines)


def _mean_score(rows: pd.DataFrame, feature: str, target: str) -> str:
    found = rows[(rows["features"] == feature) & (rows["target"] == target)]["score"]
    return f"{found.mean():.3f}" if len(found) else "—"


def _mean_score(rows: pd.DataFrame, feature: str, target: str) -> str:
    found = rows[(rows["features"] == feature) & (rows["target"] == target)]["score"]
    return f"{found.mean():.3f}" if len(found) else "—"


def _ablation_table(results: pd.DataFrame, config: ProtocolConfig, by: str) -> str:
    subset = results[(results["task"] == config.ablation_task) & (results["seed"] == 0) & (results["method"] == "cpc")]
    subset = subset[subset["negatives"] == "all"] if by == "horizon" else subset[subset["horizon"] == config.horizon]
    lines = [
        f"| {by} | position R² from c | position R² from z | heading R² from c | goal R² from c | final CPC accuracy |",
        "|---|---|---|---|---|---|",
    ]
    for value, group in subset.groupby(by, sort=True):
        cells = [
            _mean_score(group, feature, target)
            for feature, target in (("c", "position"), ("z", "position"), ("c", "heading"), ("c", "goal_relative"))
        ]
        lines.append(f"| {value} | {' | '.join(cells)} | {group['cpc_accuracy'].mean():.3f} |")
    return "\n".join(lines)


def plot_horizons(results: pd.DataFrame, config: ProtocolConfig, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    subset = results[
        (results["task"] == config.ablation_task)
        & (results["seed"] == 0)
        & (results["method"] == "cpc")
        & (results["negatives"] == "all")
    ]
    random = results[(results["task"] == config.ablation_task) & (results["method"] == "random")]
    figure, axis = plt.subplots(figsize=(5.5, 3.4))
    for (feature, target), style in {
        ("c", "position"): "o-",
        ("z", "position"): "s--",
        ("c", "goal_relative"): "^-",
    }.items():
        points = subset[(subset["features"] == feature) & (subset["target"] == target)].sort_values("horizon")
        (line,) = axis.plot(points["horizon"], points["score"], style, label=f"CPC: {target} from {feature}")
        baseline = random[(random["features"] == feature) & (random["target"] == target)]["score"].mean()
        axis.axhline(baseline, color=line.get_color(), alpha=0.4, linestyle=":")
    axis.set_xscale("log", base=2)
    axis.set_xticks(list(config.horizons), [str(k) for k in config.horizons])
    axis.set_xlabel("steps predicted K")
    axis.set_ylabel("held-out R² of a linear probe")
    axis.set_title(
        f"{config.ablation_task.removeprefix('MiniWorld-')}: probe score against K (dotted: random encoder)", fontsize=9
    )
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    save_figure_atomically(figure, path)
    plt.close(figure)


def write_document(results: pd.DataFrame, config: ProtocolConfig, out_dir: Path, seconds: float, machine: str) -> Path:
    """``representation.md``, ``representation.csv`` and ``representation_k.png`` in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomically(out_dir / "representation.csv", results.to_csv(index=False))
    plot_horizons(results, config, out_dir / "representation_k.png")
    text = f"""# Does the representation learn the world?

The CPC paper's protocol on MiniWorld, reproduced by `python run_agent.py representation`
({seconds / 60:.0f} minutes on {machine}).

**Setup.** Frames (60x80) from an exploring policy (random actions held for 1-8 steps, 60%
forward), {config.pretrain_episodes} episodes of at most {config.max_episode_steps} steps per task and seed
for training the representation and {config.probe_episodes} other episodes for the probes. The same
architecture for every method: the conv encoder of the agents (`z_t`, 256) and a GRU (`c_t`,
256), trained for {config.train_steps} Adam steps on {config.batch} windows of {config.window} steps
(episode starts masked): **random** (no training), **cpc** (CPC loss alone, K={config.horizon},
negatives from the whole batch), **cpca** (action-conditioned CPC), **supervised** (regression on
the probe targets from `z` and `c`: the upper reference). Then frozen, and linear probes fitted on
70% of the probe episodes and scored on the other 30% (split by episode): ridge R² for the agent's
position (x, z), its heading (sin, cos) and the goal's position relative to the agent (ahead,
left); logistic accuracy for the heading in 8 sectors (chance 0.125). Mean ± standard deviation
over {config.seeds} seeds.

## Main comparison

{_main_table(results, config)}

## Steps predicted (K), on {config.ablation_task}, seed 0

{_ablation_table(results, config, "horizon")}

![probe score against K](representation_k.png)

## Negatives, on {config.ablation_task}, seed 0, K={config.horizon}

{_ablation_table(results, config, "negatives")}

All rows: [representation.csv](representation.csv).
"""
    path = out_dir / "representation.md"
    write_text_atomically(path, text)
    return path


PROBE_MIN_STEPS = 2000


def probe_run(
    run_dir: Path, episodes: int = 50, seed: int = 30_000, min_steps: int = PROBE_MIN_STEPS, policy: str = "agent"
) -> Path:
    """
    Probe a trained agent: roll it out, probe its encoder output ``z_t`` and its context ``c_t``
    (the actor LSTM, or the CPC head's GRU of feed-forward agents), write ``probe/``.

    :param episodes: at least this many episodes...
    :param min_steps: ...and at least this many steps: a good agent on a small task ends its
        episodes in a few steps, and 50 of them (~300 steps) left the probes of 256 features
        fitting noise (held-out R² down to -12 on OneRoomS6Fast).
    :param policy: whose steps: ``"agent"`` (its own stochastic policy: ``probe/probe.*``) or
        ``"explore"`` (:func:`envs.exploration.explore`, whose actions ignore the task, so that on a
        memory task ``z_t`` only knows the cue while it is in view: ``probe/explore.*``).
    :return: the table of scores written (``probe.csv`` or ``explore.csv``, beside its ``.md`` and ``.png``).
    """
    from cpc_rl.experiments.compare import probe_table
    from cpc_rl.experiments.config import PROBE_POLICIES
    from cpc_rl.experiments.runs import RunError, latest_model_path, load_model, read_config

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunError(f"run directory {run_dir} does not exist")
    if episodes < 2:
        raise RunError(f"--episodes must be >= 2 (the probe holds out whole episodes); got {episodes}")
    if policy not in PROBE_POLICIES:
        raise RunError(f"--policy must be one of {', '.join(PROBE_POLICIES)}; got {policy!r}")
    config = read_config(run_dir)
    model = load_model(config, latest_model_path(run_dir))
    if policy == "agent":
        trajectories = rollout_agent(model, config.env, episodes, seed, config.env_kwargs, min_steps)
    else:
        trajectories = explore(config.env, episodes, seed=seed, min_steps=min_steps, **config.env_kwargs)
    features = agent_features(model, trajectories)
    rows = probe_features(features, trajectories)
    table = pd.DataFrame(rows)
    num_episodes, num_steps = len(np.unique(trajectories.episode_ids)), len(trajectories.episode_ids)
    table["episodes"], table["steps"] = num_episodes, num_steps
    csv = probe_table(run_dir, policy)
    csv.parent.mkdir(exist_ok=True)
    write_text_atomically(csv, table.to_csv(index=False))
    pivot = table.pivot_table(index="target", columns="features", values="score")
    whose = "the agent's own (stochastic) policy" if policy == "agent" else "an exploring policy blind to the task"
    lines = [
        f"# Linear probes of {run_dir.name} ({config.algo}, aux={config.aux}, {model.num_timesteps} steps)",
        "",
        f"{num_episodes} episodes ({num_steps} steps) of {whose}, split by episode 70/30. "
        "R² (regression) or accuracy (heading_sector, chance 0.125; cue, chance 1 / its number of values).",
        "",
        "| target | " + " | ".join(f"from {c}" for c in pivot.columns) + " |",
        "|---|" + "---|" * len(pivot.columns),
    ]
    for target, row in pivot.iterrows():
        lines.append(f"| {target} | " + " | ".join(f"{value:.3f}" for value in row) + " |")
    write_text_atomically(csv.with_suffix(".md"), "\n".join(lines) + "\n")
    _plot_probe(pivot, csv.with_suffix(".png"), f"{run_dir.name}: linear probes ({policy} policy)")
    return csv


def probe_comparison(
    out_dir: Path, episodes: int = 50, again: bool = False, min_steps: int = PROBE_MIN_STEPS, policy: str = "agent"
) -> tuple[list[Path], list[Path]]:
    """
    Probe every finished run of a comparison folder that has no probe of this policy yet (all of
    them with ``again``; see :func:`probe_run`). Models are not committed, so a run finished on
    another machine is skipped.

    :return: the runs probed, and the finished runs skipped for want of a model.
    """
    from tqdm import tqdm

    from cpc_rl.experiments.compare import find_jobs, probe_table

    finished = [job.run_dir for job in find_jobs(out_dir) if job.finished]
    todo = [run_dir for run_dir in finished if again or not probe_table(run_dir, policy).is_file()]
    probed, no_model = [], []
    for run_dir in tqdm(todo, desc="probes", disable=not todo):
        if not (run_dir / "model.zip").is_file():
            no_model.append(run_dir)
            continue
        probe_run(run_dir, episodes, min_steps=min_steps, policy=policy)
        probed.append(run_dir)
    return probed, no_model


def _plot_probe(pivot: pd.DataFrame, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(5.5, 3.2))
    pivot.plot.bar(ax=axis, rot=0)
    axis.set_ylabel("held-out R² / accuracy")
    axis.set_title(title, fontsize=9)
    axis.grid(alpha=0.3, axis="y")
    save_figure_atomically(figure, path)
    plt.close(figure)


def rollout_agent(
    model: Any, env_id: str, episodes: int, seed: int, env_kwargs: dict, min_steps: int = 0
) -> Trajectories:
    """Whole episodes (``episodes`` and ``min_steps`` at least) of an agent's stochastic policy, with ground truth."""
    from cpc_rl import envs

    env = envs.make_env(env_id, seed=seed, **env_kwargs)
    recorder = TrajectoryRecorder()
    try:
        episode = 0
        while episode < episodes or len(recorder) < min_steps:
            obs, info = env.reset()
            state, start, done = None, True, False
            while not done:
                action, state = model.predict(obs, state=state, episode_start=np.array([start]))
                recorder.add(obs, int(action), start, episode, info)
                obs, _, terminated, truncated, info = env.step(int(action))
                start, done = False, terminated or truncated
            episode += 1
    finally:
        env.close()
    return recorder.trajectories()


@torch.no_grad()
def agent_features(model: Any, trajectories: Trajectories) -> dict[str, np.ndarray]:
    """``z`` (features extractor) and ``c`` (actor LSTM, or CPC context GRU) of each step."""
    policy = model.policy
    policy.set_training_mode(False)
    observations, _ = policy.obs_to_tensor(trajectories.observations)
    extracted = policy.extract_features(observations)
    embeddings = extracted if isinstance(extracted, torch.Tensor) else extracted[0]
    features = {"z": embeddings.cpu().numpy()}
    context_network = getattr(policy, "lstm_actor", None) or getattr(policy, "cpc_context", None)
    if context_network is not None:
        starts = torch.as_tensor(trajectories.episode_starts, device=embeddings.device)[:, None]
        contexts = run_rnn_with_resets(context_network, embeddings[:, None], starts)
        features["c"] = contexts[:, 0].cpu().numpy()
    return features
