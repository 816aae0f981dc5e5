"""How a study is run: training runs on disk, evaluation, comparisons of arms, reports and statistics.

What is trained (networks, presets) lives in ``agents``; this package runs and compares it.
"""

if __name__ != "cpc_rl.experiments":  # this folder imported by its own name, from a checkout's root
    raise ImportError(
        "cpc-rl's experiments/ folder installs as cpc_rl.experiments: import it as `from cpc_rl import experiments`"
    )
