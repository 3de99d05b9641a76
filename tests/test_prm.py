"""PRM: shared-prefix scoring equals scoring alone; absolute and relative training through the CLI."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from agentprm.cli import main
from agentprm.data import PRMExample, collate_prm
from agentprm.prm import PRMModule, calibration
from agentprm.records import State, Turn

ROOT = Path(__file__).resolve().parents[1]


def test_calibration_hand_computed():
    probs = torch.tensor([0.05, 0.15, 0.95, 0.85])
    targets = torch.tensor([0.0, 1.0, 1.0, 1.0])
    ece, table = calibration(probs, targets, bins=10)
    # bins 0, 1, 8, 9 hold one example each: |0.05-0| + |0.15-1| + |0.85-1| + |0.95-1| = 1.1, /4
    assert ece == pytest.approx(1.1 / 4)
    assert [row["bin"] for row in table] == [0, 1, 8, 9]


def test_shared_prefix_scores_equal_scoring_each_pair_alone():
    torch.manual_seed(0)
    prm = PRMModule("tiny", head_init_std=1.0)
    state = State(
        task="put a clean mug in cabinet.",
        observation="You arrive at countertop 1. On the countertop 1, you see a mug 1, and a apple 2.",
        admissible_commands=("take mug 1 from countertop 1", "go to cabinet 1", "look"),
        history=(Turn("You are in the middle of a room.", "go to countertop 1"),),
        game_id="g",
        turn=1,
    )
    responses = [prm.renderer.response("", c) for c in state.admissible_commands] + ["ACTION: fly"]
    shared = prm.score(state, responses)
    examples = [PRMExample((tuple(p + r),)) for p, r in (prm.encode(state, x) for x in responses)]
    batch = collate_prm(examples, prm.tokenizer.pad_token_id)
    prm.eval()
    with torch.no_grad():
        alone = prm(batch["input_ids"], batch["attention_mask"], batch["score_index"])
    assert shared.shape == (4,) and shared.std() > 1e-3  # the candidates really score differently
    torch.testing.assert_close(shared, alone.float(), rtol=1e-4, atol=1e-4)


def _fit_prm(config: str, out: Path, epochs: int, *data_args: str) -> list[dict]:
    """``agentprm fit`` of a PRM config at test sizes; its metrics rows, after checking the
    training loss fell by more than 20% (last 3 logged steps against the first 3)."""
    args = [
        "fit",
        "-c",
        str(ROOT / config),
        f"--trainer.default_root_dir={out}",
        f"--trainer.max_epochs={epochs}",
        "--trainer.enable_progress_bar=false",
        "--trainer.log_every_n_steps=1",
        *data_args,
        "--data.init_args.val_fraction=0.25",
        "--data.init_args.batch_size=8",
        "--model.init_args.lr=0.003",
    ]
    assert main(args) == 0
    rows = list(csv.DictReader((out / "lightning_logs/version_0/metrics.csv").open()))
    train = [float(r["prm/loss"]) for r in rows if r.get("prm/loss")]
    assert sum(train[-3:]) / 3 < 0.8 * sum(train[:3]) / 3, train
    return rows


@pytest.mark.parametrize("loss", ["absolute", "relative"])
def test_prm_fit_learns_from_rollouts(tmp_path, scripted_rollouts, loss):
    out = tmp_path / loss
    rows = _fit_prm(f"configs/prm/{loss}.yaml", out, 6, f"--data.init_args.rollouts=[{scripted_rollouts}]")
    final = [r for r in rows if r.get("val/loss")][-1]
    assert float(final["val/pair_acc"]) > 0.6, final  # same-state pairs ordered as their targets
    if loss == "absolute":
        assert float(final["val/acc"]) > 0.6, final
    assert "val/ece" in final
    assert (out / "prm" / "head.pt").is_file() and (out / "prm" / "config.json").is_file()


def test_pair_accuracy_counts_same_state_pairs_only():
    from agentprm.prm import pair_accuracy

    scores = torch.tensor([0.9, 0.1, 0.2, 0.7, 0.5])
    targets = torch.tensor([1.0, 0.0, 0.5, 0.4, 0.0])
    keys = ["s", "s", "t", "t", "u"]
    # s: (0 over 1) right; t: 0.5 vs 0.4 differ by 0.1 >= δ, but 0.2 < 0.7: wrong; u alone: no pair
    assert pair_accuracy(scores, targets, keys) == 0.5
    assert pair_accuracy(scores, targets, ["a", "b", "c", "d", "e"]) is None


def test_inverse_prm_fit_separates_expert_from_learner(tmp_path, scripted_rollouts):
    """InversePRM: the walkthrough plays are the expert, the detour and the 'inventory' loop the learner.

    a' at the expert's next states is sampled from a real (untrained tiny) policy; the trained Q gives
    expert transitions a higher implied reward than learner ones on held-out games.
    """
    from agentprm.records import read_jsonl, write_jsonl

    played = read_jsonl(scripted_rollouts / "rollouts.jsonl")
    write_jsonl(tmp_path / "expert.jsonl", [t for t in played if t.policy_id == "p0"])
    write_jsonl(tmp_path / "learner" / "iter_0.jsonl", [t for t in played if t.policy_id == "p2"])
    write_jsonl(tmp_path / "learner" / "iter_1.jsonl", [t for t in played if t.policy_id == "p1"])
    out = tmp_path / "inverse"
    rows = _fit_prm(
        "configs/prm/inverse.yaml",
        out,
        5,
        f"--data.init_args.rollouts=[{tmp_path / 'learner'}]",
        f"--data.init_args.expert=[{tmp_path / 'expert.jsonl'}]",
        "--data.init_args.next_policy=tiny",
    )
    final = [r for r in rows if r.get("val/loss")][-1]
    assert float(final["val/acc"]) > 0.6 and float(final["val/reward_gap"]) > 0, final
    prm = PRMModule.load(str(out / "prm"))
    assert prm.hparams.loss == "inverse" and prm.hparams.gamma == 0.95
    assert (out / "prm" / "calibration.json").is_file()


def test_inverse_data_needs_expert_and_next_policy():
    from agentprm.data import PRMDataModule

    with pytest.raises(ValueError, match=r"data.expert .*data.next_policy"):
        PRMDataModule(rollouts=["x"], loss="inverse")
    with pytest.raises(ValueError, match="'absolute', 'relative' or 'inverse'"):
        PRMDataModule(rollouts=["x"], loss="inversed")


def test_inverse_collate_and_step_read_next_scores():
    """Terminal rows carry one sequence, the others two; the implied reward uses the right scores."""
    prm = PRMModule("tiny", loss="inverse", gamma=0.5)
    examples = [
        PRMExample(((1, 2, 3), (4, 5)), 1.0),
        PRMExample(((6, 7),), 0.0),
        PRMExample(((8,), (9,)), 0.0),
    ]
    batch = collate_prm(examples, prm.tokenizer.pad_token_id)
    assert batch["num_sequences"].tolist() == [2, 1, 2]
    scores = torch.tensor([2.0, 1.0, -3.0, 0.5, 4.0])
    _, _, probs, labels = prm._inverse_step(scores, batch)
    # r̂ = [2 − 0.5·1, −3 (terminal), 0.5 − 0.5·4]
    torch.testing.assert_close(probs, torch.sigmoid(torch.tensor([1.5, -3.0, -1.5])))
    assert labels.tolist() == [1.0, 0.0, 0.0]
