"""The benchmark suite works: `python -m bench --smoke` runs every scenario once at small sizes
on the real stack and prints its table. Its figures are not judged against targets here (they
are measurements, see README "Performance"), only checked to be real measurements that keep
the invariants."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.stack import ROOT

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

FIGURES = (
    "slot_utilisation",
    "slot_ideal",
    "slot_measured",
    "cps_utilisation",
    "cps_max_window",
    "engine_rate",
    "celery_rate",
    "engine_ratio",
    "submit_1000_s",
    "submit_5000_s",
    "dispatch_p50_ms",
    "dispatch_p99_ms",
    "mem_5000_api_mb",
    "mem_5000_worker_mb",
    "fair_other_first_dial_s",
    "fair_other_done_s",
    "fair_urgent_first_dial_s",
    "fair_urgent_done_s",
    "fair_share_min",
    "fair_share_max",
    "sched_10_us",
    "sched_1000_us",
    "export_jsonl_rows_s",
    "export_csv_rows_s",
    "export_api_peak_mb",
    *(
        f"dash_{page}_ms"
        for page in ("batches", "batch", "live", "calls", "search", "outcome", "call", "fleet", "results")
    ),
)


def test_bench_smoke_runs_every_scenario_and_prints_the_table(tmp_path: Path) -> None:
    out = tmp_path / "figures.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--json", str(out)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=540,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for label in (
        "Slot utilisation",
        "CPS utilisation",
        "Engine throughput",
        "Submit latency",
        "Dispatch latency",
        "Memory (peak RSS)",
        "Fair turns",
        "Results export",
        "Dashboard",
        "machine:",
    ):
        assert label in done.stdout
    figures = json.loads(out.read_text())["runs"][0]
    for key in FIGURES:
        assert key in figures and math.isfinite(figures[key]) and figures[key] > 0, (key, figures.get(key))
    # What the scenarios measure must be physically possible ...
    assert figures["slot_measured"] >= figures["slot_ideal"] * 0.9
    assert figures["dispatch_samples"] > 0
    # ... and the invariants hold while they measure (the slot scenario raises on a broken one).
    assert figures["cps_max_window"] <= figures["cps_limit"]
    assert figures["fair_other_cps_max_window"] <= 5 and figures["fair_urgent_cps_max_window"] <= 5
    # Turns went where the policy says: the urgent batch and the other tenant were not served last.
    assert figures["fair_urgent_first_dial_s"] < figures["fair_urgent_done_s"]
    assert figures["fair_share_min"] > 0
