"""Evaluation and Best-of-N through `agentprm test`, with a real PRM trained on real rollouts."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from agentprm.cli import main
from agentprm.envs.alfworld import AlfWorldEnv
from agentprm.evaluation import EvaluationModule, summarize, wilson_interval
from agentprm.rollout import read_shards, state_of

ROOT = Path(__file__).resolve().parents[1]


def test_wilson_interval_hand_values():
    # p = 0.5, n = 10, z = 1.96: center = (0.5 + 0.19208) / 1.38416 = 0.5
    # half = 1.96 * sqrt(0.025 + 0.009604) / 1.38416 = 0.2634
    lo, hi = wilson_interval(5, 10)
    assert lo == pytest.approx(0.2366, abs=1e-4) and hi == pytest.approx(0.7634, abs=1e-4)
    lo, hi = wilson_interval(0, 10)  # center = 0.19208/1.38416 = 0.13877 = half
    assert lo == 0.0 and hi == pytest.approx(0.2775, abs=1e-4)
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_summarize_per_task_type():
    rows = [
        {"game_id": "a", "task_type": "x", "won": True, "num_actions": 4, "failure": None},
        {"game_id": "b", "task_type": "x", "won": False, "num_actions": 30, "failure": None},
        {"game_id": "c", "task_type": "y", "won": True, "num_actions": 8, "failure": None},
    ]
    s = summarize(rows)
    assert s["won"] == 2 and s["success_rate"] == pytest.approx(2 / 3) and s["mean_actions"] == 14
    assert s["per_task_type"]["x"]["success_rate"] == 0.5 and s["per_task_type"]["y"]["episodes"] == 1
    assert s["games"] == ["a", "b", "c"]


@pytest.fixture(scope="module")
def prm_dir(tmp_path_factory, scripted_rollouts):
    """A relative PRM trained on the scripted rollouts (a few seconds)."""
    base = tmp_path_factory.mktemp("prm")
    args = ["fit", "-c", str(ROOT / "configs/prm/relative.yaml"), f"--trainer.default_root_dir={base}"]
    args += ["--trainer.max_epochs=3", "--trainer.enable_progress_bar=false"]
    assert main([*args, f"--data.init_args.rollouts=[{scripted_rollouts}]"]) == 0
    return base / "prm"


def test_best_of_n_plays_the_prm_top_choice(prm_dir, small_root, one_per_task_type):
    module = EvaluationModule(prm=str(prm_dir), best_of_n=4, model="tiny", temperature=3.0)
    env = AlfWorldEnv(str(small_root))
    steps = env.reset([g.game_id for g in one_per_task_type[:3]])
    states = [state_of(s, []) for s in steps]
    picked = module.chooser(5)(states, [0, 1, 2])
    candidates = module.sampler(5).sample(states, 4)  # the same seed proposes the same candidates
    for state, pick, group in zip(states, picked, candidates, strict=True):
        scores = module.prm.score(state, [c.text for c in group])
        assert pick.text == group[int(torch.argmax(scores))].text


def _test(tmp_path, out, extra=()):
    args = [
        "test",
        "-c",
        str(ROOT / "configs/eval/quickstart.yaml"),
        f"--trainer.default_root_dir={tmp_path}",
        "--trainer.enable_progress_bar=false",
        f"--model.init_args.output_dir={out}",
        "--data.init_args.max_games=6",
        "--data.init_args.max_steps=5",
        *extra,
    ]
    return main(args)


def test_agentprm_test_writes_results_and_summary(tmp_path, prm_dir):
    out = tmp_path / "bon"
    assert (
        _test(
            tmp_path,
            out,
            [
                "--model.init_args.model=tiny",
                f"--model.init_args.prm={prm_dir}",
                "--model.init_args.best_of_n=3",
            ],
        )
        == 0
    )
    summary = json.loads((out / "summary.json").read_text())
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(rows) == summary["episodes"] == 6 and len(summary["games"]) == 6
    assert (
        set(summary["per_task_type"]) == {r["task_type"] for r in rows} and len(summary["per_task_type"]) == 6
    )
    assert summary["setting"]["best_of_n"] == 3 and summary["setting"]["prm"] == str(prm_dir)
    assert all(r["num_actions"] <= 5 for r in rows)
    lo, hi = summary["wilson95"]
    assert lo <= summary["success_rate"] <= hi
    alone = tmp_path / "alone"
    assert (
        _test(
            tmp_path,
            alone,
            ["--model.init_args.model=tiny", "--model.init_args.prm=null", "--model.init_args.greedy=true"],
        )
        == 0
    )
    assert json.loads((alone / "summary.json").read_text())["setting"]["best_of_n"] == 1


@pytest.mark.alfworld_data
@pytest.mark.parametrize("split", ["valid_unseen", "valid_seen"])
def test_paper_protocol_config_runs_on_real_alfworld_data(tmp_path, split):
    root = Path(os.environ.get("ALFWORLD_DATA", "~/.cache/alfworld")).expanduser() / "json_2.1.1" / split
    if not any(root.glob("*/*/game.tw-pddl")):
        pytest.skip(f"no ALFWorld data under {root} (run `alfworld-download`)")
    out = tmp_path / split
    args = ["test", "-c", str(ROOT / f"configs/eval/alfworld_{split}.yaml"), "--trainer.accelerator=cpu"]
    args += ["--trainer.precision=32-true", "--model.init_args.model=tiny", "--model.init_args.dtype=float32"]
    args += [
        "--model.init_args.prm=null",
        f"--model.init_args.output_dir={out}",
        "--data.init_args.max_games=2",
    ]
    args += ["--data.init_args.max_steps=2", "--model.init_args.max_new_tokens=8"]
    assert main(args) == 0
    assert json.loads((out / "summary.json").read_text())["episodes"] == 2


def _expected_ranking(prm, policy, demos, max_states):
    """The probe's numbers computed by hand from the PRM's and the policy's scores."""
    states, commands = [], []
    for t in demos:
        for s, step in zip(t.states(), t.steps, strict=True):
            states.append(s)
            commands.append(step.command)
    states, commands = states[:max_states], commands[:max_states]
    top1 = ranks = wrong = over = 0
    for s, c in zip(states, commands, strict=True):
        q = prm.score(s, [prm.renderer.response("", a) for a in s.admissible_commands])
        lp = policy.candidate_logprobs([s])[0][2]
        i = s.admissible_commands.index(c)
        top1 += int(q.argmax()) == i
        ranks += int((q > q[i]).sum())
        if int(lp.argmax()) != i:
            wrong += 1
            over += bool(q[i] > q[int(lp.argmax())])
    n = len(states)
    return {"states": n, "prm_top1": top1 / n, "prm_mean_rank": ranks / n, "wrong": wrong, "over": over}


def test_action_ranking_matches_hand_computation(prm_dir):
    from agentprm.backbone import load_causal_lm, load_tokenizer
    from agentprm.evaluation import action_ranking
    from agentprm.prm import PRMModule
    from agentprm.rollout import expert_demonstrations
    from agentprm.sampling import HFSampler

    prm = PRMModule.load(str(prm_dir))
    policy = HFSampler(load_causal_lm("tiny").eval(), load_tokenizer("tiny"), prm.renderer, "admissible")
    demos = expert_demonstrations("builtin:small", "train", progress=False)[:6]
    got = action_ranking(prm, demos, policy, max_states=25)
    want = _expected_ranking(prm, policy, demos, 25)
    assert got["states"] == want["states"] == 25
    assert got["prm_top1"] == pytest.approx(want["prm_top1"])
    assert got["prm_mean_rank"] == pytest.approx(want["prm_mean_rank"])
    assert got.get("policy_wrong_states", 0) == want["wrong"]
    if want["wrong"]:
        assert got["prm_over_policy"] == pytest.approx(want["over"] / want["wrong"])
    assert sum(v["states"] for v in got["per_verb"].values()) == 25
    assert 0 <= got["policy_top1"] <= 1 and got["candidates_mean"] > 1
    # Without a policy only the PRM's numbers are reported.
    alone = action_ranking(prm, demos, max_states=25)
    assert alone["prm_top1"] == got["prm_top1"] and "policy_top1" not in alone


def test_probe_cli_writes_json_and_rejects_bad_input(prm_dir, tmp_path, capsys):
    out = tmp_path / "probe.json"
    args = ["probe", "--prm", str(prm_dir), "--policy", "tiny", "--split", "train", "--max-states", "12"]
    assert main([*args, "--output", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert json.loads(out.read_text()) == printed
    assert printed["states"] == 12 and printed["split"] == "train" and "prm_over_policy" in printed
    assert main(["probe", "--prm", str(tmp_path / "missing")]) == 2
    assert "agentprm probe" in capsys.readouterr().err


def test_best_of_all_commands_with_the_oracle_wins_every_game(tmp_path, small_root):
    """The ladder's top rung: the oracle choosing among every admissible command is the expert's
    one-step improvement, which wins every game (here 6 held-out games within 30 steps)."""
    out = tmp_path / "all"
    extra = [
        "--model.init_args.model=tiny",
        f"--model.init_args.prm=oracle?data={small_root}",
        "--model.init_args.candidates=all",
        "--data.init_args.max_steps=30",
    ]
    assert _test(tmp_path, out, extra) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["success_rate"] == 1.0 and summary["setting"]["candidates"] == "all"
    with pytest.raises(ValueError, match=r"candidates=distinct needs model\.mode=admissible"):
        EvaluationModule(model="tiny", candidates="distinct", mode="generate")


def test_paired_evaluations_share_their_random_numbers(tmp_path):
    """Common random numbers: the same policy at two seeds differs, at one seed agrees; a policy
    and a slightly perturbed copy make mostly the same draws, so their episodes pair closely."""
    from agentprm.backbone import load_causal_lm, load_tokenizer, save_hf

    torch.manual_seed(0)
    model, tokenizer = load_causal_lm("tiny"), load_tokenizer("tiny")
    save_hf(model, tokenizer, str(tmp_path / "a"))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 1e-3)
    save_hf(model, tokenizer, str(tmp_path / "b"))

    def commands(policy: str, seed: int) -> list[list[str]]:
        out = tmp_path / f"{policy}{seed}"
        extra = [
            f"--model.init_args.model={tmp_path / policy}",
            "--model.init_args.prm=null",
            "--model.init_args.greedy=false",
            f"--model.init_args.seed={seed}",
            "--model.init_args.temperature=2.0",
        ]
        assert _test(tmp_path, out, extra) == 0
        trajectories = sorted(read_shards(out), key=lambda t: t.game_id)
        return [[s.command for s in t.steps] for t in trajectories]

    a0, b0, a1 = commands("a", 0), commands("b", 0), commands("a", 1)
    assert a0 != a1
    same = sum(x == y for ea, eb in zip(a0, b0, strict=True) for x, y in zip(ea, eb, strict=False))
    steps = sum(min(len(ea), len(eb)) for ea, eb in zip(a0, b0, strict=True))
    assert same / steps > 0.8
