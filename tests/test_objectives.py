"""PRM objectives: each loss against a hand computation, rows equal to the target functions', saved
PRMs (old and new format) reloading with their objective, one-line errors for a bad objective (a
custom objective trained by class_path: tests/test_prm.py)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from agentprm import targets
from agentprm.cli import main
from agentprm.data import PRMDataModule, PRMExample, read_trajectories
from agentprm.objectives import (
    AbsoluteObjective,
    InverseObjective,
    ListBatch,
    ListwiseObjective,
    RelativeObjective,
    ScoredBatch,
    from_config,
    to_config,
)
from agentprm.prm import PRMModule

ROOT = Path(__file__).resolve().parents[1]


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def test_absolute_loss_is_soft_bce_by_hand():
    objective = AbsoluteObjective()
    batch = objective.collate([PRMExample(((1, 2),), t) for t in (0.5, 1.0, 0.0)], pad_id=0)
    assert isinstance(batch, ScoredBatch) and batch.target.tolist() == [0.5, 1.0, 0.0]
    loss, metrics = objective.loss(torch.tensor([0.0, 2.0, -1.0]), batch)
    # −[y·log σ(s) + (1 − y)·log(1 − σ(s))]: ln 2, softplus(−2), softplus(−1)
    assert float(loss) == pytest.approx((math.log(2) + softplus(-2) + softplus(-1)) / 3, abs=1e-6)
    assert float(metrics["acc"]) == 1.0  # 0 is not > 0 and 0.5 is not > 0.5


def test_relative_loss_is_bradley_terry_by_hand():
    objective = RelativeObjective()
    batch = objective.collate([PRMExample(((1, 2), (1, 3)), 1.0, state_key=k) for k in "st"], pad_id=0)
    scores = torch.tensor([1.0, 0.0, 0.5, 1.5])  # (chosen, rejected) of each pair
    loss, metrics = objective.loss(scores, batch)
    assert float(loss) == pytest.approx((softplus(-1.0) + softplus(1.0)) / 2, abs=1e-6)
    assert float(metrics["pair_acc"]) == 0.5
    seen = objective.predictions(scores, batch)
    assert seen.targets.tolist() == [1.0, 0.0, 1.0, 0.0] and seen.keys == ["s", "s", "t", "t"]


@pytest.mark.parametrize("form", ["logistic", "linear"])
def test_inverse_loss_on_the_implied_reward_by_hand(form):
    objective = InverseObjective(gamma=0.5, form=form)
    examples = [
        PRMExample(((1, 2, 3), (4, 5)), 1.0),  # expert: Q(s, a), Q(s', a')
        PRMExample(((6, 7),), 0.0),  # learner, terminal
        PRMExample(((8,), (9,)), 0.0),  # learner
    ]
    batch = objective.collate(examples, pad_id=0)
    assert batch.label.tolist() == [1.0, 0.0, 0.0] and batch.num_sequences.tolist() == [2, 1, 2]
    loss, metrics = objective.loss(torch.tensor([2.0, 1.0, -3.0, 0.5, 4.0]), batch)
    # r̂ = [2 − 0.5·1, −3, 0.5 − 0.5·4] = [1.5, −3, −1.5]
    want = (
        (softplus(-1.5) + softplus(-3.0) + softplus(-1.5)) / 3
        if form == "logistic"
        else -1.5 + (-3.0 - 1.5) / 2
    )
    assert float(loss) == pytest.approx(want, abs=1e-6)
    assert float(metrics["acc"]) == 1.0 and float(metrics["reward_gap"]) == pytest.approx(3.75)


def test_listwise_loss_is_listnet_by_hand():
    """Per state, −Σ softmax(Q/τ)·log softmax(z), mean over states; top-1 and pair accuracy of
    each state's ordered pairs."""
    objective = ListwiseObjective(temperature=0.1, delta=0.05)
    examples = [
        PRMExample(((1, 2), (1, 3), (1, 4)), 0.9, state_key="s", targets=(0.9, 0.8, 0.8)),
        PRMExample(((5, 6), (5, 7)), 0.6, state_key="t", targets=(0.5, 0.6)),
    ]
    batch = objective.collate(examples, pad_id=0)
    assert isinstance(batch, ListBatch) and batch.group.tolist() == [0, 0, 0, 1, 1]
    assert batch.target.tolist() == pytest.approx([0.9, 0.8, 0.8, 0.5, 0.6])
    scores = torch.tensor([0.0, 1.0, -1.0, 2.0, 0.0])
    loss, metrics = objective.loss(scores, batch)

    def ce(q, z):
        p = [math.exp(x / 0.1) for x in q]
        lse = math.log(sum(math.exp(x) for x in z))
        return -sum(pi / sum(p) * (zi - lse) for pi, zi in zip(p, z, strict=True))

    want = (ce([0.9, 0.8, 0.8], [0.0, 1.0, -1.0]) + ce([0.5, 0.6], [2.0, 0.0])) / 2
    assert float(loss) == pytest.approx(want, abs=1e-5)
    # s: the best (0.9) is not scored highest; t: neither. Pairs ≥ δ: s (0.9>0.8)×2 → 1 right
    # (0 > −1), t (0.6 > 0.5) → wrong.
    assert float(metrics["top1"]) == 0.0
    assert float(metrics["pair_acc"]) == pytest.approx(1 / 3)
    seen = objective.predictions(scores, batch)
    assert seen.keys == ["s", "s", "s", "t", "t"]
    assert float(seen.probs[:3].sum()) == pytest.approx(1.0) and float(
        seen.targets[3:].sum()
    ) == pytest.approx(1.0)
    # Shift-invariant per state: adding a constant to one state's scores changes nothing.
    shifted = scores + torch.tensor([5.0, 5.0, 5.0, -3.0, -3.0])
    assert float(objective.loss(shifted, batch)[0]) == pytest.approx(float(loss), abs=1e-5)
    with pytest.raises(ValueError, match=r"objective\.temperature must be > 0, found 0"):
        ListwiseObjective(temperature=0)


def test_listwise_keeps_the_extremes_of_long_lists():
    from agentprm.objectives import _extremes

    assert _extremes([0.1, 0.9, 0.5, 0.7, 0.3], 0) == [0, 1, 2, 3, 4]
    assert _extremes([0.1, 0.9, 0.5, 0.7, 0.3], 3) == [0, 1, 3]  # best, worst, second best
    assert _extremes([0.5, 0.5], 3) == [0, 1]


def _rows(objective, rollouts) -> tuple[PRMDataModule, list]:
    data = PRMDataModule(rollouts=[str(rollouts)], val_fraction=0.25, batch_size=4)
    data.connect(**PRMModule("tiny", objective=objective).data_inputs())
    data.setup("fit")
    return data, read_trajectories([str(rollouts)])


def test_rows_are_the_target_functions_rows(scripted_rollouts):
    """What the objectives build is exactly targets.mc_q_targets / preference_pairs / state_values on
    the training side of the split (the rows of the string switch they replace)."""
    data, played = _rows(AbsoluteObjective(), scripted_rollouts)
    held = {e.game_id for e in data.val_set}
    train = [t for t in played if t.game_id not in held]
    q = targets.mc_q_targets(train, 0.95, "to_go")
    assert [(e.state_key, e.target) for e in data.train_set] == [
        (t.state.key(), t.q) for t in q for _ in t.responses
    ]
    assert len(data.train_set) > 50 and len(data.val_set) > 10
    batch = next(iter(data.train_dataloader()))
    assert isinstance(batch, ScoredBatch) and batch.target.shape == (4,)

    pairs_data, _ = _rows(RelativeObjective(delta=0.015), scripted_rollouts)
    pairs = targets.preference_pairs(q, 0.015)
    assert [e.state_key for e in pairs_data.train_set] == [p.state.key() for p in pairs]
    assert all(len(e.sequences) == 2 and e.target == 1.0 for e in pairs_data.train_set)

    values, _ = _rows(AbsoluteObjective(target="value", gamma=0.9), scripted_rollouts)
    want = targets.state_values(train, 0.9, "to_go")
    assert [(e.state_key, e.target) for e in values.train_set] == [(v.state.key(), v.v) for v in want]


def test_saved_prm_records_its_objective_and_old_folders_still_load(tmp_path):
    torch.manual_seed(0)
    prm = PRMModule("tiny", objective=InverseObjective(gamma=0.5, form="linear", expert=["builtin:small"]))
    prm._save(str(tmp_path / "new"))
    saved = json.loads((tmp_path / "new" / "prm.json").read_text())
    assert saved["objective"] == {
        "class_path": "agentprm.objectives.InverseObjective",
        "init_args": {
            "expert": ["builtin:small"],
            "next_policy": None,
            "gamma": 0.5,
            "form": "linear",
            "next_mode": "admissible",
            "next_temperature": 1.0,
            "balance": True,
        },
    }
    loaded = PRMModule.load(str(tmp_path / "new"))
    assert to_config(loaded.objective) == saved["objective"]

    # A folder written before objectives were classes: `loss`, `gamma`, `inverse_objective` keys.
    prm._save(str(tmp_path / "old"))
    old = {"template": "compact", "history_window": 1, "response_format": "action"}
    for loss, gamma, form, cls in [
        ("inverse", 0.9, "linear", InverseObjective),
        ("relative", 0.95, "logistic", RelativeObjective),
        ("absolute", 0.95, "logistic", AbsoluteObjective),
    ]:
        settings = {**old, "loss": loss, "gamma": gamma, "inverse_objective": form}
        (tmp_path / "old" / "prm.json").write_text(json.dumps(settings))
        loaded = PRMModule.load(str(tmp_path / "old"))
        assert type(loaded.objective) is cls
        torch.testing.assert_close(loaded.head.weight, prm.head.weight)
    assert (loaded.objective.gamma, loaded.objective.target) == (0.95, "q")
    inverse = from_config("inverse", gamma=0.9, inverse_objective="linear")
    assert (inverse.gamma, inverse.form) == (0.9, "linear")


def test_objective_specs_refuse_unknown_names():
    with pytest.raises(ValueError, match="'absolut' is not one of absolute, relative, inverse"):
        from_config("absolut")
    with pytest.raises(ValueError, match=r"class_path 'agentprm\.objectives\.Nope' does not name a class"):
        from_config({"class_path": "agentprm.objectives.Nope"})
    with pytest.raises(ValueError, match=r"is not an agentprm\.objectives\.PRMObjective"):
        from_config(object())
    assert type(from_config(None)) is AbsoluteObjective


@pytest.mark.parametrize(
    ("arg", "said"),
    [
        (
            "--model.init_args.objective=agentprm.objectives.Nope",
            "model.objective: module 'agentprm.objectives' has no attribute 'Nope'",
        ),
        (
            "--model.init_args.objective.init_args.delta=0.1",
            "model.objective: Option 'delta' is not accepted",
        ),
        (
            "--model.init_args.objective.init_args.target=advantage",
            "model.objective.target: Expected a typing.Literal['q', 'value', 'shaped', 'reference']. "
            "Got value: advantage",
        ),
    ],
)
def test_cli_refuses_an_unknown_objective_or_option_in_one_line(arg, said, capsys):
    assert main(["fit", "-c", str(ROOT / "configs/prm/absolute.yaml"), arg, "--print_config"]) == 2
    err = capsys.readouterr().err
    assert f"agentprm fit: {said}\n" in err and "Union" not in err
