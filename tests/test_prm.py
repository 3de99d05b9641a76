"""PRM: shared-prefix scoring equals scoring alone; absolute and relative training through the CLI."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from agentprm.cli import main
from agentprm.data import PRMExample, collate_prm
from agentprm.objectives import (
    AbsoluteObjective,
    InverseObjective,
    PairBatch,
    Predictions,
    PRMObjective,
    PRMRow,
    RelativeObjective,
    ScoredBatch,
)
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
        alone = prm(batch.input_ids, batch.attention_mask, batch.score_index)
    assert shared.shape == (4,) and shared.std() > 1e-3  # the candidates really score differently
    torch.testing.assert_close(shared, alone.float(), rtol=1e-4, atol=1e-4)


def test_score_batch_equals_each_state_alone_and_scores_repeats_once():
    torch.manual_seed(0)
    prm = PRMModule("tiny", head_init_std=1.0, history_window=4)
    states = [
        State(
            task="put a clean mug in cabinet.",
            observation=f"You arrive at drawer {k}. The drawer {k} is closed.",
            admissible_commands=("open drawer 1", "go to cabinet 1", "look", "take mug 1 from drawer 1"),
            history=tuple(Turn(f"You arrive at shelf {j}.", f"go to shelf {j}") for j in range(k)),
            game_id=f"g{k}",
            turn=k,
        )
        for k in (0, 3, 1)
    ]
    responses = [
        [prm.renderer.response("", c) for c in s.admissible_commands[: 2 + k]] for k, s in enumerate(states)
    ]
    responses[1] = responses[1] + responses[1][:1] * 3  # a sample drawn four times
    expected = []
    for s, rs in zip(states, responses, strict=True):
        examples = [PRMExample((tuple(p + r),)) for p, r in (prm.encode(s, x) for x in rs)]
        batch = collate_prm(examples, prm.tokenizer.pad_token_id, share_prefix=False)
        with torch.no_grad():
            expected.append(prm.eval()(batch.input_ids, batch.attention_mask, batch.score_index).float())
    for limit in (1, 3, 256):  # states grouped into forwards of at most `limit` distinct responses
        prm.max_score_rows = limit
        got = prm.score_batch(states, responses)
        assert [len(g) for g in got] == [2, 6, 4]
        for g, e in zip(got, expected, strict=True):
            torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-4)
        assert len(set(got[1][[0, 3, 4, 5]].tolist())) == 1  # the repeats share one score
    torch.testing.assert_close(prm.score(states[2], responses[2]), expected[2], rtol=1e-4, atol=1e-4)


def _fit_prm(config: str, out: Path, epochs: int, *data_args: str, drop: float = 0.8) -> list[dict]:
    """``agentprm fit`` of a PRM config at test sizes; its metrics rows, after checking the
    training loss fell below ``drop`` × its start (the mean of the last third of the logged steps
    against the first 3; single steps of 8 examples are too noisy to compare)."""
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
    tail = train[-max(3, len(train) // 3) :]
    assert sum(tail) / len(tail) < drop * sum(train[:3]) / 3, train
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
        f"--model.init_args.objective.init_args.expert=[{tmp_path / 'expert.jsonl'}]",
        "--model.init_args.objective.init_args.next_policy=tiny",
    )
    final = [r for r in rows if r.get("val/loss")][-1]
    assert float(final["val/acc"]) > 0.6 and float(final["val/reward_gap"]) > 0, final
    prm = PRMModule.load(str(out / "prm"))
    assert isinstance(prm.objective, InverseObjective) and prm.objective.gamma == 0.95
    assert (out / "prm" / "calibration.json").is_file()


def test_inverse_next_actions_are_an_input(tmp_path, scripted_rollouts):
    """a' at the expert's next states is what the PRM hands its data (``next_actions``, from
    objective.next_policy); with neither a policy nor a handed sampler the data stops in one line."""
    from agentprm.data import PRMDataModule
    from agentprm.records import read_jsonl, write_jsonl

    played = read_jsonl(scripted_rollouts / "rollouts.jsonl")
    write_jsonl(tmp_path / "expert.jsonl", [t for t in played if t.policy_id == "p0"])
    write_jsonl(tmp_path / "learner.jsonl", [t for t in played if t.policy_id == "p2"])
    prm = PRMModule("tiny", objective=InverseObjective(expert=[str(tmp_path / "expert.jsonl")]))
    assert "next_actions" not in prm.data_inputs()
    data = PRMDataModule(rollouts=[str(tmp_path / "learner.jsonl")], val_fraction=0.25, batch_size=4)
    with pytest.raises(ValueError, match=r"InverseObjective needs expert .*next_policy"):
        data.connect(**prm.data_inputs())
    asked: list[tuple[int, int]] = []

    def next_actions(states, seed):
        asked.append((len(states), seed))
        return [prm.renderer.response("", "inventory")] * len(states)

    data.connect(**prm.data_inputs(), next_actions=next_actions)
    expert = [e for e in data.train_set + data.val_set if e.target == 1.0 and len(e.sequences) == 2]
    assert expert and [seed for _, seed in asked] == [42, 42]  # each side, the data seed
    assert sum(n for n, _ in asked) == len(expert)
    response = prm.encode(_state(0, "o"), prm.renderer.response("", "inventory"))[1]
    assert all(e.sequences[1][-len(response) :] == tuple(response) for e in expert)
    # With next_policy set, the PRM hands over a sampler of that policy.
    sampling = PRMModule("tiny", objective=InverseObjective(expert=["builtin:small"], next_policy="tiny"))
    assert callable(sampling.data_inputs()["next_actions"])


def test_inverse_objective_needs_expert_and_next_policy():
    with pytest.raises(ValueError, match=r"InverseObjective needs expert .*next_policy"):
        InverseObjective(next_policy="tiny").prepare([], None)
    with pytest.raises(ValueError, match="objective form must be 'logistic' or 'linear', found 'quadratic'"):
        InverseObjective(form="quadratic")


def test_inverse_collate_and_step_read_next_scores():
    """Terminal rows carry one sequence, the others two; the implied reward uses the right scores."""
    prm = PRMModule("tiny", objective=InverseObjective(gamma=0.5))
    examples = [
        PRMExample(((1, 2, 3), (4, 5)), 1.0),
        PRMExample(((6, 7),), 0.0),
        PRMExample(((8,), (9,)), 0.0),
    ]
    batch = prm.objective.collate(examples, prm.tokenizer.pad_token_id)
    assert batch.num_sequences.tolist() == [2, 1, 2]
    scores = torch.tensor([2.0, 1.0, -3.0, 0.5, 4.0])
    seen = prm.objective.predictions(scores, batch)
    # r̂ = [2 − 0.5·1, −3 (terminal), 0.5 − 0.5·4]
    torch.testing.assert_close(seen.probs, torch.sigmoid(torch.tensor([1.5, -3.0, -1.5])))
    assert seen.targets.tolist() == [1.0, 0.0, 0.0]


def _state(n_history: int, observation: str) -> State:
    history = tuple(Turn(f"You see a drawer {i}.", f"open drawer {i}") for i in range(n_history))
    return State(
        task="put a clean mug in cabinet.",
        observation=observation,
        admissible_commands=("take mug 1 from countertop 1", "go to cabinet 1", "look", "inventory"),
        history=history,
        game_id="g",
        turn=n_history,
    )


def _pair_batches(prm: PRMModule):
    """Relative pairs at states of different lengths (two pairs share a state): the collated batch
    with its shared prefixes, and the same batch of whole sequences only."""
    states = [
        _state(0, "You arrive at countertop 1."),
        _state(3, "On the countertop 1, you see a mug 1, and a apple 2."),
        _state(1, "You are in the middle of a room."),
    ]
    picks = [(0, 1), (2, 3), (1, 0), (3, 2)]
    examples = []
    for k, (a, b) in enumerate(picks):
        state = states[min(k, 2)]  # the last two pairs share the third state
        responses = [prm.renderer.response("", state.admissible_commands[i]) for i in (a, b)]
        seqs = tuple(tuple(p + r) for p, r in (prm.encode(state, x) for x in responses))
        examples.append(PRMExample(seqs, 1.0, state.game_id, state.key()))
    pad = prm.tokenizer.pad_token_id
    return prm.objective.collate(examples, pad), collate_prm(
        examples, pad, share_prefix=False, kind=PairBatch
    )


def test_shared_prefix_training_scores_and_gradients_equal_whole_sequences():
    """Each pair's state runs once (one left-padded prefix batch, the responses against its KV cache):
    scores, the Bradley–Terry loss and the gradients equal those of the whole sequences."""
    torch.manual_seed(0)
    prm = PRMModule("tiny", objective=RelativeObjective(), head_init_std=1.0).train()
    shared, whole = _pair_batches(prm)
    assert not whole.shares_prefixes and shared.prefix_ids.shape[0] == 3  # three states, eight sequences
    lengths = shared.prefix_mask.sum(1)
    assert len(set(lengths.tolist())) == 3  # prefixes of different lengths: left padding is exercised
    assert shared.prefix_index.tolist() == [0, 0, 1, 1, 2, 2, 2, 2]
    laid_out = shared.prefix_mask.sum() + shared.continuation_mask.sum()
    assert laid_out < whole.attention_mask.sum()  # each state's tokens once

    params = {
        "head": prm.head.weight,
        "embed": prm.trunk.embed_tokens.weight,
        "q_proj.0": prm.trunk.layers[0].self_attn.q_proj.weight,
        "down_proj.-1": prm.trunk.layers[-1].mlp.down_proj.weight,
    }
    results = []
    for batch in (whole, shared):
        prm.zero_grad()
        scores = prm.batch_scores(batch)
        loss, *_ = prm._step(batch)
        loss.backward()
        results.append((scores.detach(), loss.detach(), {k: p.grad.clone() for k, p in params.items()}))
    (s_whole, l_whole, g_whole), (s_shared, l_shared, g_shared) = results
    assert s_whole.std() > 1e-3
    torch.testing.assert_close(s_shared, s_whole, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(l_shared, l_whole, rtol=1e-4, atol=1e-4)
    for k in params:
        assert g_whole[k].abs().max() > 0, k
        torch.testing.assert_close(g_shared[k], g_whole[k], rtol=1e-4, atol=1e-4, msg=k)


def test_shared_prefix_batch_groups_sequences_by_state():
    """Sequences of one state share their common prefix; other states' rows and 1-token rows do not."""
    from agentprm.data import shared_prefix_batch

    examples = [
        PRMExample(((1, 2, 3, 4), (1, 2, 3, 5, 6)), 1.0, state_key="s"),  # a pair: prefix 1 2 3
        PRMExample(((7, 8, 9),), 0.5, state_key="t"),  # alone: all but its last token
        PRMExample(((1, 2, 7),), 0.5, state_key="s"),  # the pair's state again: prefix cut to 1 2
    ]
    batch = shared_prefix_batch(examples, pad_id=0)
    assert batch["prefix_ids"].tolist() == [[1, 2], [7, 8]]  # left-padded (none needed here)
    assert batch["prefix_index"].tolist() == [0, 0, 1, 0]  # in the order of the sequences
    assert batch["continuation_ids"].tolist() == [[3, 4, 0], [3, 5, 6], [9, 0, 0], [7, 0, 0]]
    assert batch["continuation_mask"].sum(1).tolist() == [2, 3, 1, 1]
    # InversePRM transitions: s and s' are different states, so nothing is shared
    inverse = [PRMExample(((1, 2, 3), (1, 2, 4)), 1.0, state_key="s", state_keys=("s", "s2"))]
    assert shared_prefix_batch(inverse, pad_id=0) == {}
    assert shared_prefix_batch([PRMExample(((1, 2), (1,)), state_key="s")], pad_id=0) == {}  # 1-token row
    pairs = [PRMExample(((5, 6, 1), (5, 6, 2))), PRMExample(((4, 3, 2, 1), (4, 3, 2, 9)))]  # no state keys
    left = shared_prefix_batch(pairs, pad_id=0)
    assert left["prefix_ids"].tolist() == [[0, 5, 6], [4, 3, 2]]
    assert left["prefix_mask"].tolist() == [[0, 1, 1], [1, 1, 1]]


def test_gradient_checkpointing_scores_whole_sequences():
    """Checkpointed layers drop the KV cache in training, so the shared layout is not used there."""
    torch.manual_seed(0)
    prm = PRMModule(
        "tiny", objective=RelativeObjective(), head_init_std=1.0, gradient_checkpointing=True
    ).train()
    shared, whole = _pair_batches(prm)
    torch.testing.assert_close(prm.batch_scores(shared), prm.batch_scores(whole), rtol=1e-4, atol=1e-4)


def test_value_and_shaped_targets_train_through_the_cli(tmp_path, scripted_rollouts):
    """Reference-policy shaping end to end: a value model V(s) on the rollouts' state values, then a
    PRM on outcome + γ·V(s') − V(s); its rows are exactly targets.shaped_q_targets with that V."""
    from agentprm import targets
    from agentprm.data import PRMDataModule, read_trajectories

    rollouts = f"--data.init_args.rollouts=[{scripted_rollouts}]"
    value_rows = _fit_prm("configs/prm/value.yaml", tmp_path / "value", 6, rollouts)
    assert float([r for r in value_rows if r.get("val/loss")][-1]["val/acc"]) > 0.6
    value = PRMModule.load(str(tmp_path / "value" / "prm"))
    played = read_trajectories([str(scripted_rollouts)])
    won = next(t for t in played if t.won).states()[0]
    lost = next(t for t in played if not t.won and t.game_id != won.game_id).states()[3]
    v_won, v_lost = (float(value.score(s, [""])[0]) for s in (won, lost))
    assert v_won > v_lost  # the walkthrough's states are worth more than the 'inventory' loop's

    data = PRMDataModule(rollouts=[str(scripted_rollouts)], val_fraction=0.25)
    shaped = AbsoluteObjective(target="shaped", value_model=str(tmp_path / "value" / "prm"))
    data.connect(**PRMModule("tiny", objective=shaped).data_inputs())  # what its PRM hands it
    data.setup("fit")
    held = {e.game_id for e in data.val_set}
    train = [t for t in played if t.game_id not in held]

    def values(states):
        return [float(value.score(s, [""])[0]) for s in states]

    want = targets.shaped_q_targets(train, values, 0.95, 3.0)
    got = sorted((e.game_id, e.state_key, e.target) for e in data.train_set)
    expected = sorted((t.game_ids[0], t.state.key(), t.q) for t in want for _ in t.responses)
    assert [g[:2] for g in got] == [e[:2] for e in expected] and len(got) > 20
    assert [g[2] for g in got] == pytest.approx([e[2] for e in expected], abs=1e-5)

    shaped = _fit_prm(
        "configs/prm/shaped.yaml",
        tmp_path / "shaped",
        6,
        rollouts,
        f"--model.init_args.objective.init_args.value_model={tmp_path / 'value' / 'prm'}",
        drop=0.9,  # soft targets in (0, 1): the loss cannot fall below their entropy
    )
    assert float([r for r in shaped if r.get("val/loss")][-1]["val/pair_acc"]) > 0.6


def test_value_and_shaped_targets_reject_bad_settings():
    with pytest.raises(ValueError, match="'q', 'value', 'shaped' or 'reference', found 'advantage'"):
        AbsoluteObjective(target="advantage")
    with pytest.raises(ValueError, match="objective target must be 'q' or 'reference', found 'value'"):
        RelativeObjective(target="value")
    with pytest.raises(ValueError, match=r"target=shaped needs value_model"):
        AbsoluteObjective(target="shaped")


def test_reference_targets_from_rollout_labels_train_a_ranking_prm(tmp_path):
    """Rollouts labelled with the search expert's values (reference_turns) → a relative PRM on
    pairs ordered by Q^μ; the labels are written beside the shards and match their trajectories."""
    from agentprm.records import read_jsonl
    from agentprm.reference import ReferenceLabels, commands_digest
    from agentprm.rollout import read_shards

    out = tmp_path / "rollouts"
    args = [
        "predict",
        "-c",
        str(ROOT / "configs/rollout/quickstart.yaml"),
        "--model.init_args.model=tiny",
        f"--model.init_args.output_dir={out}",
        f"--trainer.default_root_dir={tmp_path}",
        "--trainer.enable_progress_bar=false",
        "--data.init_args.max_games=12",
        "--data.init_args.rollouts_per_game=1",
        "--data.init_args.batch_size=6",
        "--data.init_args.max_steps=6",
        "--model.init_args.reference_turns=2",
        "--model.init_args.temperature=2.0",
    ]
    assert main(args) == 0
    trajectories = read_shards(out)
    labels = [
        lb for p in sorted((out / "reference").glob("*.jsonl")) for lb in read_jsonl(p, ReferenceLabels)
    ]
    assert len(labels) == len(trajectories) == 12
    for t, lb in zip(trajectories, labels, strict=True):
        assert lb.commands_digest == commands_digest(t) and len(lb.values) == t.num_actions
        assert len(lb.labelled_turns) == min(2, t.num_actions)
        for k, q in zip(lb.labelled_turns, lb.labelled_q, strict=True):
            assert len(q) == len(t.steps[k].admissible_commands)
    rows = _fit_prm(
        "configs/prm/relative.yaml",
        tmp_path / "prm",
        4,
        f"--data.init_args.rollouts=[{out}]",
        "--model.init_args.objective.init_args.target=reference",
    )
    assert float([r for r in rows if r.get("val/loss")][-1]["val/pair_acc"]) > 0.6
    # The same labels as lists: one softmax over each labelled state's commands (configs/prm/listwise.yaml).
    # Its loss falls slowly: its floor is the entropy of softmax(Q^μ/τ), not 0.
    rows = _fit_prm(
        "configs/prm/listwise.yaml",
        tmp_path / "listwise",
        8,
        f"--data.init_args.rollouts=[{out}]",
        "--model.init_args.model=tiny",
        drop=0.9,
    )
    val = [float(r["val/loss"]) for r in rows if r.get("val/loss")]
    assert val[-1] < val[0] - 0.1, val  # the held-out games' states are ranked better too
    with pytest.raises(FileNotFoundError, match="no reference labels"):
        from agentprm.objectives import _reference_labels

        _reference_labels([str(tmp_path)])


class OutcomeObjective(PRMObjective):
    """A test objective: squared error of σ(Q(s, a)) against the episode's outcome, every step."""

    calls = 0

    def __init__(self, scale: float = 1.0) -> None:
        self.scale = scale

    def rows(self, learners, experts, context) -> list[PRMRow]:
        return [
            PRMRow(
                ((state, context.renderer.response("", step.command)),), float(t.won), t.game_id, state.key()
            )
            for t in learners
            for state, step in zip(t.states(), t.steps, strict=False)
        ]

    def collate(self, examples, pad_id) -> ScoredBatch:
        return AbsoluteObjective().collate(examples, pad_id)

    def loss(self, scores, batch):
        type(self).calls += 1
        loss = self.scale * ((torch.sigmoid(scores) - batch.target) ** 2).mean()
        return loss, {"loss": loss}

    def predictions(self, scores, batch) -> Predictions:
        return Predictions(torch.sigmoid(scores), batch.target, list(batch.state_key))


def test_a_custom_objective_by_class_path_trains_end_to_end(tmp_path, scripted_rollouts):
    """An objective defined outside the package, named by class_path: its rows, batches and loss
    train a real PRM, and the saved PRM reloads with it."""
    out = tmp_path / "custom"
    rows = _fit_prm(
        "configs/prm/absolute.yaml",
        out,
        4,
        f"--model.init_args.objective={__name__}.OutcomeObjective",
        "--model.init_args.objective.init_args.scale=2.0",
        f"--data.init_args.rollouts=[{scripted_rollouts}]",
    )
    assert OutcomeObjective.calls > 10 and [r for r in rows if r.get("val/ece")]
    prm = PRMModule.load(str(out / "prm"))
    assert type(prm.objective) is OutcomeObjective and prm.objective.scale == 2.0


def test_likelihood_prior_adds_the_response_log_likelihood(tmp_path):
    """score = head(h) + w·log p(response | state) on every scoring path: a state's responses in one
    forward, a training batch whose shared prefix runs into the responses, whole sequences; the
    setting is saved with the PRM; bad values and batches without response starts stop clearly."""
    from agentprm.sampling import score_continuations

    torch.manual_seed(0)
    w = 0.5
    prm = PRMModule("tiny", head_init_std=1.0, likelihood_prior=w).eval()
    state = State(
        task="put a clean mug in cabinet.",
        observation="You arrive at countertop 1. On the countertop 1, you see a mug 1, and a apple 2.",
        admissible_commands=("go to cabinet 1", "go to cabinet 2", "take mug 1 from countertop 1", "look"),
        history=(Turn("You are in the middle of a room.", "go to countertop 1"),),
        game_id="g",
        turn=1,
    )
    responses = [prm.renderer.response("", c) for c in state.admissible_commands]
    encoded = [prm.encode(state, r) for r in responses]
    prompt = encoded[0][0]
    with torch.no_grad():
        loglik = score_continuations(prm.lm, prompt, [r for _, r in encoded], prm.tokenizer.pad_token_id)
        prm.likelihood_prior = 0.0
        head_only = prm.score(state, responses)
        prm.likelihood_prior = w
        expected = head_only + w * loglik
        assert loglik.std() > 1e-3 and head_only.std() > 1e-3  # both parts really differ by response
        torch.testing.assert_close(prm.score(state, responses), expected, rtol=1e-4, atol=1e-4)
        for share in (True, False):
            examples = [
                PRMExample(
                    tuple(tuple(p + r) for p, r in encoded), state_key="s", response_starts=(len(prompt),) * 4
                )
            ]
            batch = collate_prm(examples, prm.tokenizer.pad_token_id, share_prefix=share)
            assert batch.response_start.tolist() == [len(prompt)] * 4
            assert batch.shares_prefixes == share
            torch.testing.assert_close(prm.batch_scores(batch), expected, rtol=1e-4, atol=1e-4)
        # two responses sharing tokens past the prompt: the prefix runs into the response
        pair = [
            PRMExample(
                tuple(tuple(p + r) for p, r in encoded[:2]), state_key="s", response_starts=(len(prompt),) * 2
            )
        ]
        batch = collate_prm(pair, prm.tokenizer.pad_token_id)
        assert batch.prefix_mask.sum() > len(prompt)
        torch.testing.assert_close(prm.batch_scores(batch), expected[:2], rtol=1e-4, atol=1e-4)
        batch.response_start = None
        with pytest.raises(ValueError, match="response_start"):
            prm.batch_scores(batch)
    prm.train()
    scores = prm.batch_scores(collate_prm(pair, prm.tokenizer.pad_token_id))
    scores.sum().backward()  # the likelihood part trains the LM head (tied to the embedding) too
    assert prm.lm.get_output_embeddings().weight.grad.abs().sum() > 0
    prm._save(str(tmp_path / "prm"))
    loaded = PRMModule.load(str(tmp_path / "prm"))
    assert loaded.likelihood_prior == w
    torch.testing.assert_close(loaded.score(state, responses), expected, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match=r"model\.likelihood_prior: expected a weight >= 0"):
        PRMModule("tiny", likelihood_prior=-1.0)
