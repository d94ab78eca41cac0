"""The distillation benchmark's bookkeeping: whole units, paired means, goals and resuming.

No training here: rows are written by hand, as a stopped run on another machine would leave them.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sdm_controller.bench import distill_benchmark as db
from sdm_controller.bench import teacher_benchmark as tb


def unit_rows(task: str, prediction: str, seed: int, success: dict[str, float]) -> list[dict]:
    """One row per method named in ``success``; a method left out of it is a missing run."""
    rows = []
    for method, value in success.items():
        rows.append({"task": task, "prediction": prediction, "seed": seed, "method": method,
                     "success": value, "ms_per_chunk": 1.0})
    return rows


def teacher(ddpm: float, ddim1: float) -> dict[str, float]:
    values = {f"teacher-{m}{n}": 0.5 for m, n in tb.SAMPLERS}
    values["teacher-ddpm100"] = ddpm
    values["teacher-ddim1"] = ddim1
    return values


EPS_WHOLE = {**teacher(0.50, 0.30), "cd": 0.2, "onedp-s": 0.1, "onedp-d": 0.6, "sdm": 0.49, "sdm-literal": 0.4}


def test_partial_units_are_left_out_of_every_mean() -> None:
    partial = {**teacher(1.0, 1.0), "cd": 1.0, "sdm": 1.0}  # no onedp-s, onedp-d, sdm-literal
    rows = unit_rows("drawer-open", "epsilon", 0, EPS_WHOLE) + unit_rows("drawer-open", "epsilon", 1, partial)
    whole = db.whole_unit_rows(rows)
    assert {r["seed"] for r in whole} == {0}
    mean = {i["method"]: i["success"] for i in tb.summarize(whole)}
    assert mean["sdm"] == pytest.approx(0.49) and mean["cd"] == pytest.approx(0.2)


def test_a_duplicated_row_makes_a_unit_not_whole() -> None:
    rows = unit_rows("push", "epsilon", 0, EPS_WHOLE)
    assert db.is_whole(rows, "epsilon")
    assert not db.is_whole(rows + rows[-1:], "epsilon")


def test_goals_allow_two_points_below_ddpm_but_not_below_ddim1_and_report_a_stronger_baseline() -> None:
    rows = unit_rows("push", "epsilon", 0, EPS_WHOLE)
    rows += unit_rows("push", "sample", 0, {**teacher(0.90, 0.85), "sdm": 0.84})
    result = db.goals(tb.summarize(db.whole_unit_rows(rows)))
    eps, x0 = result["epsilon"], result["sample"]
    assert eps["met"] == {"teacher-ddpm100": True, "teacher-ddim1": True, "onedp-s": True, "cd": True}
    assert eps["all_met"] and eps["margins"]["onedp-d"] == pytest.approx(-0.11)
    assert x0["met"] == {"teacher-ddpm100": False, "teacher-ddim1": False} and not x0["all_met"]


def test_resume_takes_whole_units_of_the_same_settings_only(tmp_path: Path) -> None:
    settings = {"episodes": 50, "distill_steps": 100, "batch_size": 128, "methods": db.METHODS}
    rows = unit_rows("hammer", "epsilon", 2, EPS_WHOLE) + unit_rows("hammer", "epsilon", 0, teacher(0.4, 0.3))
    out = tmp_path / "distill.json"
    out.write_text(json.dumps({"settings": settings, "rows": rows}))
    work = tmp_path / "work"
    assert db.resume_from_results(out, work, settings) == 1
    assert db.row_file(work, "hammer", "epsilon", 2, "sdm").exists()
    assert not db.row_file(work, "hammer", "epsilon", 0, "teacher").exists()
    assert len(db.collect_rows(work)) == len(rows) - len(tb.SAMPLERS)
    other = tmp_path / "other"
    assert db.resume_from_results(out, other, {**settings, "distill_steps": 200}) == 0
    assert not other.exists()


def test_written_results_carry_goals_and_per_task_means(tmp_path: Path) -> None:
    rows = unit_rows("push", "epsilon", 0, EPS_WHOLE) + unit_rows("push", "epsilon", 1, teacher(0.0, 0.0))
    out = tmp_path / "distill.json"
    db.write(rows, out, "python -m sdm_controller bench distill", {"methods": db.METHODS})
    result = json.loads(out.read_text())
    assert result["units_whole"] == 1 and len(result["rows"]) == len(rows)
    assert result["goals"]["epsilon"]["sdm"] == pytest.approx(0.49)
    assert {(i["task"], i["method"]) for i in result["by_task"]} >= {("push", "sdm"), ("push", "teacher-ddpm100")}
    assert out.with_suffix(".png").exists()
