"""Time of training with CPC divided by the same without, per task and algorithm, in one run.

For each task and algorithm, plain (aux none) and CPC runs of the same preset alternate, several
repeats, each from a fresh model after a short warm-up; the median ratio is printed with where
the time goes (env stepping and inference vs training). Also compares plain sb3-contrib
RecurrentPPO with CPCRecurrentPPO without CPC (its whole-sequence LSTM path) and with CPC.
``--breakdown`` times ``train()`` with and without CPC on the same collected rollout and splits
what CPC adds into its parts, each timed alone on a real minibatch (forward and backward): the
context network (A2C/PPO; the recurrent agent's contexts are its LSTM's outputs), the head,
sampling minibatches as time-contiguous pieces; what remains is glue (gradient meter, copies).

    python bench/cpc_overhead.py [--envs MiniWorld-Hallway-v0 ... --steps 2000 --repeats 3 --n-envs 4]
    OMP_NUM_THREADS=1 python bench/cpc_overhead.py --clock cpu --envs suite --breakdown
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time

import torch
from sb3_contrib import RecurrentPPO
from stable_baselines3.common.logger import configure

from cpc_rl import envs
from cpc_rl.agents import make_agent, preset
from cpc_rl.experiments.safety import keep_freed_memory_mapped


def timed_learn(model, steps: int, clock=time.perf_counter) -> tuple[float, float]:
    """Seconds of ``learn(steps)`` in all and in ``train()``, on ``clock``."""
    model.set_logger(configure(None, []))
    train = model.train
    spent = [0.0]

    def timed_train() -> None:
        start = clock()
        train()
        spent[0] += clock() - start

    model.train = timed_train
    model.learn(model.n_steps * model.n_envs)  # warm-up: first rollout, allocator, kernels
    spent[0] = 0.0
    start = clock()
    model.learn(steps, reset_num_timesteps=False)
    return clock() - start, spent[0]


def plain_recurrent_ppo(vec_env, device: str):
    config = preset("recurrent_ppo", None)
    return RecurrentPPO(config["policy"], vec_env, seed=0, device=device, **config["algo_kwargs"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--envs",
        nargs="+",
        default=["MiniWorld-Hallway-v0"],
        help="env ids (MiniWorld or ViZDoom), or 'suite' for envs.SUITE + Hallway",
    )
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--n-envs", type=int, default=4)
    parser.add_argument("--algos", nargs="+", default=["a2c", "ppo", "recurrent_ppo"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="cpu: the process's CPU time, which other load on a shared machine disturbs far less "
        "(use with OMP_NUM_THREADS=1; envs run in-process)",
    )
    parser.add_argument("--horizon", type=int, help="CPC's horizon instead of the presets' (e.g. 30, the old default)")
    parser.add_argument("--breakdown", action="store_true", help="time train() with and without CPC, and CPC's parts")
    parser.add_argument("--context-network", choices=("gru", "lstm"), help="A2C/PPO's CPC context network")
    parser.add_argument("--no-contrib", action="store_true", help="leave out plain sb3-contrib RecurrentPPO")
    args = parser.parse_args()
    env_ids = [*envs.SUITE, "MiniWorld-Hallway-v0"] if args.envs == ["suite"] else args.envs
    # As run_agent.py's runs: without it every update faults its tensors back in (~10% of train()).
    keep_freed_memory_mapped()
    print(
        f"{args.n_envs} envs (dummy vec env), {args.steps} steps per run, median of {args.repeats}, "
        f"device {args.device}, {torch.get_num_threads()} torch threads, {args.clock} clock"
    )
    print(f"| task | run | steps/s | share of time in training | {args.clock} time vs plain |")
    print("|---|---|---|---|---|")
    breakdowns = []
    for env_id in env_ids:
        breakdowns += measure_task(env_id, args)
    if breakdowns:
        print(f"\nWhat CPC adds to one train() ({args.clock} ms, median of {args.repeats}; parts timed alone):\n")
        print("| task | algo | train() plain | train() CPC | added | context network | head | piece sampling | rest |")
        print("|---|---|---|---|---|---|---|---|---|")
        for env_id, algo, parts in breakdowns:
            added = parts["cpc"] - parts["plain"]
            rest = added - parts["context"] - parts["head"] - parts["sampling"]
            task = env_id.removeprefix("MiniWorld-")
            figures = [parts["plain"], parts["cpc"], added, parts["context"], parts["head"], parts["sampling"], rest]
            print(f"| {task} | {algo} | " + " | ".join(f"{value:.0f}" for value in figures) + " |")


def _median_ms(work, repeats: int, clock) -> float:
    times = []
    for _ in range(repeats):
        start = clock()
        work()
        times.append((clock() - start) * 1000)
    return statistics.median(times)


def train_breakdown(plain, cpc, repeats: int, clock) -> dict[str, float]:
    """
    Milliseconds of one ``train()`` of ``plain`` and ``cpc`` on rollouts they collected, and of
    CPC's parts per ``train()``: each part timed on a real minibatch, times the minibatches of a
    ``train()``.
    """
    from cpc_rl.sequences import run_rnn_with_resets

    for model in (plain, cpc):
        model.set_logger(configure(None, []))
        model.learn(model.n_steps * model.n_envs)  # a rollout in the buffer, kernels warm
    train = {"plain": [], "cpc": []}
    for _ in range(repeats):  # alternating, on the rollouts in the buffers
        for name, model in (("plain", plain), ("cpc", cpc)):
            start = clock()
            model.train()
            train[name].append((clock() - start) * 1000)
    batch_size = getattr(cpc, "batch_size", None)
    epochs = getattr(cpc, "n_epochs", 1)

    def sample(model) -> int:
        return sum(1 for _ in model.rollout_buffer.get(batch_size))

    minibatches = sample(cpc) * epochs
    sampling = _median_ms(lambda: sample(cpc), repeats, clock) - _median_ms(lambda: sample(plain), repeats, clock)
    policy = cpc.policy
    samples = next(cpc.rollout_buffer.get(batch_size))
    layout = policy._take_layout()
    with torch.no_grad():
        frozen = policy.extract_features(samples.observations)
        frozen = frozen[0] if isinstance(frozen, tuple) else frozen
    features = layout.time_major(frozen.clone().requires_grad_())
    starts = layout.episode_starts
    recurrent = not hasattr(policy, "cpc_context")
    if recurrent:
        contexts = torch.randn(*features.shape[:2], policy.lstm_output_dim, requires_grad=True)
    else:
        contexts = run_rnn_with_resets(policy.cpc_context, features, starts).detach().requires_grad_()

    def context_pass() -> None:
        run_rnn_with_resets(policy.cpc_context, features, starts).sum().backward()

    def head_pass() -> None:
        policy.cpc_head(features, contexts, starts).loss.backward()

    return {
        "plain": statistics.median(train["plain"]),
        "cpc": statistics.median(train["cpc"]),
        "context": 0.0 if recurrent else _median_ms(context_pass, repeats * 4, clock) * minibatches,
        "head": _median_ms(head_pass, repeats * 4, clock) * minibatches,
        "sampling": sampling * epochs,
    }


def measure_task(env_id: str, args: argparse.Namespace) -> list:
    cpc_kwargs = {"horizon": args.horizon} if args.horizon else {}
    if args.context_network and args.algos != ["recurrent_ppo"]:
        cpc_kwargs["context_network"] = args.context_network
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    vec_env = envs.make_vec_env(env_id, args.n_envs, vec_env="dummy")
    task = env_id.removeprefix("MiniWorld-")
    breakdowns = []
    for algo in args.algos:
        builders = {
            "none": functools.partial(make_agent, algo, vec_env, aux="none", device=args.device),
            "cpc": functools.partial(make_agent, algo, vec_env, aux="cpc", device=args.device, cpc_kwargs=cpc_kwargs),
        }
        if algo == "recurrent_ppo" and not args.no_contrib:
            builders["sb3-contrib RecurrentPPO"] = functools.partial(plain_recurrent_ppo, vec_env, args.device)
        results = {name: [] for name in builders}
        for _ in range(args.repeats):
            for name, build in builders.items():
                results[name].append(timed_learn(build(), args.steps, clock))
        plain = statistics.median(wall for wall, _ in results["none"])
        for name, runs in results.items():
            wall = statistics.median(w for w, _ in runs)
            training = statistics.median(t / w for w, t in runs)
            label = f"{algo} aux={name}" if name in ("none", "cpc") else name
            print(f"| {task} | {label} | {args.steps / wall:.0f} | {training:.0%} | {wall / plain:.2f} |", flush=True)
        if args.breakdown:
            parts = train_breakdown(builders["none"](), builders["cpc"](), args.repeats, clock)
            breakdowns.append((env_id, algo, parts))
    vec_env.close()
    return breakdowns


if __name__ == "__main__":
    main()
