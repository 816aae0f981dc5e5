"""The comparison report's statistics, checked against hand computations on fixed numbers."""

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from cpc_rl.experiments import report as report_module
from cpc_rl.experiments.compare import Arm, find_jobs, parse_arm, plan_jobs
from cpc_rl.experiments.config import RunConfig, RunError
from cpc_rl.experiments.goals import Goal
from cpc_rl.experiments.report import (
    aggregate_table,
    run_scores,
    scaled_for_aggregate,
    training_curve,
    write_report,
)
from cpc_rl.experiments.stats import difference_ci, iqm, probability_of_improvement

STEPS = 1000
# Final evaluation returns per (env, arm): 4 seeds each.
FINAL = {
    ("MiniWorld-Hallway-v0", "none"): [0.1, 0.2, 0.3, 0.9],
    ("MiniWorld-Hallway-v0", "cpc"): [0.4, 0.5, 0.6, 0.7],
    ("MiniWorld-TMaze-v0", "none"): [0.0, 0.0, 0.1, 0.1],
    ("MiniWorld-TMaze-v0", "cpc"): [0.2, 0.0, 0.3, 0.1],
}


def write_run(out, env_id, arm, seed, final, episode_returns, finished=True):
    run_dir = out / "runs" / env_id / arm / f"seed_{seed}"
    (run_dir / "monitor").mkdir(parents=True)
    aux = "none" if arm == "none" else "cpc"
    config = RunConfig(env=env_id, algo="ppo", aux=aux, steps=STEPS, seed=seed, eval_episodes=20)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config.to_dict()))
    state = "finished" if finished else "running"
    status = {"state": state, "num_timesteps": STEPS, "train_seconds": 90.0, "eval_seconds": 10.0, "cpu_seconds": 120.0}
    (run_dir / "status.json").write_text(json.dumps(status))
    evaluations = pd.DataFrame(
        {"step": [STEPS // 2, STEPS], "mean_return": [0.0, final], "return_ci95": [0.0, 0.1], "success_rate": [0, 1]}
    )
    evaluations.to_csv(run_dir / "evaluations.csv", index=False)
    # One env, episodes of 100 steps: episode i ends at step 100 (i + 1), one per curve bin of 50 steps... every other.
    monitor = pd.DataFrame({"r": episode_returns, "l": [100] * len(episode_returns), "t": range(len(episode_returns))})
    (run_dir / "monitor" / "0.monitor.csv").write_text("#{}\n" + monitor.to_csv(index=False))
    return run_dir


@pytest.fixture
def comparison(tmp_path):
    out = tmp_path / "study"
    for (env_id, arm), finals in FINAL.items():
        for seed, final in enumerate(finals):
            write_run(out, env_id, arm, seed, final, [final / 2] * 5 + [final] * 5)
    write_run(out, "MiniWorld-TMaze-v0", "cpc", 9, 1.0, [1.0] * 10, finished=False)
    stale = write_run(out, "MiniWorld-TMaze-v0", "cpc", 5, 1.0, [1.0] * 10, finished=False)
    stale.rename(stale.with_name("seed_5.stale-123"))  # set aside by compare: never reported
    return out


def test_training_curve_bins_episodes_by_their_last_step(tmp_path):
    run_dir = write_run(tmp_path, "MiniWorld-Hallway-v0", "none", 0, 0.5, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9])
    # Episodes end at steps 100..1000; 10 bins of 100 steps: the episode ending at 1000 joins the last bin.
    curve = training_curve(run_dir, STEPS, bins=10)
    np.testing.assert_allclose(curve, [np.nan, 0, 1, 2, 3, 4, 5, 6, 7, 8.5])
    curve = training_curve(run_dir, STEPS, bins=5)
    np.testing.assert_allclose(curve, [0, 1.5, 3.5, 5.5, 8])


def test_report_statistics_match_hand_computation(comparison):
    jobs = find_jobs(comparison)
    assert len(jobs) == 17
    report = write_report(jobs, comparison).read_text()
    scores = pd.read_csv(comparison / "report" / "scores.csv")
    assert len(scores) == 16, "the unfinished run must not enter the statistics"
    hallway_cpc = scores[(scores["env"] == "MiniWorld-Hallway-v0") & (scores["arm"] == "cpc")].sort_values("seed")
    np.testing.assert_allclose(hallway_cpc["final_return"], [0.4, 0.5, 0.6, 0.7])
    # AUC over 20 bins of 50 steps: episodes end every 100 steps, so 10 bins hold one episode each,
    # 5 of them at final/2 and 5 at final: AUC = 0.75 * final.
    np.testing.assert_allclose(hallway_cpc["auc"], 0.75 * np.array([0.4, 0.5, 0.6, 0.7]))
    # IQM of [0.1, 0.2, 0.3, 0.9] is the mean of the middle two: 0.25; the mean is 0.375.
    assert iqm(np.array([0.1, 0.2, 0.3, 0.9])) == pytest.approx(0.25)
    assert "| none | 4 | 0.375 [" in report and "| 0.250 [" in report
    # Difference of means: 0.55 - 0.375 = 0.175.
    estimate, low, high = difference_ci(np.array([0.4, 0.5, 0.6, 0.7]), np.array([0.1, 0.2, 0.3, 0.9]))
    assert estimate == pytest.approx(0.175) and low < estimate < high
    assert f"| cpc − none | {estimate:.3f} [{low:.3f}, {high:.3f}]" in report
    # P(cpc > none) on TMaze by hand: pairs (x > y) + 0.5 (x == y) over 16 pairs, then averaged with Hallway.
    tmaze = _probability(FINAL[("MiniWorld-TMaze-v0", "cpc")], FINAL[("MiniWorld-TMaze-v0", "none")])
    hallway = _probability(FINAL[("MiniWorld-Hallway-v0", "cpc")], FINAL[("MiniWorld-Hallway-v0", "none")])
    assert "| final_return | cpc | " in report
    assert f"{(tmaze + hallway) / 2:.3f} [" in report
    # Per env, beside the difference: P(cpc > none) on that env alone.
    tmaze_row = next(line for line in report.split("## MiniWorld-TMaze-v0")[1].splitlines() if "| cpc − none |" in line)
    estimate, low, high = probability_of_improvement(
        FINAL[("MiniWorld-TMaze-v0", "cpc")], FINAL[("MiniWorld-TMaze-v0", "none")]
    )
    assert estimate == pytest.approx(tmaze) and low <= estimate <= high
    assert f"| {tmaze:.3f} [" in tmaze_row
    assert "Evaluation took 10.0% of the runs' wall time" in report
    # 16 finished runs at 120 CPU s each, and the running one by its Monitor clock (9 s).
    assert f"CPU time: {(16 * 120 + 9) / 3600:.2f} h over 17 runs" in report
    assert "| MiniWorld-TMaze-v0 | 2.0 | 2.0 |" in report
    assert "## Not finished (not in the statistics)" in report and "seed_9" in report
    assert (comparison / "report" / "profiles.png").stat().st_size > 1000


def _probability(treated, control):
    return float(np.mean([(x > y) + 0.5 * (x == y) for x in treated for y in control]))


def test_the_aggregate_is_the_same_on_every_rebuild(comparison):
    scores = pd.DataFrame([score for job in find_jobs(comparison) if (score := run_scores(job)) is not None])
    arms = sorted(scores["arm"].unique())
    first = aggregate_table(scores, arms, "none", reps=200)
    np.random.random(7)  # the caller's generator moved on: rliable's draws must not follow it
    before = np.random.get_state()[1].copy()
    assert aggregate_table(scores, arms, "none", reps=200) == first
    assert np.array_equal(np.random.get_state()[1], before)  # and it is given back as it was


def test_returns_outside_0_1_are_put_on_one_scale_before_they_are_aggregated():
    # ViZDoom-like: kills on one task (about 3-8), tics or hits on another (about 13-17).
    rng = np.random.default_rng(0)
    rows = [
        {"env": env, "arm": arm, "seed": seed, "final_return": base + shift + rng.normal(), "auc": base + shift}
        for env, base in (("DefendCenter", 3.0), ("DefendLine", 13.0))
        for arm, shift in (("none", 0.0), ("cpc", 2.0))
        for seed in range(6)
    ]
    scores = pd.DataFrame(rows)
    scaled, sentence = scaled_for_aggregate(scores)
    assert "min-max normalised" in sentence
    for _, env_scores in scaled.groupby("env"):
        for metric in ("final_return", "auc"):
            assert env_scores[metric].min() == pytest.approx(0.0) and env_scores[metric].max() == pytest.approx(1.0)
    raw_row, scaled_row = (
        next(
            line
            for line in aggregate_table(table, ["none", "cpc"], "none", reps=200).splitlines()
            if "| final_return | cpc" in line
        )
        for table in (scores, scaled)
    )
    # P(arm > baseline) does not depend on each env's scale; the IQM now lies in [0, 1].
    assert raw_row.split("|")[-2] == scaled_row.split("|")[-2]
    assert 0.0 <= float(scaled_row.split("|")[3].split()[0]) <= 1.0 < float(raw_row.split("|")[3].split()[0])
    unchanged, sentence = scaled_for_aggregate(scores.assign(final_return=[0.5, np.nan] * 12, auc=0.25))
    assert sentence == "returns of these tasks lie in [0, 1]." and (unchanged["auc"] == 0.25).all()


def test_the_profiles_legend_gives_each_arm_its_own_line_colour(comparison, monkeypatch):
    figures = []
    monkeypatch.setattr(report_module, "save_figure_atomically", lambda figure, path: figures.append(figure))
    scores = pd.DataFrame([score for job in find_jobs(comparison) if (score := run_scores(job)) is not None])
    arms = sorted(scores["arm"].unique())
    before = np.random.get_state()[1].copy()
    report_module.plot_profiles(scores, arms, comparison / "profiles.png")
    report_module.plot_profiles(scores, arms, comparison / "profiles.png")
    assert np.array_equal(np.random.get_state()[1], before)  # its bootstrap draws leave the caller's alone
    # and are the same each time: the bands of two drawings match
    first, second = (figure.axes[0].collections[0].get_paths()[0].vertices for figure in figures)
    assert np.array_equal(first, second)
    legend = figures[0].axes[0].get_legend()
    assert [text.get_text() for text in legend.get_texts()] == arms
    colours = [handle.get_color() for handle in legend.legend_handles]
    assert len(set(colours)) == len(arms)


def test_report_refuses_a_baseline_that_is_not_an_arm(comparison):
    with pytest.raises(RunError, match="baseline 'control' is not an arm"):
        write_report(find_jobs(comparison), comparison, baseline="control")


def test_arms_have_readable_distinct_names():
    assert parse_arm("cpc").name == "cpc"
    arm = parse_arm("cpc:coef=0.1,horizon=8")
    assert arm == Arm("cpc", (("coef", 0.1), ("horizon", 8))) and arm.name == "cpc-coef0.1-horizon8"
    assert arm.cpc_kwargs == {"coef": 0.1, "horizon": 8} and arm.aux == "cpc"
    control = parse_arm("control:horizon=8")
    assert control.aux == "cpc" and control.cpc_kwargs == {"horizon": 8, "coef": 0.0}
    assert parse_arm("cpca:coef=0.1").aux == "cpca" and parse_arm("none").aux == "none"
    assert parse_arm("cpc:negatives='same_sequence'").name == "cpc-negativessame_sequence"
    for bad, message in [
        ("ppo", "unknown arm"),
        ("cpc:coef", "key=value"),
        ("cpc:lr=1", "unknown CPC setting"),
        ("none:coef=1", "no CPC settings"),
    ]:
        with pytest.raises(RunError, match=message):
            parse_arm(bad)


def test_runs_are_planned_seed_by_seed_across_tasks(tmp_path):
    budgets = {"MiniWorld-Hallway-v0": 1000, "MiniWorld-OneRoomS6Fast-v0": 2000}
    arms = [parse_arm("none"), parse_arm("cpc")]
    jobs = plan_jobs(RunConfig(algo="recurrent_ppo"), budgets, arms, [3, 4], tmp_path)
    order = [(job.config.seed, job.config.env, job.arm) for job in jobs]
    # A study stopped after 4 runs holds every task and arm at seed 3, not one task at every seed.
    assert order[:4] == [(3, env_id, arm) for env_id in budgets for arm in ("none", "cpc")]
    assert [job.config.steps for job in jobs[:4]] == [1000, 1000, 2000, 2000] and len(set(order)) == 8


def test_compare_probes_memory_tasks_on_the_agents_and_an_exploring_policy(tmp_path):
    budgets = {"MiniWorld-CueCorridor-v0": 1000, "MiniWorld-Hallway-v0": 1000}
    cue, hallway = plan_jobs(RunConfig(algo="recurrent_ppo"), budgets, [parse_arm("cpc")], [3], tmp_path)
    assert not cue.needs_probe, "no probe unless asked"
    cue.probe_episodes = hallway.probe_episodes = 4
    assert cue.missing_probes == ["agent", "explore"] and hallway.missing_probes == ["agent"]
    assert [command[-2:] for command in cue.probe_commands()] == [["--policy", "agent"], ["--policy", "explore"]]
    # A comparison stopped between the two probes takes only the one it lacks when it resumes.
    (cue.run_dir / "probe").mkdir(parents=True)
    (cue.run_dir / "probe" / "probe.csv").write_text("target\n")
    assert cue.missing_probes == ["explore"] and cue.needs_probe
    # A finished run whose model went missing is not probed (its training is not taken again either).
    (cue.run_dir / "status.json").write_text(json.dumps({"state": "finished"}))
    assert cue.missing_probes == [] and not cue.needs_probe


def test_a_rebuilt_report_keeps_its_title_unless_given_another(comparison):
    jobs = find_jobs(comparison)
    assert write_report(jobs, comparison).read_text().startswith("# Comparison of arms\n")
    assert write_report(jobs, comparison, title="Pilot (seeds 1-4)").read_text().startswith("# Pilot (seeds 1-4)\n")
    assert write_report(jobs, comparison).read_text().startswith("# Pilot (seeds 1-4)\n")
    assert write_report(jobs, comparison, title="Study").read_text().startswith("# Study\n")


def test_goal_bounds_follow_their_definitions():
    safe = Goal("safe", "cpc", "upper_at_least")
    helps = Goal("helps", "cpc", "lower_above")
    same = Goal("same", "control", "contains")
    assert safe.passes(0.1, 0.5) and not safe.passes(0.0, 0.49)
    assert helps.passes(0.51, 0.9) and not helps.passes(0.5, 1.0)
    assert same.passes(0.3, 0.7) and same.passes(0.5, 0.9) and not same.passes(0.55, 0.9)


def test_report_checks_pre_registered_goals(comparison):
    goals = [
        {"name": "safe", "arm": "cpc", "bound": "upper_at_least"},
        {"name": "helps", "arm": "cpc", "bound": "lower_above", "envs": ["MiniWorld-Hallway-v0"]},
        {"name": "ten seeds", "arm": "cpc", "bound": "upper_at_least", "min_seeds": 10},
        {"name": "either", "arm": "cpc", "bound": "lower_above", "threshold": 0.9, "at_least": 1},
    ]
    (comparison / "goals.yaml").write_text(yaml.safe_dump(goals))
    report = write_report(find_jobs(comparison), comparison).read_text()
    scores = pd.read_csv(comparison / "report" / "scores.csv")
    hallway = scores[scores["env"] == "MiniWorld-Hallway-v0"]
    estimate, low, high = probability_of_improvement(
        hallway.loc[hallway["arm"] == "cpc", "auc"], hallway.loc[hallway["arm"] == "none", "auc"]
    )
    assert f"| helps | MiniWorld-Hallway-v0 | 4 | {estimate:.3f} [{low:.3f}, {high:.3f}] | " in report
    verdict = f"{int(low > 0.5)} of 1 envs pass, 1 needed: " + ("**met**" if low > 0.5 else "**not met**")
    assert f"- helps (`cpc` vs `none`, auc, lower_above 0.5): {verdict}" in report
    assert "- safe (`cpc` vs `none`, auc, upper_at_least 0.5): 2 of 2 envs pass, 2 needed: **met**" in report
    assert "| ten seeds | MiniWorld-TMaze-v0 | 4 | – | untested |" in report
    assert "upper_at_least 0.5): 0 of 2 envs pass, 2 needed: untested (seeds missing)" in report
    assert "- either (`cpc` vs `none`, auc, lower_above 0.9): 0 of 2 envs pass, 1 needed: **not met**" in report
    (comparison / "goals.yaml").write_text(yaml.safe_dump([{"name": "x", "arm": "cpc", "bound": "above"}]))
    with pytest.raises(RunError, match="bounds are upper_at_least, lower_above, contains"):
        write_report(find_jobs(comparison), comparison)
    (comparison / "goals.yaml").write_text("- name: x\n  colour: red\n")
    with pytest.raises(RunError, match="not a list of goals"):
        write_report(find_jobs(comparison), comparison)


def test_memory_tasks_probed_on_an_exploring_policy_report_the_cue_from_z_and_c(comparison):
    for job in find_jobs(comparison):
        if job.finished and job.config.env == "MiniWorld-TMaze-v0":  # as if it were a memory task
            (job.run_dir / "probe").mkdir()
            rows = [("z", "position", "R2", 0.4), ("z", "cue", "accuracy", 0.6)]
            rows += [("c", "cue", "accuracy", 0.8 + 0.05 * job.config.seed)]
            table = pd.DataFrame(rows, columns=["features", "target", "metric", "score"])
            table.to_csv(job.run_dir / "probe" / "explore.csv", index=False)
    report = write_report(find_jobs(comparison), comparison).read_text()
    tmaze = report.split("## MiniWorld-TMaze-v0")[1].split("\n## ")[0]
    hallway = report.split("## MiniWorld-Hallway-v0")[1].split("\n## ")[0]
    assert "cue from c, explore policy" in tmaze and "cue" not in hallway
    # c's accuracy over seeds 0-3: 0.8, 0.85, 0.9, 0.95 -> 0.875; no own-policy probe: "–" there.
    none_row = next(line for line in tmaze.splitlines() if line.startswith("| none |"))
    assert none_row.endswith("| – | – | 0.600 | 0.875 |")
    header = next(line for line in tmaze.splitlines() if line.startswith("| arm | seeds |"))
    rule = next(line for line in tmaze.splitlines() if line.startswith("|---|"))
    assert header.count("|") == rule.count("|") == none_row.count("|")
    assert "what `c_t` adds is memory" in report


def test_a_committed_study_report_rebuilds_from_its_runs(tmp_path):
    # The committed reports are made from the committed runs alone: rebuilding one gives its numbers.
    committed = Path(__file__).resolve().parent.parent / "results" / "context_network"
    copy = shutil.copytree(committed, tmp_path / "context_network")
    (copy / "report" / "scores.csv").unlink()
    write_report(find_jobs(copy), copy)
    assert (copy / "report" / "scores.csv").read_text() == (committed / "report" / "scores.csv").read_text()


def test_a_report_of_a_folder_without_runs_says_so(tmp_path):
    with pytest.raises(RunError, match="no run in .* has started yet"):
        write_report(find_jobs(tmp_path), tmp_path)


def test_vizdoom_scores_get_no_success_rate_since_a_positive_score_reaches_no_goal():
    from cpc_rl.experiments.report import env_table

    rows = [
        {"env": env_id, "arm": "none", "seed": seed, "final_return": 2.0, "auc": 1.0, "final_success": 1.0}
        for env_id in ("VizdoomDefendCenter-v1", "MiniWorld-Hallway-v0")
        for seed in (1, 2)
    ]
    scores = pd.DataFrame(rows)
    vizdoom_row = env_table(scores, "VizdoomDefendCenter-v1", ["none"], "none").splitlines()[2]
    miniworld_row = env_table(scores, "MiniWorld-Hallway-v0", ["none"], "none").splitlines()[2]
    assert vizdoom_row.split("|")[7].strip() == "–"
    assert miniworld_row.split("|")[7].strip() == "1.00"
