"""Pre-registered goals of a comparison: written before its runs, checked by every report."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import yaml

from cpc_rl.experiments.config import RunError
from cpc_rl.experiments.stats import probability_of_improvement

GOALS_FILE = "goals.yaml"
BOUNDS = ("upper_at_least", "lower_above", "contains")


@dataclass(frozen=True)
class Goal:
    """
    One test on P(``arm`` > ``against``) of ``metric`` (a run of one beats a run of the other, ties
    half) and its 95% bootstrap CI, per env.

    :param bound: ``upper_at_least`` (CI's upper end >= ``threshold``: not significantly below),
        ``lower_above`` (lower end > ``threshold``: significantly above) or ``contains`` (the CI
        holds ``threshold``: no difference seen).
    :param envs: the envs tested (default: every env of the comparison).
    :param at_least: how many of them must pass (default: all).
    :param min_seeds: fewer seeds than this in an arm of an env leaves the goal untested.
    """

    name: str
    arm: str
    bound: str
    against: str = "none"
    metric: str = "auc"
    threshold: float = 0.5
    envs: tuple[str, ...] | None = None
    at_least: int | None = None
    min_seeds: int = 2

    def __post_init__(self) -> None:
        if self.bound not in BOUNDS:
            raise ValueError(f"goal {self.name!r} has bound {self.bound!r}; bounds are {', '.join(BOUNDS)}")

    def passes(self, low: float, high: float) -> bool:
        if self.bound == "upper_at_least":
            return high >= self.threshold
        if self.bound == "lower_above":
            return low > self.threshold
        return low <= self.threshold <= high


def read_goals(out_dir: Path) -> list[Goal]:
    """The goals in ``OUT/goals.yaml`` (a list of :class:`Goal` fields), or none if there is no file."""
    path = Path(out_dir) / GOALS_FILE
    if not path.is_file():
        return []
    try:
        entries = yaml.safe_load(path.read_text())
        goals = [Goal(**{**entry, "envs": tuple(entry["envs"]) if entry.get("envs") else None}) for entry in entries]
    except (yaml.YAMLError, TypeError, KeyError, AttributeError) as error:
        raise RunError(f"{path}: not a list of goals (name, arm, bound, ...): {error}") from None
    except ValueError as error:
        raise RunError(f"{path}: {error}") from None
    return goals


def goals_section(goals: list[Goal], scores: pd.DataFrame) -> list[str]:
    """Markdown lines: per goal and env, P [CI] and pass or fail, then each goal's verdict."""
    if not goals:
        return []
    lines = [
        "## Pre-registered goals",
        "",
        f"From `{GOALS_FILE}`: the decision rule the study's plan wrote down before its runs. "
        "P(arm > against) with its 95% bootstrap CI over seeds; "
        "a goal is untested while any of its envs lacks seeds.",
        "",
        "| goal | env | seeds | P [95% CI] | passes |",
        "|---|---|---|---|---|",
    ]
    verdicts = []
    for goal in goals:
        envs = list(goal.envs or dict.fromkeys(scores["env"]))
        passed, tested = 0, True
        for env_id in envs:
            of_env = scores[scores["env"] == env_id]
            treated = of_env.loc[of_env["arm"] == goal.arm, goal.metric].dropna()
            control = of_env.loc[of_env["arm"] == goal.against, goal.metric].dropna()
            seeds = min(len(treated), len(control))
            if seeds < goal.min_seeds:
                tested = False
                lines.append(f"| {goal.name} | {env_id} | {seeds} | – | untested |")
                continue
            estimate, low, high = probability_of_improvement(treated, control)
            ok = goal.passes(low, high)
            passed += ok
            interval = f"{estimate:.3f} [{low:.3f}, {high:.3f}]"
            lines.append(f"| {goal.name} | {env_id} | {seeds} | {interval} | {'yes' if ok else 'no'} |")
        needed = len(envs) if goal.at_least is None else goal.at_least
        if not tested:
            verdict = "untested (seeds missing)"
        else:
            verdict = "**met**" if passed >= needed else "**not met**"
        verdicts.append(
            f"- {goal.name} (`{goal.arm}` vs `{goal.against}`, {goal.metric}, {goal.bound} {goal.threshold}): "
            f"{passed} of {len(envs)} envs pass, {needed} needed: {verdict}"
        )
    return lines + ["", *verdicts, ""]
