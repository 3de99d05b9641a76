"""Smoke tests of the CPU benchmarks (benchmarks/): tiny sizes, well-formed rows, no timing assertions."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

import common  # noqa: E402


def _check(rows: list[dict], n: int, baseline: bool = True) -> None:
    common.check_rows(rows)
    assert len(rows) == n
    for r in rows:
        assert r["ours"]["median"] > 0
        assert (r["baseline"] is not None) == baseline
        assert (r["ratio"] is not None) == baseline
    table = common.markdown_table(rows)
    assert table.count("\n") == n + 1  # header, rule, one line per row


def test_row_ratio_and_goal():
    fast = common.row("b", "c", "tokens/s", "tok/s", [10, 12, 11], [5, 6, 4], "base", goal=1.5)
    assert fast["ours"] == {"median": 11, "min": 10, "max": 12, "n": 3}
    assert fast["ratio"] == pytest.approx(11 / 5) and fast["met"] is True
    slow = common.row("b", "c", "time", "s", [2.0], [1.0], "base", higher_is_better=False, goal=1.0)
    assert slow["ratio"] == pytest.approx(0.5) and slow["met"] is False
    alone = common.row("b", "c", "time", "s", [2.0], None, "base", goal=2.0)
    assert alone["ratio"] is None and alone["met"] is None
    common.check_rows([fast, slow, alone])
    with pytest.raises(ValueError, match="keys"):
        common.check_rows([{**fast, "extra": 1}])


def test_peak_rss_sees_an_allocation():
    with common.PeakRSS() as mem:
        block = bytearray(64 * 2**20)
        block[::4096] = b"x" * len(block[::4096])  # touch every page
    del block
    assert mem.delta_mib > 50


def test_header_names_versions_and_threads():
    common.setup()
    h = common.header()
    assert h["threads"] == int(os.environ.get("BENCH_THREADS", common.THREADS))
    assert {"device", "torch", "transformers", "lightning", "trl", "loadavg", "others_busy_cores"} <= set(h)


def test_prm_training_ours_quick():
    import prm_training

    rows = prm_training.run(quick=True, trl=False)
    _check(rows, 3, baseline=False)
    assert rows[0]["goal"] == prm_training.GOAL


def test_prm_training_against_trl_quick():
    pytest.importorskip("trl")
    import prm_training

    rows = prm_training.run(quick=True, trl=True)
    _check(rows, 3)
    assert "same non-pad tokens per step: yes" in rows[0]["notes"]


def test_bon_scoring_quick_scores_agree():
    import bon_scoring

    rows = bon_scoring.run(quick=True)
    _check(rows, 3)
    diff = float(re.search(r"max \|score difference\| vs ours (\S+)", rows[0]["notes"]).group(1))
    assert diff < 1e-4


def test_rollouts_quick():
    import rollouts

    rows = rollouts.run(quick=True)
    _check(rows, 5)  # B=1 and B=2 (steps/s, tokens/s), then the engine
    assert rows[-1]["benchmark"] == "ALFWorld engine"
    assert "identical traces: yes" in rows[-1]["notes"]


def test_engine_quick():
    import engine

    rows = engine.run(quick=True)
    _check(rows[:3], 3)  # two throughput rows, snapshot vs replay
    _check(rows[3:], 1, baseline=False)  # the oracle's cost per state
    assert [r["benchmark"] for r in rows] == ["ALFWorld engine"] * 3 + ["Reference values"]


def test_run_all_discovers_modules_and_keeps_hand_written_text(tmp_path):
    import run_all

    names = [m.__name__ for m in run_all.discover()]
    assert names[:3] == ["prm_training", "bon_scoring", "rollouts"]
    assert "alfworld_engine" not in names and "common" not in names
    doc = tmp_path / "benchmarks.md"
    doc.write_text(f"# Title\n\nintro\n\n{run_all.BEGIN}\nold\n{run_all.END}\n\n## Analysis\n\nkept\n")
    rows = [common.row("b", "c", "m", "u", [1.0, 2.0], [1.0], "base")]
    section = {"name": "b", "module": "b", "rows": rows, "error": None, "seconds": 1.0, "others_busy": 0.0}
    run_all.write_doc(run_all.render(common.header(), [section], 3.0, quick=True), doc)
    text = doc.read_text()
    assert text.startswith("# Title\n\nintro\n") and text.endswith("## Analysis\n\nkept\n")
    assert "old" not in text and "| b | c | m [u] |" in text


def test_dpo_step_quick():
    """Full fine-tuning and LoRA rows; with TRL installed: same tokens and first log-probs as TRL."""
    import importlib.util

    import dpo_step

    with_trl = importlib.util.find_spec("trl") is not None
    rows = dpo_step.run(quick=True)
    _check(rows, 6, baseline=with_trl)  # (throughput, step time, memory) × (full, LoRA)
    assert [r["case"].split(",")[0] for r in rows] == ["full FT"] * 3 + ["LoRA r16"] * 3
    for r in (rows[0], rows[3]):
        assert r["goal"] == dpo_step.GOAL and r["ours"]["n"] >= 2
        if with_trl:
            assert "same non-pad tokens per step: yes" in r["notes"]
            diff = float(re.search(r"max \|difference\| (\S+)\)", r["notes"]).group(1))
            assert diff < 1e-3
