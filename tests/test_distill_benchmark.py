"""The distillation benchmark: bookkeeping on hand-written rows, then one tiny unit end to end.

The bookkeeping tests write rows by hand, as a stopped run on another machine would leave them:
whole units, summary, cost ratio, goals (curves included), resuming, and budgets kept apart.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from sdm_controller.bench import distill_benchmark as db
from sdm_controller.bench import teacher_benchmark as tb
from sdm_controller.errors import ConfigError

METHODS = {"sample": db.METHODS["sample"]}
TEACHER_SECONDS = 200.0


def unit_rows(task: str, prediction: str, seed: int, success: dict[str, float],
              curves: dict[str, list[float]] | None = None) -> list[dict]:
    """One row per method named in ``success`` (a method left out is a missing run), with the new
    budget's fields; a one-step method's curve is flat at its success unless ``curves`` gives one."""
    rows = []
    for method, value in success.items():
        kind = db.kind_of(method)
        seconds = {"teacher": TEACHER_SECONDS, "distilled": 16.0, "teacher-free": 220.0}[kind]
        row = {"task": task, "prediction": prediction, "seed": seed, "method": method, "kind": kind,
               "success": value, "ms_per_chunk": 1.0, "train_steps": 100 if kind == "distilled" else 1000,
               "train_seconds": seconds, "teacher_train_seconds": TEACHER_SECONDS}
        if kind != "teacher":
            curve = (curves or {}).get(method, [value] * 5)
            row["curve_steps"] = [20 * (i + 1) for i in range(len(curve))]
            row["curve_success"] = curve
        rows.append(row)
    return rows


def teacher(ddpm: float, ddim1: float) -> dict[str, float]:
    values = {f"teacher-{m}{n}": 0.5 for m, n in db.SAMPLERS}
    values["teacher-ddpm100"] = ddpm
    values["teacher-ddim1"] = ddim1
    return values


WHOLE = {**teacher(0.80, 0.70), "sdm": 0.79, "sdm-literal": 0.6, "onedp-s": 0.5, "onedp-d": 0.85, "cd": 0.4,
         "regression": 0.7, "meanflow": 0.75}


def test_partial_units_and_units_of_the_old_samplers_are_left_out_of_every_mean() -> None:
    partial = {k: 1.0 for k in WHOLE if k != "meanflow"}
    old_samplers = {k: 1.0 for k in WHOLE if k != "teacher-ddim2"}  # the 100-iteration budget had no DDIM-2
    rows = (unit_rows("push", "sample", 0, WHOLE) + unit_rows("push", "sample", 1, partial)
            + unit_rows("push", "sample", 2, old_samplers))
    whole = db.whole_unit_rows(rows, METHODS)
    assert {r["seed"] for r in whole} == {0}
    assert not db.is_whole(unit_rows("push", "sample", 0, WHOLE) * 2, METHODS["sample"])
    mean = {i["method"]: i["success"] for i in db.summarize(whole)}
    assert mean["sdm"] == pytest.approx(0.79) and mean["teacher-ddim2"] == pytest.approx(0.5)


def test_summary_has_train_seconds_and_their_ratio_to_the_teachers() -> None:
    rows = unit_rows("push", "sample", 0, WHOLE) + unit_rows("hammer", "sample", 0, WHOLE)
    rows[-1]["train_seconds"] = 260.0  # hammer's meanflow: mean 240 s
    summary = {i["method"]: i for i in db.summarize(db.whole_unit_rows(rows, METHODS))}
    assert summary["sdm"]["kind"] == "distilled" and summary["sdm"]["runs"] == 2
    assert summary["sdm"]["cost_ratio"] == pytest.approx(16 / 200) and summary["sdm"]["train_steps"] == 100
    assert summary["meanflow"]["train_seconds"] == pytest.approx(240) and summary["meanflow"]["cost_ratio"] == 1.2
    assert summary["teacher-ddpm100"]["cost_ratio"] == 1.0 and summary["teacher-ddpm100"]["curve_steps"] == []
    assert summary["sdm"]["curve_steps"] == [20, 40, 60, 80, 100]
    assert summary["sdm"]["curve_success"] == pytest.approx([0.79] * 5)


def test_goals_compare_sdm_with_every_baseline_and_check_curves_and_cost() -> None:
    curves = {"cd": [0.2, 0.8, 0.7, 0.6, 0.6], "onedp-s": [0.2, 0.6, 0.6, 0.5, 0.5]}  # falls 0.2 / exactly 0.1
    rows = unit_rows("push", "sample", 0, {**WHOLE, "cd": 0.6, "onedp-s": 0.5}, curves)
    result = db.goals(db.summarize(db.whole_unit_rows(rows, METHODS)))["sample"]
    assert result["met"] == {"teacher-ddpm100": True, "teacher-ddim1": True, "regression": True, "meanflow": True,
                             "onedp-s": True, "onedp-d": False, "cd": True}
    assert result["margins"]["onedp-d"] == pytest.approx(-0.06)
    assert result["stable"]["cd"]["fall"] == pytest.approx(0.2) and not result["stable"]["cd"]["met"]
    assert result["stable"]["onedp-s"]["met"] and result["stable"]["sdm"]["met"]
    assert set(result["cost"]) == set(db.DISTILLED) and all(g["met"] for g in result["cost"].values())
    assert not result["all_met"]

    fine = db.goals(db.summarize(unit_rows("push", "sample", 0, {**WHOLE, "onedp-d": 0.7})))["sample"]
    assert fine["all_met"]
    slow = unit_rows("push", "sample", 0, {**WHOLE, "onedp-d": 0.7})
    next(r for r in slow if r["method"] == "cd")["train_seconds"] = 21.0  # 10.5 % of the teacher's
    slow_goals = db.goals(db.summarize(slow))["sample"]
    assert not slow_goals["cost"]["cd"]["met"] and not slow_goals["all_met"]


def test_resume_takes_whole_units_of_the_same_budget_only(tmp_path: Path, capsys) -> None:
    settings = {**db.Budget().settings(), "methods": METHODS}
    rows = unit_rows("hammer", "sample", 2, WHOLE) + unit_rows("hammer", "sample", 0, teacher(0.4, 0.3))
    out = tmp_path / "distill.json"
    out.write_text(json.dumps({"settings": settings, "rows": rows}))
    run = db.Budget().run_dir(tmp_path / "work")
    assert db.resume_from_results(out, run, settings) == 1
    assert db.row_file(run, "hammer", "sample", 2, "sdm").exists()
    assert not db.row_file(run, "hammer", "sample", 0, "teacher").exists()
    assert len(db.collect_rows(run)) == len(WHOLE)

    other = db.Budget(teacher_steps=2000, distill_steps=200, eval_every=40)
    assert other.run_dir(tmp_path / "work") != run and other.teacher_work(tmp_path / "work") != run.parent.parent
    assert db.resume_from_results(out, other.run_dir(tmp_path / "work"), {**other.settings(), "methods": METHODS}) == 0
    assert "another budget" in capsys.readouterr().out and not other.run_dir(tmp_path / "work").exists()


def test_the_previous_100_iteration_table_is_not_mixed_in(tmp_path: Path, capsys) -> None:
    """The committed table of the previous benchmark: no teacher budget, no curves, no DDIM-2."""
    old_settings = {"episodes": 50, "distill_steps": 100, "batch_size": 128, "methods": {"sample": ["sdm"]}}
    old_rows = [{k: v for k, v in row.items() if k not in ("curve_steps", "curve_success", "train_steps")}
                for row in unit_rows("push", "sample", 0, {**teacher(0.8, 0.7), "sdm": 0.7})
                if row["method"] != "teacher-ddim2"]
    out = tmp_path / "distill.json"
    out.write_text(json.dumps({"settings": old_settings, "rows": old_rows}))
    run = db.Budget().run_dir(tmp_path / "work")
    assert db.resume_from_results(out, run, {**db.Budget().settings(), "methods": METHODS}) == 0
    assert "starting fresh" in capsys.readouterr().out
    assert db.collect_rows(run) == []


def test_written_results_carry_summary_goals_and_both_figures(tmp_path: Path) -> None:
    rows = unit_rows("push", "sample", 0, WHOLE) + unit_rows("push", "sample", 1, teacher(0.0, 0.0))
    out = tmp_path / "distill.json"
    db.write(rows, out, "python -m sdm_controller bench distill", {"methods": METHODS})
    result = json.loads(out.read_text())
    assert result["units_whole"] == 1 and len(result["rows"]) == len(rows)
    assert result["goals"]["sample"]["sdm"] == pytest.approx(0.79)
    assert {"cost_ratio", "train_seconds", "teacher_train_seconds", "curve_steps"} <= set(result["summary"][0])
    assert {(i["task"], i["method"]) for i in result["by_task"]} >= {("push", "sdm"), ("push", "teacher-ddim2")}
    assert out.with_suffix(".png").exists() and db.curves_path(out).exists()


def test_methods_outside_the_benchmark_are_refused() -> None:
    assert db.selected_methods(["sample"], ["regression", "sdm"]) == {"sample": ["sdm", "regression"]}
    with pytest.raises(ConfigError, match="'sdm-fast' is not one the benchmark runs"):
        db.selected_methods(["sample"], ["sdm-fast"])


def test_one_tiny_unit_end_to_end_writes_rows_with_curves(drawer_dataset, tmp_path: Path, monkeypatch, capsys) -> None:
    """Teacher 3 steps, SDM 2 iterations evaluated at each, regression at the teacher's 3 steps, 1 episode."""
    from sdm_controller.cli import main

    monkeypatch.setattr(tb, "LATENCY_CALLS", {n: 1 for _, n in db.SAMPLERS})  # the workers are forked
    root, out = tmp_path / "work", tmp_path / "results" / "distill.json"
    budget = db.Budget(teacher_steps=3, distill_steps=2, eval_every=1, episodes=1, batch_size=8)
    shutil.copytree(drawer_dataset, budget.teacher_work(root) / "data" / "drawer-open.zarr")  # its demos are there
    argv = ["bench", "distill", "--work", str(root), "--out", str(out), "--tasks", "drawer-open", "--seeds", "0",
            "--methods", "sdm", "regression", "--teacher-steps", "3", "--distill-steps", "2", "--eval-every", "1",
            "--episodes", "1", "--batch-size", "8", "--jobs", "1"]
    assert main(argv) == 0
    result = json.loads(out.read_text())
    rows = {row["method"]: row for row in result["rows"]}
    assert sorted(rows) == sorted([f"teacher-{m}{n}" for m, n in db.SAMPLERS] + ["regression", "sdm"])
    assert result["units_whole"] == 1 and result["settings"]["teacher_free_eval_every"] == 2
    assert rows["sdm"]["curve_steps"] == [1, 2] and rows["sdm"]["train_steps"] == 2
    assert [d["step"] for d in rows["sdm"]["diagnostics"]] == [1, 2]
    assert rows["regression"]["curve_steps"] == [2, 3] and rows["regression"]["train_steps"] == 3
    assert "diagnostics" not in rows["regression"]
    teacher_seconds = rows["teacher-ddpm100"]["train_seconds"]
    assert all(row["teacher_train_seconds"] == teacher_seconds and row["ms_per_chunk"] > 0 for row in rows.values())
    assert rows["sdm"]["success"] == rows["sdm"]["curve_success"][-1]
    assert db.curves_path(out).exists() and out.with_suffix(".png").exists()
    assert "sample" in result["goals"]

    capsys.readouterr()
    assert main(argv) == 0  # resumes: every run of the unit is done
    assert "0 runs to do" in capsys.readouterr().out
