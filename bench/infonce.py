"""Forward + backward of CPCHead at the paper's RL sizes: time, peak memory, matmul efficiency.

Efficiency = useful matrix-multiply FLOP/s of the head divided by this machine's dense fp32
matmul rate, both measured in this run. Useful FLOPs: the prediction ``W_k c_t`` for every
anchor and k, and the scores of every valid anchor against its candidates, forward and
backward (backward counted as twice the forward). Each case runs in a fresh process so that
its peak memory is its own.

    python bench/infonce.py [--steps 100 --batch 16 --horizon 30 --dim 256 --repeats 5]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch

from cpc_rl import CPCHead

CASES = {"all": {}, "all, num_negatives=64": {"num_negatives": 64}}


def dense_matmul_rate(size: tuple[int, int, int] = (1600, 256, 1600), repeats: int = 50) -> float:
    """fp32 FLOP/s of one dense matmul shaped like the head's scores."""
    m, k, n = size
    a, b = torch.randn(m, k), torch.randn(k, n)
    for _ in range(5):
        a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * m * k * n * repeats / (time.perf_counter() - start)


def useful_flops(args: argparse.Namespace, num_negatives: int | None) -> float:
    t, b, k_max, d = args.steps, args.batch, args.horizon, args.dim
    predict = 2 * t * b * d * k_max * d
    score = 0.0
    for k in range(1, min(k_max, t - 1) + 1):
        anchors = (t - k) * b
        candidates = anchors if num_negatives is None else num_negatives + 1
        score += 2 * anchors * candidates * d
    return 3 * (predict + score)


def run_case(args: argparse.Namespace, name: str) -> dict:
    torch.manual_seed(0)
    head = CPCHead(args.dim, args.dim, args.horizon, **CASES[name])
    embeddings = torch.randn(args.steps, args.batch, args.dim, requires_grad=True)
    contexts = torch.randn(args.steps, args.batch, args.dim, requires_grad=True)
    starts = torch.zeros(args.steps, args.batch, dtype=torch.bool)
    baseline_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times = []
    for i in range(args.repeats + 1):
        start = time.perf_counter()
        head(embeddings, contexts, starts).loss.backward()
        if i > 0:  # the first call warms up the allocator and kernels
            times.append(time.perf_counter() - start)
    peak_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - baseline_kb) / 1024
    seconds = sorted(times)[len(times) // 2]
    return {"seconds": seconds, "peak_mb": peak_mb, "flops": useful_flops(args, CASES[name].get("num_negatives"))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--horizon", type=int, default=30)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        print(json.dumps(run_case(args, args.case)))
        return
    rate = dense_matmul_rate()
    print(
        f"T={args.steps} B={args.batch} K={args.horizon} D={args.dim}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads; dense fp32 matmul: {rate / 1e9:.1f} GFLOP/s"
    )
    print("| case | forward+backward (s) | peak memory (MB) | useful GFLOP | GFLOP/s | efficiency |")
    print("|---|---|---|---|---|---|")
    for name in CASES:
        command = [sys.executable, __file__, "--case", name] + [
            f"--{key}={getattr(args, key)}" for key in ("steps", "batch", "horizon", "dim", "repeats")
        ]
        result = json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)
        achieved = result["flops"] / result["seconds"]
        print(
            f"| {name} | {result['seconds']:.3f} | {result['peak_mb']:.0f} | {result['flops'] / 1e9:.1f} "
            f"| {achieved / 1e9:.1f} | {achieved / rate:.2f} |"
        )


if __name__ == "__main__":
    main()
