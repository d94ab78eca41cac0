"""Per-checkpoint diagnostics of a distillation run: present with --eval-every, harmless to the run."""

from __future__ import annotations

import math

from sdm_controller.distill.configuration_distill import DistillConfig
from sdm_controller.distill.trainer import distill

KEYS = {"step", "drift", "teacher_gap", "teacher_gap_initial", "out_of_range", "mean_gap", "std_gap", "worst_dim",
        "dm_grad_norm", "dm_cos_teacher", "fake_dsm", "real_dsm"}


def run(tiny_teacher, drawer_dataset, out, eval_every: int, method: str = "sdm") -> dict:
    config = DistillConfig.for_method(method, steps=6, batch_size=8, fake_warmup_steps=2, eval_every=eval_every,
                                      warmup_steps=1)
    return distill(tiny_teacher, drawer_dataset, out, config, progress=False)


def test_every_checkpoint_logs_the_diagnostics(tiny_teacher, drawer_dataset, tmp_path):
    probed = run(tiny_teacher, drawer_dataset, tmp_path / "probed", eval_every=3)
    rows = probed["diagnostics"]
    assert [row["step"] for row in rows] == [3, 6]
    for row in rows:
        assert set(row) >= KEYS
        assert all(math.isfinite(row[k]) for k in KEYS - {"step", "worst_dim"})
        assert 0.0 <= row["out_of_range"] <= 1.0 and -1.0 <= row["dm_cos_teacher"] <= 1.0
    assert rows[1]["drift"] > 0.0  # G moved
    plain = run(tiny_teacher, drawer_dataset, tmp_path / "plain", eval_every=0)
    assert "diagnostics" not in plain
    # the probe draws from its own generators: the run itself is the same with and without it
    assert probed["loss_generator"] == plain["loss_generator"] and probed["loss_fake"] == plain["loss_fake"]


def test_methods_without_a_fake_score_leave_those_fields_empty(tiny_teacher, drawer_dataset, tmp_path):
    rows = run(tiny_teacher, drawer_dataset, tmp_path / "cd", eval_every=6, method="cd")["diagnostics"]
    assert rows[0]["fake_dsm"] is None and rows[0]["dm_cos_teacher"] is None
    assert math.isfinite(rows[0]["teacher_gap"])


def test_anchor_through_the_cli(tiny_teacher, drawer_dataset, tmp_path):
    """--anchor teacher adds the regression onto the teacher's paired sample; a method that has no
    anchor refuses it in one line before anything trains."""
    import json

    from sdm_controller.cli import main

    out = tmp_path / "anchored"
    assert main(["distill", "--teacher", str(tiny_teacher), "--dataset", str(drawer_dataset), "--out", str(out),
                 "--steps", "4", "--batch-size", "8", "--fake-warmup-steps", "1", "--anchor", "teacher"]) == 0
    anchors = json.loads((out / "distill_history.json").read_text())["loss_anchor"]
    assert anchors[0] is None and all(v is not None and v >= 0 for v in anchors[1:])  # G steps after the warm-up
    refused = tmp_path / "refused"
    assert main(["distill", "--method", "cd", "--teacher", str(tiny_teacher), "--dataset", str(drawer_dataset),
                 "--out", str(refused), "--anchor", "teacher"]) == 2
    assert not refused.exists()
