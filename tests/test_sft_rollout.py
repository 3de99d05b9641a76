"""Stage 1 end to end on CPU: SFT of the tiny model, rollouts through `agentprm predict`, resume."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from agentprm.backbone import load_causal_lm, load_tokenizer
from agentprm.cli import main
from agentprm.data import LengthGroupedSampler, collate_sft, sft_examples, spread
from agentprm.envs.alfworld import AlfWorldEnv
from agentprm.evaluation import EvaluationModule
from agentprm.prompts import Renderer
from agentprm.records import read_jsonl, write_jsonl
from agentprm.rollout import RolloutModule, expert_demonstrations, play, read_shards, scripted
from agentprm.targets import mc_q_targets

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def demos():
    return expert_demonstrations("builtin:small", "valid_seen", progress=False)


def test_expert_demonstrations_are_won_trajectories_with_consistent_states(demos, small_games):
    assert len(demos) == sum(g.split == "valid_seen" and g.expert_actions is not None for g in small_games)
    for traj in demos:
        assert traj.won and traj.failure is None and traj.policy_id == "search-expert"
        assert traj.steps[-1].reward == 1.0 and all(s.reward == 0.0 for s in traj.steps[:-1])
        for t in range(1, traj.num_actions):
            state = traj.state_at(t)
            assert state.observation == traj.steps[t - 1].feedback
            assert [h.command for h in state.history] == [s.command for s in traj.steps[:t]]


def test_play_records_every_episode_and_its_actions(small_root, one_per_task_type):
    env = AlfWorldEnv(str(small_root), max_steps=40)
    plans = {i: g.walkthrough for i, g in enumerate(one_per_task_type)}
    out = play(env, [g.game_id for g in one_per_task_type], scripted(plans), policy_id="planner", seed=7)
    assert [t.game_id for t in out] == [g.game_id for g in one_per_task_type]
    assert all(t.won and t.seed == 7 for t in out)
    assert [tuple(s.command for s in t.steps) for t in out] == [g.walkthrough for g in one_per_task_type]


def test_sft_masks_everything_but_the_response(demos):
    tok = load_tokenizer("tiny")
    renderer = Renderer("compact", history_window=1, response_format="action")
    examples, too_long = sft_examples(demos[:2], tok, renderer, max_length=512)
    assert too_long == 0 and len(examples) == demos[0].num_actions + demos[1].num_actions
    batch = collate_sft(examples[:4], tok.pad_token_id)
    for i, ex in enumerate(examples[:4]):
        labelled = batch["labels"][i][batch["labels"][i] != -100].tolist()
        assert labelled == list(ex.input_ids[ex.response_start :])
        assert tok.decode(labelled, skip_special_tokens=True).strip().startswith("ACTION:")
        assert labelled[-1] == tok.eos_token_id
    assert batch["attention_mask"].sum().item() == sum(len(e.input_ids) for e in examples[:4])


def test_length_grouped_batches_pad_less_and_cover_every_example_each_epoch(demos):
    tok = load_tokenizer("tiny")
    renderer = Renderer("compact", history_window=1, response_format="action")
    examples, _ = sft_examples(demos, tok, renderer, max_length=512)
    lengths = [len(e.input_ids) for e in examples]
    sampler = LengthGroupedSampler(lengths, batch_size=4, seed=0, window=8)

    def padded(order):  # tokens of the batches a DataLoader(batch_size=4) cuts from the order
        return sum(
            max(lengths[i] for i in order[k : k + 4]) * len(order[k : k + 4]) for k in range(0, len(order), 4)
        )

    first = list(sampler)
    assert sorted(first) == list(range(len(examples)))  # a permutation: every example once
    assert first == list(sampler)  # same seed and epoch, same order
    sampler.set_epoch(1)
    second = list(sampler)
    assert sorted(second) == sorted(first) and second != first
    shuffled = torch.randperm(len(lengths), generator=torch.Generator().manual_seed(0)).tolist()
    assert padded(first) - sum(lengths) < 0.5 * (padded(shuffled) - sum(lengths))


def test_spread_keeps_every_task_type():
    ids = sorted(f"{t}-{k}" for t in "abcdef" for k in range(10))
    assert {i[0] for i in spread(ids, 6)} == set("abcdef")
    assert spread(ids, None) == ids and spread(ids, 100) == ids


def _fit_sft(tmp_path: Path, steps: int, extra: tuple[str, ...] = ()) -> Path:
    out = tmp_path / "sft"
    args = [
        "fit",
        "-c",
        str(ROOT / "configs/sft/quickstart.yaml"),
        f"--trainer.default_root_dir={out}",
        f"--trainer.max_steps={steps}",
        "--trainer.val_check_interval=null",
        "--trainer.enable_progress_bar=false",
        "--data.init_args.split=valid_seen",
        "--data.init_args.max_games=12",
        *extra,
    ]
    assert main(args) == 0
    return out


def test_sft_fit_lowers_the_loss_and_writes_a_loadable_policy(tmp_path):
    out = _fit_sft(tmp_path, steps=40)
    logs = out / "lightning_logs" / "version_0"
    rows = (logs / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    losses = [
        float(r.split(",")[header.index("train/loss")])
        for r in rows[1:]
        if r.split(",")[header.index("train/loss")]
    ]
    assert losses[-1] < 0.6 * losses[0], losses
    assert (logs / "checkpoints" / "last.ckpt").is_file()
    assert (logs / "hparams.yaml").is_file() and (out / "lightning_logs" / "version_0").is_dir()
    policy = load_causal_lm(str(out / "policy"))
    assert not torch.equal(policy.model.embed_tokens.weight, load_causal_lm("tiny").model.embed_tokens.weight)


def _predict(tmp_path: Path, model: str, out: Path, extra: list[str] = ()) -> int:
    args = [
        "predict",
        "-c",
        str(ROOT / "configs/rollout/quickstart.yaml"),
        f"--model.init_args.model={model}",
        f"--model.init_args.output_dir={out}",
        f"--trainer.default_root_dir={tmp_path}",
        "--trainer.enable_progress_bar=false",
        "--data.init_args.split=valid_unseen",
        "--data.init_args.max_games=6",
        "--data.init_args.rollouts_per_game=2",
        "--data.init_args.batch_size=4",
        "--data.init_args.max_steps=6",
        *extra,
    ]
    return main(args)


def test_predict_writes_shards_and_manifest_and_resumes(tmp_path):
    out = tmp_path / "rollouts"
    assert _predict(tmp_path, "tiny", out) == 0
    shards = sorted(out.glob("batch-*.jsonl"))
    assert [p.name for p in shards] == [f"batch-0000{k}.rank0.jsonl" for k in range(3)]
    trajectories = [t for p in shards for t in read_jsonl(p)]
    episodes = sorted((t.game_id, t.rollout_index) for t in trajectories)
    assert len(episodes) == len(set(episodes)) == 12
    assert {r for _, r in episodes} == {0, 1}
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["episodes"] == manifest["expected_episodes"] == 12
    assert len(manifest["games"]) == 6 and len(manifest["success_rate_per_task_type"]) == 6
    assert all(t.num_actions <= 6 for t in trajectories)
    # A killed run: one finished batch is lost; the rerun redoes only that one, identically.
    before = {p.name: p.read_bytes() for p in shards}
    stamp = {p.name: p.stat().st_mtime_ns for p in shards}
    shards[1].unlink()
    assert _predict(tmp_path, "tiny", out) == 0
    after = sorted(out.glob("batch-*.jsonl"))
    assert {p.name: p.read_bytes() for p in after} == before
    assert [p.stat().st_mtime_ns == stamp[p.name] for p in after] == [True, False, True]


def test_retry_failed_plays_again_only_the_batches_with_failed_episodes(tmp_path):
    out = tmp_path / "rollouts"
    assert _predict(tmp_path, "tiny", out) == 0
    shards = sorted(out.glob("batch-*.jsonl"))
    clean = shards[1].read_bytes()
    # An engine error (here a full disk) as the rollout records it, in a shard another rank wrote.
    played = read_jsonl(shards[1])
    error = "OSError: [Errno 28] No space left on device: '/tmp/tmp{}/libdownward.so'"
    broken = [
        dataclasses.replace(t, failure=error.format(n), won=False)
        for t, n in zip(played[:2], ["a1b2c3d4", "zz_9y8x7"], strict=True)
    ]
    shards[1].unlink()
    moved = out / "batch-00001.rank1.jsonl"
    write_jsonl(moved, broken + played[2:])
    stamp = {p.name: p.stat().st_mtime_ns for p in out.glob("batch-*.jsonl")}

    with pytest.warns(UserWarning, match=r"2 of 12 episode\(s\) failed in the engine \(games valid_unseen/"):
        assert _predict(tmp_path, "tiny", out) == 0  # a plain rerun keeps every finished batch
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["failures"] == 2 and moved.exists()
    assert manifest["failure_reasons"] == {error.format("XXXXXXXX"): 2}
    assert manifest["failed_games"] == sorted({t.game_id for t in broken})

    assert _predict(tmp_path, "tiny", out, ["--model.init_args.retry_failed=true"]) == 0
    after = {p.name: p for p in out.glob("batch-*.jsonl")}
    assert sorted(after) == [f"batch-0000{k}.rank0.jsonl" for k in range(3)]
    assert after["batch-00001.rank0.jsonl"].read_bytes() == clean  # the same seed plays it again
    assert all(after[name].stat().st_mtime_ns == stamp[name] for name in stamp if name in after)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["failures"] == 0 and manifest["failure_reasons"] == {}
    assert manifest["episodes"] == manifest["expected_episodes"] == 12


def test_branched_rollouts_replay_the_prefix_and_sample_again_at_one_state(tmp_path):
    out = tmp_path / "rollouts"
    extra = [
        "--model.init_args.branches=3",
        "--data.init_args.rollouts_per_game=1",
        "--data.init_args.max_games=4",
    ]
    assert _predict(tmp_path, "tiny", out, extra) == 0
    trajectories = read_shards(out)
    roots = {(t.game_id, t.rollout_index): t for t in trajectories if t.branch_turn is None}
    branches = [t for t in trajectories if t.branch_turn is not None]
    assert len(roots) == 4 and len(branches) == 12
    actions_at_branch_state: dict[str, set[str]] = {}
    for b in branches:
        root, t = roots[(b.game_id, b.rollout_index)], b.branch_turn
        assert 0 <= t < root.num_actions
        # The replayed turns are the root's, state for state (the engine is deterministic).
        assert b.steps[:t] == root.steps[:t]
        assert b.state_at(t).key() == root.state_at(t).key()
        actions_at_branch_state.setdefault(root.state_at(t).key(), {root.steps[t].command}).add(
            b.steps[t].command
        )
    assert len(actions_at_branch_state) == 4
    # The untrained model samples over the admissible commands: branches try other actions there.
    assert max(map(len, actions_at_branch_state.values())) >= 2
    q = mc_q_targets(trajectories)
    by_state: dict[str, int] = {}
    for target in q:
        by_state[target.state.key()] = by_state.get(target.state.key(), 0) + 1
    assert any(by_state[k] >= 2 for k in actions_at_branch_state)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["episodes"] == manifest["expected_episodes"] == 4
    assert manifest["branch_episodes"] == 12
    assert manifest["success_rate"] == sum(t.won for t in roots.values()) / 4
    # Same seed, same episodes and branches.
    again = tmp_path / "again"
    assert _predict(tmp_path, "tiny", again, extra) == 0
    assert [p.read_bytes() for p in sorted(again.glob("batch-*.jsonl"))] == [
        p.read_bytes() for p in sorted(out.glob("batch-*.jsonl"))
    ]


def test_distinct_branches_try_other_actions_than_their_episode(tmp_path):
    out = tmp_path / "rollouts"
    extra = [
        "--model.init_args.branches=3",
        "--model.init_args.branch_actions=distinct",
        "--data.init_args.rollouts_per_game=1",
        "--data.init_args.max_games=4",
    ]
    assert _predict(tmp_path, "tiny", out, extra) == 0
    trajectories = read_shards(out)
    roots = {t.game_id: t for t in trajectories if t.branch_turn is None}
    groups: dict[str, list] = {}
    for b in trajectories:
        if b.branch_turn is not None:
            groups.setdefault(b.game_id, []).append(b)
    assert sorted(groups) == sorted(roots) and all(len(g) == 3 for g in groups.values())
    for game, branches in groups.items():
        root = roots[game]
        (t,) = {b.branch_turn for b in branches}
        assert all(b.steps[:t] == root.steps[:t] for b in branches)
        commands = [root.steps[t].command] + [b.steps[t].command for b in branches]
        assert all(c in root.steps[t].admissible_commands for c in commands)
        assert len(set(commands)) == min(4, len(root.steps[t].admissible_commands)), commands


def test_branches_are_refused_where_they_cannot_sample_again():
    with pytest.raises(ValueError, match="greedy branch"):
        RolloutModule(model="tiny", greedy=True, branches=2)
    with pytest.raises(ValueError, match=">= 0"):
        RolloutModule(model="tiny", branches=-1)
    with pytest.raises(ValueError, match="mode=admissible"):
        RolloutModule(model="tiny", mode="generate", branches=2, branch_actions="distinct")
    with pytest.raises(ValueError, match="training rollouts"):
        EvaluationModule(model="tiny", branches=2)


@pytest.mark.distributed
def test_ddp_rollout_on_two_processes_plays_each_episode_exactly_once(tmp_path):
    out = tmp_path / "rollouts"
    exe = Path(sys.executable).with_name("agentprm")
    args = [
        str(exe),
        "predict",
        "-c",
        str(ROOT / "configs/rollout/quickstart.yaml"),
        "--model.init_args.model=tiny",
        f"--model.init_args.output_dir={out}",
        f"--trainer.default_root_dir={tmp_path}",
        "--trainer.strategy=ddp",
        "--trainer.devices=2",
        "--trainer.enable_progress_bar=false",
        "--data.init_args.split=valid_unseen",
        "--data.init_args.max_games=5",
        "--data.init_args.rollouts_per_game=3",
        "--data.init_args.batch_size=4",
        "--data.init_args.max_steps=4",
    ]
    env = {
        k: v for k, v in os.environ.items() if k not in ("LOCAL_RANK", "WORLD_SIZE", "RANK", "MASTER_PORT")
    }
    proc = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    shards = sorted(out.glob("batch-*.jsonl"))
    assert {p.name.split(".")[1] for p in shards} == {"rank0", "rank1"}
    episodes = [(t.game_id, t.rollout_index) for p in shards for t in read_jsonl(p)]
    games = spread(AlfWorldEnv("builtin:small").game_ids("valid_unseen"), 5)
    assert sorted(episodes) == sorted((g, r) for g in games for r in range(3))
    assert json.loads((out / "manifest.json").read_text())["episodes"] == 15


def test_lora_sft_writes_a_merged_policy_that_loads_without_peft(tmp_path):
    out = _fit_sft(tmp_path, steps=3, extra=("--model.init_args.lora.r=4", "--model.init_args.lr=0.05"))
    policy = load_causal_lm(str(out / "policy"))
    assert type(policy).__name__ == "LlamaForCausalLM"  # merged: a plain model, no adapters
    base = load_causal_lm("tiny")
    q_merged = policy.model.layers[0].self_attn.q_proj.weight
    assert not torch.allclose(q_merged, base.model.layers[0].self_attn.q_proj.weight)
    # LoRA leaves the embeddings alone
    assert torch.equal(policy.model.embed_tokens.weight, base.model.embed_tokens.weight)


@pytest.mark.slow
def test_shipped_demonstrations_equal_a_fresh_replay(tmp_path):
    """The small set's training demonstrations shipped with the package are what the engine plays."""
    shipped = expert_demonstrations("builtin:small", "train", cache_dir=tmp_path / "a", progress=False)
    fresh = expert_demonstrations(
        "builtin:small", "train", cache_dir=tmp_path / "b", progress=False, use_shipped=False
    )
    assert len(shipped) > 200 and shipped == fresh


def test_branches_from_snapshots_equal_branches_from_a_replayed_prefix(tmp_path):
    """The graph engine starts branches from snapshots, the plain engine replays their prefix: the
    same episodes (both branch modes). Log-probabilities agree to float rounding only: the policy
    scores the running states together, and which states run together differs between the two."""
    for mode in ("sample", "distinct"):
        extra = [
            "--model.init_args.branches=2",
            f"--model.init_args.branch_actions={mode}",
            "--data.init_args.rollouts_per_game=1",
            "--data.init_args.max_games=4",
        ]
        graph, plain = tmp_path / f"graph-{mode}", tmp_path / f"plain-{mode}"
        assert _predict(tmp_path, "tiny", graph, extra) == 0
        env = [
            "--data.init_args.data=null",
            "--data.init_args.env.class_path=agentprm.envs.alfworld.AlfWorldEnvFactory",
            "--data.init_args.env.init_args.engine=plain",
        ]
        assert _predict(tmp_path, "tiny", plain, [*extra, *env]) == 0
        shards = sorted(p.name for p in graph.glob("batch-*.jsonl"))
        assert shards and shards == sorted(p.name for p in plain.glob("batch-*.jsonl"))
        for name in shards:
            a, b = read_jsonl(graph / name), read_jsonl(plain / name)
            assert [_without_logprobs(t) for t in a] == [_without_logprobs(t) for t in b]
            logprobs = [s.logprob for t in a for s in t.steps], [s.logprob for t in b for s in t.steps]
            assert logprobs[0] == pytest.approx(logprobs[1], abs=1e-4)


def _without_logprobs(traj):
    import dataclasses

    return dataclasses.replace(traj, steps=tuple(dataclasses.replace(s, logprob=None) for s in traj.steps))
