"""The SDM study end to end at toy size: a teacher by the benchmark's recipe, two variants with
their per-checkpoint diagnostics, the reference lines, one results file and its figure."""

from __future__ import annotations

import json
import shutil

from sdm_controller.cli import main


def test_study_writes_curves_and_diagnostics_per_variant(drawer_dataset, tmp_path):
    teachers = tmp_path / "teachers"
    (teachers / "data").mkdir(parents=True)
    shutil.copytree(drawer_dataset, teachers / "data" / "drawer-open.zarr")
    out = tmp_path / "study.json"
    argv = ["bench", "sdm-study", "--tasks", "drawer-open", "--teacher-work", str(teachers), "--teacher-steps", "2",
            "--variants", "baseline", "lr_g_5e-6", "--steps", "4", "--eval-every", "2", "--episodes", "1",
            "--batch-size", "8", "--work", str(tmp_path / "work"), "--out", str(out)]
    assert main(argv) == 0
    result = json.loads(out.read_text())
    unit = result["units"][0]
    assert set(unit["reference"]) == {"teacher-ddim10", "teacher-ddim1", "generator-at-init"}
    assert [run["variant"] for run in unit["runs"]] == ["baseline", "lr_g_5e-6"]
    for run in unit["runs"]:
        assert run["eval_step"] == [2, 4] and len(run["diagnostics"]) == 2
    assert result["settings"]["variants"]["lr_g_5e-6"] == {"lr_generator": 5e-6}
    assert out.with_suffix(".png").stat().st_size > 0
    assert main(argv) == 0  # resumed: nothing left to run, the same file again
    assert json.loads(out.read_text())["units"] == result["units"]
