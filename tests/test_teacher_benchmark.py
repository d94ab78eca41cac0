"""One run of the teacher benchmark end to end at toy size: train, evaluate every sampler, write rows.

The row fields come from the teacher artifact's spec, so this is also where a change of the
artifact API shows up in the benchmarks (nothing else runs ``run_one`` short of the benchmark).
"""

from __future__ import annotations

import json
import shutil

from sdm_controller.bench import teacher_benchmark as tb


def test_one_run_writes_a_row_per_sampler(drawer_dataset, tmp_path, monkeypatch):
    monkeypatch.setattr(tb, "LATENCY_CALLS", {100: 1, 10: 1, 4: 1, 1: 1})
    (tmp_path / "data").mkdir()
    shutil.copytree(drawer_dataset, tmp_path / "data" / "drawer-open.zarr")  # the run finds its demos there
    name = tb.run_one("drawer-open", "sample", 0, str(tmp_path), episodes=1, steps=2, batch_size=8, unet="tiny")
    rows = json.loads((tmp_path / "rows" / name).read_text())
    assert [row["method"] for row in rows] == [f"teacher-{m}{n}" for m, n in tb.SAMPLERS]
    assert all(row["train_steps"] == 2 and row["episodes"] == 1 and row["ms_per_chunk"] > 0 for row in rows)
    assert (tb.teacher_dir(tmp_path, "drawer-open", "sample", 0) / "policy.json").is_file()
