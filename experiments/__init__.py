"""How a study is run: training runs on disk, evaluation, comparisons of arms, reports and statistics.

What is trained (networks, presets) lives in ``agents``; this package runs and compares it.
"""
