"""What a uniformly random policy scores on each task, and how fast the wrapped env steps on one core.

The floor a learning curve starts from (the ViZDoom calibration reads its budgets against it).

    python bench/random_policy.py [--envs VizdoomMyWayHome-v1 ... --episodes 20]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from cpc_rl import envs
from cpc_rl.envs.factory import factory_defaults
from cpc_rl.envs.vizdoom import VIZDOOM_KINDS
from cpc_rl.experiments.stats import mean_ci


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--envs", nargs="+", default=list(VIZDOOM_KINDS), help="env ids (default: the ViZDoom scenarios)"
    )
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(f"uniform random actions, {args.episodes} episodes per task, seed {args.seed}, one process")
    print("| task | return, mean [95% CI] (game score / agent's scaled units) | episode steps, mean | env steps/s |")
    print("|---|---|---|---|")
    for env_id in args.envs:
        scale = factory_defaults(env_id).get("reward_scale", 1.0)  # the agent sees score x scale
        env = envs.make_env(env_id, seed=args.seed, **({"reward_scale": 1.0} if scale != 1.0 else {}))
        returns, lengths, steps, seconds = [], [], 0, 0.0
        try:
            for _ in range(args.episodes):
                env.reset()
                done, total, length = False, 0.0, 0
                start = time.perf_counter()
                while not done:
                    _, reward, terminated, truncated, _ = env.step(env.action_space.sample())
                    done, total, length = terminated or truncated, total + reward, length + 1
                seconds += time.perf_counter() - start
                returns.append(total)
                lengths.append(length)
                steps += length
        finally:
            env.close()
        mean, half = mean_ci(np.array(returns))
        interval = f"{mean:.2f} [{mean - half:.2f}, {mean + half:.2f}]"
        if scale != 1.0:
            interval += f" / {mean * scale:.3g} [{(mean - half) * scale:.3g}, {(mean + half) * scale:.3g}]"
        print(f"| {env_id} | {interval} | {np.mean(lengths):.0f} | {steps / seconds:,.0f} |")


if __name__ == "__main__":
    main()
