"""Online DPO: pair selection, shared-prompt log-probs, the reference stays fixed, LoRA holds no copy."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Trainer

from agentprm.backbone import LoraSettings, load_causal_lm
from agentprm.cli import main
from agentprm.dpo import (
    OnlineDPOModule,
    PolicyDataModule,
    policy_states,
)
from agentprm.prm import PRMModule
from agentprm.records import read_jsonl
from agentprm.sampling import chat_ids, response_ids, score_continuations, score_continuations_batch

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def random_prm(tmp_path_factory) -> Path:
    """A PRM with a large random head: its scores differ between commands, so pairs exist."""
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("prm") / "prm"
    PRMModule("tiny", head_init_std=1.0)._save(str(out))
    return out


def _trainer(tmp_path, steps: int, **kwargs) -> Trainer:
    return Trainer(
        accelerator="cpu",
        max_steps=steps,
        default_root_dir=tmp_path,
        enable_progress_bar=False,
        enable_checkpointing=False,
        logger=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        **kwargs,
    )


def _params(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.named_parameters()}


def test_policy_logps_with_a_shared_prompt_equal_each_response_alone(random_prm, scripted_rollouts):
    module = OnlineDPOModule("tiny", prm=str(random_prm))
    state = policy_states(read_jsonl(scripted_rollouts / "rollouts.jsonl"))[3]
    prompt = chat_ids(module.tokenizer, module.renderer, state)
    texts = [module.renderer.response("", c) for c in state.admissible_commands[:3]]
    suffixes = [response_ids(module.tokenizer, module.renderer, state, prompt, t) for t in texts]
    shared = score_continuations(module.model, prompt, suffixes, module.tokenizer.pad_token_id)
    with torch.no_grad():
        alone = torch.stack(
            [
                score_continuations(module.model, prompt, [s], module.tokenizer.pad_token_id)[0]
                for s in suffixes
            ]
        )
    torch.testing.assert_close(shared.detach(), alone, rtol=1e-4, atol=1e-4)
    assert shared.requires_grad  # the policy's log-probs carry gradients through the shared prompt


def test_batched_logps_equal_each_state_alone_with_gradients(random_prm, scripted_rollouts):
    """States of different prompt lengths in one forward: same log-probs and gradients as alone."""
    module = OnlineDPOModule("tiny", prm=str(random_prm))
    states = policy_states(read_jsonl(scripted_rollouts / "rollouts.jsonl"))[:5]
    pad = module.tokenizer.pad_token_id
    prompts = [chat_ids(module.tokenizer, module.renderer, s) for s in states]
    assert len({len(p) for p in prompts}) > 1
    conts = [
        [
            response_ids(module.tokenizer, module.renderer, s, p, module.renderer.response("", c))
            for c in s.admissible_commands[:3]
        ]
        for s, p in zip(states, prompts, strict=True)
    ]
    weight = module.model.get_input_embeddings().weight
    together = score_continuations_batch(module.model, prompts, conts, pad)
    torch.cat(together).sum().backward()
    grad_together = weight.grad.clone()
    weight.grad = None
    alone = [score_continuations(module.model, p, c, pad) for p, c in zip(prompts, conts, strict=True)]
    torch.cat(alone).sum().backward()
    for t, a in zip(together, alone, strict=True):
        torch.testing.assert_close(t, a, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(grad_together, weight.grad, rtol=1e-3, atol=1e-5)


def test_pairs_are_best_and_worst_and_ties_are_dropped(random_prm, scripted_rollouts):
    module = OnlineDPOModule("tiny", prm=str(random_prm), samples_per_state=6, temperature=5.0)
    states = policy_states(read_jsonl(scripted_rollouts / "rollouts.jsonl"))[:8]
    scored = module.score_states(states, seed=0)
    assert len(scored) == 8
    for s in scored:
        assert len(s.samples) == 6 and len(s.scores) == 6
        if s.chosen is None:
            assert max(s.scores) - min(s.scores) <= 0.0  # only ties give no pair
        else:
            assert s.scores[s.chosen] == max(s.scores) and s.scores[s.rejected] == min(s.scores)
            assert s.samples[s.chosen].text != s.samples[s.rejected].text
    assert any(s.chosen is not None for s in scored)
    strict = OnlineDPOModule("tiny", prm=str(random_prm), samples_per_state=6, temperature=5.0, margin=1e9)
    assert all(s.chosen is None for s in strict.score_states(states, seed=0))


def test_full_finetune_reference_does_not_change(tmp_path, random_prm, scripted_rollouts):
    module = OnlineDPOModule(
        "tiny", prm=str(random_prm), lr=0.01, temperature=3.0, output_dir=str(tmp_path / "pi")
    )
    ref_before = _params(module.reference_model)
    policy_before = _params(module.model)
    assert not any(p.requires_grad for p in module.reference_model.parameters())
    assert all(not n.startswith("_frozen") for n, _ in module.named_parameters())  # not trained or saved
    data = PolicyDataModule([str(scripted_rollouts)], batch_size=4, val_fraction=0.2)
    _trainer(tmp_path, 4).fit(module, data)
    for name, value in _params(module.reference_model).items():
        torch.testing.assert_close(value, ref_before[name], rtol=0, atol=0)
    moved = [n for n, v in _params(module.model).items() if not torch.equal(v, policy_before[n])]
    assert moved, "the policy did not change"
    reloaded = load_causal_lm(str(tmp_path / "pi"))
    torch.testing.assert_close(
        reloaded.state_dict()["lm_head.weight"], module.model.state_dict()["lm_head.weight"]
    )


def test_lora_reference_is_the_adapters_disabled_and_no_copy_is_held(tmp_path, random_prm, scripted_rollouts):
    module = OnlineDPOModule(
        "tiny", prm=str(random_prm), lora=LoraSettings(r=4, alpha=8, dropout=0.0), lr=0.05, temperature=3.0
    )
    assert module.reference_model is None
    # One copy of the base weights: every tensor the module and its frozen parts hold (the PRM aside)
    # is a distinct storage of the policy, LoRA factors included.
    storages = {p.untyped_storage().data_ptr() for p in module.model.parameters()}
    base = sum(p.numel() for n, p in module.model.named_parameters() if "lora_" not in n)
    assert base == sum(p.numel() for p in load_causal_lm("tiny").parameters())
    assert len(storages) == len(list(module.model.parameters()))
    assert set(module._frozen) <= {"prm"}

    state = policy_states(read_jsonl(scripted_rollouts / "rollouts.jsonl"))[2]
    prompt = chat_ids(module.tokenizer, module.renderer, state)
    texts = [module.renderer.response("", c) for c in state.admissible_commands[:2]]
    suffixes = [response_ids(module.tokenizer, module.renderer, state, prompt, t) for t in texts]

    def ref_logps():
        with torch.no_grad(), module.reference_context():
            return score_continuations(module.model, prompt, suffixes, module.tokenizer.pad_token_id)

    base_model = load_causal_lm("tiny")
    with torch.no_grad():
        expected = score_continuations(base_model, prompt, suffixes, module.tokenizer.pad_token_id)
    torch.testing.assert_close(ref_logps(), expected, rtol=1e-5, atol=1e-5)
    trainable = {n for n, p in module.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    data = PolicyDataModule([str(scripted_rollouts)], batch_size=4, val_fraction=0.2)
    _trainer(tmp_path, 3).fit(module, data)
    torch.testing.assert_close(ref_logps(), expected, rtol=1e-5, atol=1e-5)  # the reference did not move
    with torch.no_grad():
        after = score_continuations(module.model, prompt, suffixes, module.tokenizer.pad_token_id)
    assert not torch.allclose(after, expected, atol=1e-5)  # the policy did


def test_policy_datamodule_splits_by_game_and_draws_per_epoch(scripted_rollouts):
    data = PolicyDataModule([str(scripted_rollouts)], batch_size=5, val_fraction=0.25, states_per_epoch=10)
    data.setup("fit")
    train_games = {s.game_id for s in data.train_states}
    assert train_games and not train_games & {s.game_id for s in data.val_states}
    keys = [s.key() for s in data.train_states]
    assert len(keys) == len(set(keys))  # each state once
    batches = list(data.train_dataloader())
    assert [len(b) for b in batches] == [5, 5]
    assert all(type(s).__name__ == "State" for b in batches for s in b)


def test_policy_datamodule_adds_fresh_resets(scripted_rollouts, small_root):
    data = PolicyDataModule([str(scripted_rollouts)], resets=str(small_root), max_resets=24, val_fraction=0.1)
    data.setup("fit")
    initial = {s.game_id for s in data.train_states + data.val_states if s.turn == 0}
    played = {s.game_id for s in data.train_states + data.val_states if s.turn > 0}
    assert len(played) == 12 and len(initial - played) >= 12  # fresh games' first states were added


def _shrunk_bundles(tmp_path: Path, small_root: Path) -> Path:
    """The reward-hacking and sample-logger bundles at test sizes (4 games, every 3 steps)."""
    import yaml

    callbacks = [
        c
        for name in ("reward_hacking", "sample_logger")
        for c in yaml.safe_load((ROOT / f"callbacks/{name}.yaml").read_text())["trainer"]["callbacks+"]
    ]
    for c in callbacks:
        c["init_args"]["every_n_steps"] = 3
        if c["class_path"].endswith("EnvEvalCallback"):
            c["init_args"].update(data=str(small_root), max_games=4, max_steps=8)
    path = tmp_path / "callbacks.yaml"
    path.write_text(yaml.safe_dump({"trainer": {"callbacks+": callbacks}}))
    return path


def test_online_dpo_cli_with_callbacks(tmp_path, random_prm, scripted_rollouts, small_root):
    out = tmp_path / "policy"
    args = [
        "fit",
        "-c",
        str(ROOT / "configs/policy/quickstart.yaml"),
        "-c",
        str(_shrunk_bundles(tmp_path, small_root)),
        f"--trainer.default_root_dir={out}",
        "--trainer.max_steps=4",
        "--trainer.log_every_n_steps=1",
        "--trainer.enable_progress_bar=false",
        "--model.init_args.model=tiny",
        f"--model.init_args.prm={random_prm}",
        "--model.init_args.temperature=3.0",
        f"--data.init_args.rollouts=[{scripted_rollouts}]",
        "--data.init_args.batch_size=4",
        "--data.init_args.val_fraction=0.25",
    ]
    assert main(args) == 0
    version = out / "lightning_logs" / "version_0"
    rows = list(csv.DictReader((version / "metrics.csv").open()))
    columns = set(rows[0])
    for key in (
        "dpo/loss",
        "dpo/margin",
        "dpo/chosen_reward",
        "dpo/rejected_reward",
        "dpo/prm_score",
        "dpo/kl",
    ):
        assert key in columns, key
    assert {"eval/success_rate", "monitor/prm_score", "monitor/hacking"} <= columns
    evals = [r for r in rows if r.get("eval/success_rate")]
    assert [int(r["step"]) for r in evals] == [0, 3, 4]  # the start, every 3 steps, the end
    samples = read_lines(version / "samples.jsonl")
    assert samples and {"responses", "scores", "chosen", "rejected"} <= set(samples[0])
    assert (out / "policy" / "config.json").is_file()


def read_lines(path: Path) -> list[dict]:
    import json

    return [json.loads(line) for line in path.read_text().splitlines()]


def test_bad_settings_are_named(random_prm):
    with pytest.raises(ValueError, match="samples_per_state must be >= 2"):
        OnlineDPOModule("tiny", prm=str(random_prm), samples_per_state=1)
    with pytest.raises(ValueError, match="reference='adapters' needs LoRA"):
        OnlineDPOModule("tiny", prm=str(random_prm), reference="adapters")


def test_distinct_candidates_and_all_pairs(random_prm, scripted_rollouts):
    module = OnlineDPOModule(
        "tiny", prm=str(random_prm), samples_per_state=4, candidates="distinct", pairs="all"
    )
    states = policy_states(read_jsonl(scripted_rollouts / "rollouts.jsonl"))[:6]
    for s in module.score_states(states, seed=0):
        texts = [x.text for x in s.samples]
        assert len(texts) == min(4, len(s.state.admissible_commands)) and len(set(texts)) == len(texts)
        expected = {(i, j) for i in range(len(texts)) for j in range(len(texts)) if s.scores[i] > s.scores[j]}
        assert set(s.pairs) == expected and (s.chosen, s.rejected) in expected
    with pytest.raises(ValueError, match="candidates=distinct needs mode=admissible"):
        OnlineDPOModule("tiny", prm=str(random_prm), candidates="distinct", mode="generate")


def test_oracle_dpo_with_an_nll_anchor_raises_the_chosen_likelihood(tmp_path, small_root, scripted_rollouts):
    """Against the search expert's Q, with an NLL anchor, the chosen responses gain probability."""
    oracle = f"oracle?data={small_root}"
    module = OnlineDPOModule(
        "tiny", prm=oracle, candidates="distinct", lr=0.01, nll_weight=1.0, output_dir=str(tmp_path / "pi")
    )
    data = PolicyDataModule([str(scripted_rollouts)], batch_size=4, val_fraction=0.2)
    data.setup()
    scored = module.score_states(data.train_states[:8], seed=1)
    paired = [s for s in scored if s.pairs]
    assert paired, "the oracle orders the commands of these states"

    def chosen_logp() -> float:
        with torch.no_grad():
            return float(
                sum(
                    module._logps(module.model, paired, [[s.chosen] for s in paired])[b][0]
                    for b in range(len(paired))
                )
            )

    before = chosen_logp()
    _trainer(tmp_path, 6).fit(module, data)
    assert chosen_logp() > before


def test_a_prm_with_a_likelihood_prior_scores_with_it_inside_the_cli(tmp_path, scripted_rollouts, small_root):
    """The PRM loaded by a CLI-built DPO stage keeps its likelihood prior (LightningCLI hands its
    own arguments to every save_hyperparameters under it): with a zero head, every score DPO logs
    is the response's log-likelihood, so negative and different between responses."""
    prm = tmp_path / "prior-prm"
    PRMModule("tiny", head_init_std=0.0, likelihood_prior=1.0)._save(str(prm))
    out = tmp_path / "policy"
    args = [
        "fit",
        "-c",
        str(ROOT / "configs/policy/quickstart.yaml"),
        f"--trainer.default_root_dir={out}",
        "--trainer.max_steps=2",
        "--trainer.limit_val_batches=0",
        "--trainer.enable_progress_bar=false",
        "--model.init_args.model=tiny",
        f"--model.init_args.prm={prm}",
        "--model.init_args.candidates=distinct",
        f"--data.init_args.rollouts=[{scripted_rollouts}]",
        "--data.init_args.batch_size=4",
        "--trainer.callbacks+=agentprm.callbacks.SampleLogger",
    ]
    assert main(args) == 0
    scores = [
        s for row in read_lines(out / "lightning_logs" / "version_0" / "samples.jsonl") for s in row["scores"]
    ]
    assert scores and max(scores) < 0 and len(set(scores)) > 1
