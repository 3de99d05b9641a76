"""Paired statistics (agentprm compare) against a hand computation."""

from __future__ import annotations

import json

import pytest

from agentprm.cli import main
from agentprm.compare import mcnemar_exact, newcombe_paired_interval, paired_difference


def _rows(outcomes: list[tuple[int, int]]) -> tuple[list[dict], list[dict]]:
    """A's and B's result rows: 10 games × 4 episodes, pair k = (A won, B won)."""
    a, b = [], []
    for k, (x, y) in enumerate(outcomes):
        key = {"game_id": f"valid_unseen/g{k // 4}/trial", "rollout_index": k % 4, "task_type": "t"}
        a.append({**key, "won": bool(x), "num_actions": 3})
        b.append({**key, "won": bool(y), "num_actions": 3})
    return a, b


# 10 pairs both won, 3 only A, 8 only B, 19 neither (n = 40).
OUTCOMES = [(1, 1)] * 10 + [(1, 0)] * 3 + [(0, 1)] * 8 + [(0, 0)] * 19


def test_paired_difference_against_a_hand_computation():
    a, b = _rows(OUTCOMES)
    result = paired_difference(a, b)
    assert result["episodes"] == 40 and result["games"] == 10
    assert (result["both"], result["only_a"], result["only_b"], result["neither"]) == (10, 3, 8, 19)
    assert result["success_a"] == pytest.approx(13 / 40) and result["success_b"] == pytest.approx(18 / 40)
    assert result["difference"] == pytest.approx(0.125)
    # McNemar: 2 · P(Binomial(11, ½) ≤ 3) = 2 · (1 + 11 + 55 + 165) / 2048.
    assert result["p_value"] == pytest.approx(2 * 232 / 2048)
    # Newcombe (method 10): Wilson intervals 13/40 → [0.20084, 0.47983], 18/40 → [0.30705, 0.60171],
    # φ = (10·19 − 3·8) / √(13·27·18·22) = 0.44525;
    # lower = 0.125 − √((0.45 − 0.30705)² − 2φ(0.45 − 0.30705)(0.47983 − 0.325) + (0.47983 − 0.325)²),
    # upper = 0.125 + √((0.60171 − 0.45)² − 2φ(0.60171 − 0.45)(0.325 − 0.20084) + (0.325 − 0.20084)²).
    lo, hi = result["ci95"]
    assert lo == pytest.approx(-0.03215, abs=1e-4) and hi == pytest.approx(0.27217, abs=1e-4)
    glo, ghi = result["ci95_games"]
    assert glo <= 0.125 <= ghi


def test_mcnemar_and_newcombe_edge_cases():
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(5, 0) == pytest.approx(2 / 32)
    assert mcnemar_exact(3, 3) == 1.0
    lo, hi = newcombe_paired_interval(5, 0, 0, 5)  # identical outcomes, φ = 1: the interval is {0}
    assert lo == pytest.approx(0.0) and hi == pytest.approx(0.0)
    lo, hi = newcombe_paired_interval(4, 1, 1, 4)
    assert lo < 0 < hi
    lo, hi = newcombe_paired_interval(0, 0, 10, 0)  # B won everything A lost
    assert lo > 0.6 and hi == pytest.approx(1.0)


def test_episodes_must_match():
    a, b = _rows(OUTCOMES)
    with pytest.raises(ValueError, match="did not play the same episodes: 1 only in the first"):
        paired_difference(a, b[:-1])


def test_compare_command_prints_each_pair_and_the_pool(tmp_path, capsys):
    folders = []
    for name, rows in zip(["a1", "b1", "a2", "b2"], [*_rows(OUTCOMES), *_rows(OUTCOMES)], strict=True):
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        folders.append(str(tmp_path / name))
    out = tmp_path / "compare.json"
    assert main(["compare", *folders, "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.count("difference +12.5 points") == 3 and "pooled over 2" in printed
    pooled = json.loads(out.read_text())["pooled"]
    assert pooled["episodes"] == 80 and pooled["only_b"] == 16
    assert pooled["p_value"] == pytest.approx(mcnemar_exact(16, 6))
    with pytest.raises(SystemExit):  # an odd number of folders
        main(["compare", folders[0]])


def test_compare_command_names_a_missing_folder(tmp_path, capsys):
    assert main(["compare", str(tmp_path / "x"), str(tmp_path / "y")]) == 2
    assert "no results.jsonl" in capsys.readouterr().err
