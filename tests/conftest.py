"""Test set-up shared by all test modules."""

import os


def pytest_configure(config):
    """Under pytest-xdist, give each worker its share of the cores (and its runs' subprocesses)."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        # n workers each using torch's default of one thread per core would run n^2 threads on n cores.
        threads = str(max(1, (os.cpu_count() or 1) // workers))
        os.environ.setdefault("OMP_NUM_THREADS", threads)
        os.environ.setdefault("MKL_NUM_THREADS", threads)
        import torch

        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
