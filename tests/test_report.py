"""`agentprm report`: plots and report.md from a synthetic run directory written with the real file
formats (summary.json, Lightning CSVLogger metrics.csv, bon_sweep.json, calibration.json)."""

from __future__ import annotations

import csv
import json
import struct
from pathlib import Path

import pytest
from lightning.pytorch.loggers import CSVLogger

from agentprm.cli import main
from agentprm.report import PLOT_FILES, dpo_step_offsets, load_run, read_metrics_csv, write_report

TASKS = ("pick_and_place_simple", "look_at_obj_in_light")


def _iteration(i: int, rate: float, ci: list[float], bon: float | None) -> dict:
    return {
        "iteration": i,
        "policy_success_rate": rate,
        "policy_ci": ci,
        "bon_success_rate": bon,
        "bon_ci": None if bon is None else [round(bon - 0.1, 3), round(bon + 0.1, 3)],
        "bon_n": None if bon is None else 8,
        "mean_actions": 20.5 - 2 * i,
        "prm_pair_acc": None if i == 0 else 0.7 + 0.05 * i,
        "prm_ece": None if i == 0 else 0.1 / i,
        "per_task_type": {t: {"success_rate": rate, "n": 24} for t in TASKS},
        "stage_seconds": {"sft": 60.0}
        if i == 0
        else {"rollout": 30.0, "prm": 12.5, "policy": 40.0, "eval": 8.0},
    }


def _dpo_csv_logger(root: Path, i: int, steps: int) -> None:
    """Sparse rows, as the online-DPO stage logs them: loss/score every step, evaluation every 4."""
    logger = CSVLogger(save_dir=str(root / f"iter_{i}" / "policy"), name="lightning_logs")
    for step in range(steps):
        logger.log_metrics(
            {"dpo/loss": 0.69 - 0.01 * step, "dpo/prm_score": 0.4 + 0.02 * step + 0.1 * i}, step
        )
        if step % 4 == 3:
            logger.log_metrics(
                {"eval/success_rate": 0.25 + 0.05 * i, "monitor/prm_score": 0.5 + 0.01 * step}, step
            )
    logger.save()


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    """π_0..π_2 of an AgentPRM run with every optional file (iteration 2's CSV via the csv module, in
    two logger versions as after a resume)."""
    root = tmp_path / "runs" / "demo"
    iterations = [
        _iteration(0, 0.25, [0.102, 0.451], None),
        _iteration(1, 0.375, [0.21, 0.57], 0.5),
        _iteration(2, 0.458, [0.279, 0.648], 0.583),
    ]
    root.mkdir(parents=True)
    (root / "summary.json").write_text(
        json.dumps({"name": "demo", "method": "agentprm", "iterations": iterations})
    )
    sft = CSVLogger(save_dir=str(root / "iter_0" / "policy"), name="lightning_logs")
    for step in range(0, 100, 10):  # π0's SFT: its steps are not online-DPO steps
        sft.log_metrics({"train/loss": 1.0 / (step + 1)}, step)
    sft.save()
    _dpo_csv_logger(root, 1, steps=12)
    for version, steps in (("version_0", range(0, 6)), ("version_1", range(4, 10))):
        path = root / "iter_2" / "policy" / "lightning_logs" / version / "metrics.csv"
        path.parent.mkdir(parents=True)
        with path.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(
                ["epoch", "step", "dpo/loss", "dpo/prm_score", "eval/success_rate", "monitor/prm_score"]
            )
            for step in steps:
                writer.writerow([0, step, 0.6, 0.7 + 0.01 * step, "", ""])
                if step % 3 == 2:
                    writer.writerow([0, step, "", "", 0.4 if version == "version_0" else 0.45, 0.6])
    for i in (1, 2):
        sweep = [
            {"n": n, "success_rate": 0.3 + 0.05 * i + 0.02 * k, "ci": [0.2, 0.6]}
            for k, n in enumerate((1, 2, 4, 8))
        ]
        (root / f"iter_{i}" / "eval").mkdir(parents=True)
        (root / f"iter_{i}" / "eval" / "bon_sweep.json").write_text(json.dumps(sweep))
        bins = [
            {"bin": b, "count": 10 + b, "mean_prediction": 0.1 * b + 0.05, "mean_target": 0.1 * b}
            for b in range(10)
        ]
        (root / f"iter_{i}" / "prm").mkdir(parents=True)
        (root / f"iter_{i}" / "prm" / "calibration.json").write_text(
            json.dumps({"ece": 0.05 * i, "bins": bins})
        )
    return root


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR", f"{path} is not a PNG"
    assert data.rstrip(b"\x00")[-12:][4:8] == b"IEND", f"{path} is truncated"
    return struct.unpack(">II", data[16:24])


def _table_row(markdown: str, first_cell: str) -> list[str]:
    line = next(line for line in markdown.splitlines() if line.startswith(f"| {first_cell} |"))
    return [cell.strip() for cell in line.strip("|").split("|")]


def test_report_writes_plots_and_a_table_with_the_numbers(run_dir, capsys):
    assert main(["report", str(run_dir)]) == 0
    report = Path(capsys.readouterr().out.strip())
    assert report == run_dir / "report" / "report.md"
    for name in PLOT_FILES.values():
        width, height = _png_size(run_dir / "report" / name)
        assert 500 <= width <= 1500 and 400 <= height <= 1200, (name, width, height)
        assert (run_dir / "report" / name).stat().st_size > 10_000, f"{name} looks empty"
    text = report.read_text()
    assert _table_row(text, "π_0") == [
        "π_0",
        "0.250 [0.102, 0.451]",
        "—",
        "—",
        "20.50",
        "—",
        "—",
        "sft 60.0 (total 60.0)",
    ]
    assert _table_row(text, "π_2") == [
        "π_2",
        "0.458 [0.279, 0.648]",
        "0.583 [0.483, 0.683]",
        "8",
        "16.50",
        "0.800",
        "0.050",
        "rollout 30.0, prm 12.5, policy 40.0, eval 8.0 (total 90.5)",
    ]
    assert _table_row(text, "look_at_obj_in_light")[1:] == ["0.250 (n=24)", "0.375 (n=24)", "0.458 (n=24)"]
    for name in PLOT_FILES.values():
        assert f"]({name})" in text
    assert "## Notes" not in text and "Not drawn" not in text


def test_missing_optional_files_are_noted_and_stale_plots_removed(run_dir):
    (run_dir / "report").mkdir()
    for name in PLOT_FILES.values():  # an earlier report's plots
        (run_dir / "report" / name).write_bytes(b"stale")
    for i in (1, 2):
        (run_dir / f"iter_{i}" / "eval" / "bon_sweep.json").unlink()
        (run_dir / f"iter_{i}" / "prm" / "calibration.json").unlink()
    for path in (run_dir / "iter_2" / "policy").rglob("metrics.csv"):
        path.unlink()
    text = write_report(run_dir).read_text()
    present = {name for name in PLOT_FILES.values() if (run_dir / "report" / name).exists()}
    assert present == {PLOT_FILES["success"], PLOT_FILES["dpo"]}
    assert all(_png_size(run_dir / "report" / name) for name in present)  # redrawn, not stale
    assert text.count("_Not drawn") == 2
    notes = text.split("## Notes")[1]
    assert "iteration 2: no metrics.csv under iter_2/policy" in notes
    assert "iteration 1: no iter_1/eval/bon_sweep.json" in notes
    assert "iteration 2: no iter_2/prm/calibration.json" in notes
    assert "iteration 0" not in notes  # π_0 has no DPO, PRM or Best-of-N by design


def test_summary_only_run(tmp_path):
    root = tmp_path / "bare"
    root.mkdir()
    (root / "summary.json").write_text(json.dumps({"iterations": [_iteration(0, 0.25, [0.1, 0.45], None)]}))
    text = write_report(root).read_text()
    assert _png_size(root / "report" / PLOT_FILES["success"])[0] > 500
    assert text.startswith("# Run report: bare") and text.count("_Not drawn") == 3
    assert "## Notes" not in text  # nothing optional is expected for π_0 alone


def test_bad_run_directories_give_clear_errors(tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match="no such run directory"):
        write_report(tmp_path / "nope")
    (tmp_path / "run").mkdir()
    assert main(["report", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "summary.json: missing" in err and "agentprm iterate" in err
    (tmp_path / "run" / "summary.json").write_text('{"iterations": [{"iteration": 0}]}')
    with pytest.raises(
        ValueError, match=r"summary\.json: iterations\[0\] needs a number under 'policy_success_rate'"
    ):
        write_report(tmp_path / "run")
    (tmp_path / "run" / "summary.json").write_text('{"iterations": [')
    with pytest.raises(ValueError, match=r"summary\.json:1: not valid JSON"):
        write_report(tmp_path / "run")


def test_malformed_optional_file_is_named(run_dir):
    (run_dir / "iter_1" / "eval" / "bon_sweep.json").write_text('[{"n": "eight", "success_rate": 0.5}]')
    with pytest.raises(ValueError, match=r"bon_sweep\.json: item 0 needs an integer 'n'"):
        write_report(run_dir)


def test_metrics_csv_is_read_sparsely_and_resumed_versions_merge(run_dir):
    logged = read_metrics_csv(next((run_dir / "iter_1" / "policy").rglob("metrics.csv")))
    assert [s for s, _ in logged["dpo/loss"]] == list(range(12))
    assert logged["eval/success_rate"] == [(3, 0.3), (7, 0.3), (11, 0.3)]
    assert [round(v, 3) for _, v in logged["monitor/prm_score"]] == [0.53, 0.57, 0.61]
    assert "epoch" not in logged and "step" not in logged
    run = load_run(run_dir)
    merged = run.curves[2]["eval/success_rate"]
    assert merged == [(2, 0.4), (5, 0.45), (8, 0.45)]  # step 5 was logged by both versions: the resumed wins
    assert dpo_step_offsets(run.curves) == {1: 0, 2: 12}


def test_dpo_axis_starts_at_iteration_1_after_an_sft_stage(run_dir):
    run = load_run(run_dir)
    assert 0 not in run.curves  # iter_0/policy holds the SFT's metrics.csv
    assert dpo_step_offsets(run.curves) == {1: 0, 2: 12}


def test_step_offsets_are_cumulative_and_skip_empty_iterations():
    curves = {
        3: {"dpo/loss": [(0, 1.0), (7, 1.0)]},
        1: {"dpo/loss": [(0, 1.0), (9, 1.0)]},
        2: {"dpo/loss": [(4, 1.0)], "eval/success_rate": [(2, 0.5)]},
        4: {},
    }
    assert dpo_step_offsets(curves) == {1: 0, 2: 10, 3: 15}
