"""DPO step throughput and peak memory: agentprm's OnlineDPOModule (Lightning) vs TRL's DPOTrainer.

One DPO optimisation step on fixed preference pairs: policy log-probabilities of chosen and
rejected (with gradients), reference log-probabilities (no gradients), the sigmoid DPO loss at
β = 0.03, backward, gradient clipping at 1.0 and an AdamW step at lr 1e-4 (the same
``torch.optim.AdamW``: TRL's default fused kernel is switched to ``adamw_torch``). Both sides train
the same random Llama (``common.bench_model``, built by ``build_tiny_model``), float32, no
dropout, no gradient checkpointing, the same thread count, on the same (state, chosen, rejected)
pairs in the same order and the same batch (pairs per step). A pair is a real state
(``common.random_states``, rendered by agentprm's ``Renderer``) and two different
admissible-command responses to it, tokenized as ``OnlineDPOModule._logps`` does
(``chat_ids`` for the prompt, ``response_ids`` for each response, end-of-turn token included).

- Ours: ``OnlineDPOModule`` — its real ``training_step`` (``_logps`` of chosen and rejected on the
  policy and of every sample of the state on the reference, here the same two as a fixed pair has
  k = 2 samples; ``_logps`` is ``sampling.score_continuations_batch``: the batch's prompts run once, chosen
  and rejected continue from their KV cache; ``losses.dpo``; the metrics it logs, the KL estimate
  from the samples' ``logprob``, set to 0 here) and its real
  ``configure_optimizers`` — driven by a real ``lightning.Trainer`` (``precision="32-true"``,
  ``gradient_clip_val=1.0``, as ``configs/policy/quickstart.yaml``). Only sampling and PRM scoring,
  which TRL's step does not have, are replaced: a subclass's ``score_states`` returns the fixed
  ``ScoredState`` pairs of the batch (chosen = sample 0, rejected = sample 1). A callback times
  ``on_train_batch_start`` → ``on_train_batch_end``.
- TRL: ``DPOTrainer`` (``loss_type=["sigmoid"]``, ``beta=0.03``, ``precompute_ref_log_probs=False``,
  ``disable_dropout=True``, ``max_length=None``, ``train_sampling_strategy="sequential"``) on
  ``AutoModelForCausalLM`` loaded from the same directory; each step runs the [2B, L] batch of
  prompt+chosen and prompt+rejected rows through the policy and the reference. TRL 1.16 always
  tokenizes text itself (the chat template would add the newline after the end-of-turn token to
  each response), so a subclass's ``_prepare_dataset`` passes our ``prompt_ids`` / ``chosen_ids`` /
  ``rejected_ids`` through unchanged; TRL's own collator builds the batch. A ``TrainerCallback``
  times ``on_step_begin`` → ``on_step_end`` (the same span: forward, backward, clipping,
  optimiser and scheduler step; not data loading).

Two variants: full fine-tuning with a frozen reference copy on both sides (ours: the module's
deep copy; TRL: ``ref_model=None``, which loads a second copy from the model directory), and LoRA
(r 16, α 32, no dropout, all linear layers but the LM head) where the reference is the same
weights with the adapters disabled on both sides (ours: ``lora=LoraSettings(...)``; TRL: a
``peft_config`` with the same ``LoraConfig``).

Tokens are counted the same way for both: the non-pad tokens of prompt+chosen and prompt+rejected
of every pair in the step (TRL's ``num_input_tokens_seen`` with ``"non_padding"`` is checked
against ours), though ours runs each prompt once (the notes give how many tokens that is). Peak
memory is the process's peak RSS from before the model is loaded to the end of training, minus
the RSS before. Ours and TRL alternate in rounds, each round a fresh trainer with its warm-up steps.

Checks and breakdown (in the rows' notes): the mean policy log π(chosen) and log π(rejected) of
the first step (initial weights) of both sides, which must agree (same weights, same tokens); and
the median split of a step. For ours, a subclass wrapper times ``_logps`` with gradients
(policy) and without (reference), and the tokenization the real path does inside the step (the
prompt and both responses, once for the policy and once for the reference; TRL tokenizes before
training) is timed again after the step; the rest is loss, backward, clipping, AdamW and
Lightning's logging. For TRL, a subclass wrapper times ``compute_loss`` (both forwards, loss,
metrics); the rest is backward, clipping and AdamW.

Machine load: ours runs each pair as its own batch-1 calls (prompt, then the two responses; ~1.9k
matrix products per full-size step), TRL one padded batch. With 2 threads and another process
busy on a 2-core box, every operator waits for a descheduled thread, which hurts ours far more
(a 2-thread run next to a busy core measured ours 4× *slower*, its steps spread 5–68 s). Compare
runs with no other load, or set ``BENCH_THREADS=1``.

    .venv/bin/python benchmarks/dpo_step.py [--quick] [--no-trl] [--no-lora] [--profile]
"""

from __future__ import annotations

import argparse
import logging
import random
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import common

NAME = "DPO step"
ORDER = 40
GOAL = 1.3
BETA = 0.03
LR = 1e-4
RENDERER = {"template": "compact", "history_window": 4, "response_format": "action"}
"""The policy's renderer here: the last 4 turns in full, so prompts are 100–400 tokens (as prm_training)."""
LORA = {"r": 16, "alpha": 32, "dropout": 0.0, "target_modules": "all-linear"}


def _pairs(model_dir: Path, n_pairs: int, n_turns: int, seed: int = 0):
    """Fixed pairs: ``ScoredState`` (chosen = sample 0, rejected = sample 1) and their token ids.

    Returns ``(scored, tokens)``: ``tokens[i]`` is ``(prompt, chosen, rejected)``, tokenized as
    ``OnlineDPOModule._logps`` does, without loading a model.
    """
    from agentprm.backbone import load_tokenizer
    from agentprm.dpo import ScoredState
    from agentprm.prompts import Renderer
    from agentprm.sampling import Sample, chat_ids, response_ids

    states = [
        s for s in common.random_states(n_turns, n_games=4, seed=seed) if len(s.admissible_commands) > 1
    ]
    tokenizer = load_tokenizer(str(model_dir))
    renderer = Renderer(**RENDERER)
    rng = random.Random(seed)
    scored, tokens = [], []
    for i in range(n_pairs):
        state = states[i % len(states)]
        commands = rng.sample(list(state.admissible_commands), 2)
        samples = tuple(Sample(renderer.response("", c), c, "", (), 0.0) for c in commands)
        scored.append(ScoredState(state, samples, (1.0, 0.0), 0, 1, ((0, 1),)))
        prompt = chat_ids(tokenizer, renderer, state)
        responses = [response_ids(tokenizer, renderer, state, prompt, s.text) for s in samples]
        tokens.append((prompt, *responses))
    return scored, tokens


def _pair_tokens(ids) -> int:
    """prompt+chosen and prompt+rejected tokens of a pair (the count both sides report)."""
    prompt, chosen, rejected = ids
    return 2 * len(prompt) + len(chosen) + len(rejected)


def _result(timer, warmup: int, mem) -> dict:
    """One side's timed steps (warm-up dropped), peak memory and first-step log-probs."""
    return {
        "times": timer.times[warmup:],
        "tokens": timer.tokens[warmup:],
        "mem": mem,
        "logps": timer.first_logps,
        "split": timer.split[warmup:],
    }


def _ours(model_dir: Path, scored, tokens, size: int, warmup: int, steps: int, lora: bool, profile: bool):
    """Per-step seconds and tokens of OnlineDPOModule in a Lightning Trainer, and the peak memory."""
    import lightning as L
    import torch
    from torch.utils.data import DataLoader

    from agentprm.backbone import LoraSettings
    from agentprm.dpo import OnlineDPOModule
    from agentprm.sampling import chat_ids, response_ids

    class FixedPairsDPO(OnlineDPOModule):
        """OnlineDPOModule whose batches are fixed ``ScoredState`` pairs instead of states to sample at."""

        spent: dict[str, float] | None = None
        """Seconds in ``_logps`` with gradients (policy) and without (reference), set per step."""

        def score_states(self, states, seed):
            return list(states)  # the batch already holds the pairs: no sampling, no PRM

        def _logps(self, model, scored, which):
            start = time.perf_counter()
            out = super()._logps(model, scored, which)
            if self.spent is not None:
                self.spent["policy" if torch.is_grad_enabled() else "reference"] += (
                    time.perf_counter() - start
                )
            return out

        def on_fit_end(self) -> None:
            pass  # do not write the trained policy

    class StepTimer(L.Callback):
        def __init__(self) -> None:
            self.times: list[float] = []
            self.tokens: list[int] = []
            self.split: list[dict[str, float]] = []

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            if batch_idx == 0:  # log-probabilities at the initial weights, to compare with TRL's
                with torch.no_grad():
                    logps = torch.stack(
                        pl_module._logps(pl_module.model, batch, [(s.chosen, s.rejected) for s in batch])
                    )
                self.first_logps = logps.mean(0).tolist()
            self.tokens.append(sum(_pair_tokens(tokens[batch_idx * size + i]) for i in range(len(batch))))
            pl_module.spent = {"policy": 0.0, "reference": 0.0}
            profiler.start(profile and batch_idx == warmup + steps - 1)
            self.start = time.perf_counter()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            self.times.append(time.perf_counter() - self.start)
            profiler.stop(f"ours: OnlineDPOModule in a Lightning Trainer ({'LoRA' if lora else 'full'})")
            # The tokenization _logps did inside the step (once for the policy, once for the
            # reference), timed again here outside the step.
            start = time.perf_counter()
            for _ in range(2):
                for s in batch:
                    prompt = chat_ids(pl_module.tokenizer, pl_module.renderer, s.state)
                    for sample in s.samples:
                        response_ids(pl_module.tokenizer, pl_module.renderer, s.state, prompt, sample.text)
            tokenize = time.perf_counter() - start
            policy, reference = pl_module.spent["policy"], pl_module.spent["reference"]
            rest = self.times[-1] - policy - reference
            self.split.append({"policy": policy, "reference": reference, "tokenize": tokenize, "rest": rest})

    timer, profiler = StepTimer(), common.StepProfiler()
    loader = DataLoader(scored, batch_size=size, shuffle=False, collate_fn=list)
    with tempfile.TemporaryDirectory() as tmp, common.PeakRSS() as mem, warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*(validation_step|LeafSpec|val_dataloader).*")
        # The scorer is never called on fixed pairs; the oracle is the one that loads no model.
        module = FixedPairsDPO(
            model=str(model_dir), prm="oracle", lora=LoraSettings(**LORA) if lora else None,
            reference="auto", beta=BETA, lr=LR, weight_decay=0.0, warmup_steps=0, **RENDERER,
            output_dir=str(Path(tmp) / "policy"),
        )  # fmt: skip
        trainer = L.Trainer(
            accelerator="cpu", devices=1, precision="32-true", max_steps=warmup + steps,
            gradient_clip_val=1.0, logger=False, enable_checkpointing=False, enable_progress_bar=False,
            enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0, callbacks=[timer],
            default_root_dir=tmp,
        )  # fmt: skip
        trainer.fit(module, train_dataloaders=loader)
    return _result(timer, warmup, mem)


def _trl(model_dir: Path, tokens, batch: int, warmup: int, steps: int, lora: bool, profile: bool):
    """Per-step seconds and tokens of TRL's DPOTrainer on the same weights and pairs; peak memory."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import DPOConfig, DPOTrainer

    from agentprm.backbone import LoraSettings

    class PreTokenizedDPOTrainer(DPOTrainer):
        """DPOTrainer taking tokenized ``prompt_ids``/``chosen_ids``/``rejected_ids`` as they are."""

        spent = 0.0
        """Seconds in ``compute_loss``: policy and reference forwards, the loss and its metrics."""

        def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
            return dataset

        def compute_loss(self, *args, **kwargs):
            start = time.perf_counter()
            try:
                return super().compute_loss(*args, **kwargs)
            finally:
                self.spent += time.perf_counter() - start

    class StepTimer(TrainerCallback):
        def __init__(self) -> None:
            self.times: list[float] = []
            self.tokens: list[int] = []
            self.split: list[dict[str, float]] = []

        def on_step_begin(self, args, state, control, **kwargs):
            self.seen = state.num_input_tokens_seen
            self.spent = self.trainer.spent
            profiler.start(profile and state.global_step == warmup + steps - 1)
            self.start = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            self.times.append(time.perf_counter() - self.start)
            self.tokens.append(int(state.num_input_tokens_seen - self.seen))
            forward = self.trainer.spent - self.spent
            self.split.append({"forward": forward, "rest": self.times[-1] - forward})
            if state.global_step == 1:  # TRL's mean policy log-probabilities of the first step
                metrics = self.trainer._metrics["train"]
                self.first_logps = [metrics["logps/chosen"][0], metrics["logps/rejected"][0]]
            profiler.stop(f"TRL DPOTrainer ({'LoRA' if lora else 'full'})")

    timer, profiler = StepTimer(), common.StepProfiler()
    data = Dataset.from_list([{"prompt_ids": p, "chosen_ids": c, "rejected_ids": r} for p, c, r in tokens])
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    with tempfile.TemporaryDirectory() as tmp, common.PeakRSS() as mem, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.getLogger("transformers").setLevel(logging.ERROR)
        model = AutoModelForCausalLM.from_pretrained(str(model_dir))
        args = DPOConfig(
            output_dir=tmp, max_steps=warmup + steps, per_device_train_batch_size=batch, learning_rate=LR,
            lr_scheduler_type="constant", optim="adamw_torch", max_grad_norm=1.0, weight_decay=0.0,
            beta=BETA, loss_type=["sigmoid"], precompute_ref_log_probs=False, disable_dropout=True,
            max_length=None, bf16=False, fp16=False, use_cpu=True, gradient_checkpointing=False,
            report_to="none", save_strategy="no", logging_steps=10_000, disable_tqdm=True,
            dataloader_num_workers=0, train_sampling_strategy="sequential",
            include_num_input_tokens_seen="non_padding", seed=0,
        )  # fmt: skip
        trainer = PreTokenizedDPOTrainer(
            model=model, ref_model=None, args=args, train_dataset=data, processing_class=tokenizer,
            peft_config=LoraSettings(**LORA).peft_config() if lora else None, callbacks=[timer],
        )  # fmt: skip
        timer.trainer = trainer
        if (trainer.ref_model is None) == (not lora):
            raise RuntimeError(f"unexpected TRL reference for lora={lora}: {type(trainer.ref_model)}")
        trainer.train()
    return _result(timer, warmup, mem)


def run(quick: bool = False, trl: bool | None = None, lora: bool = True, profile: bool = False) -> list[dict]:
    """DPO step rows (full fine-tuning, then LoRA): tokens/s, step time and peak memory of ours vs TRL.

    Ours and TRL alternate in rounds (ours, TRL, ours, TRL), each round a fresh trainer with its
    warm-up step, so a change of machine load hits both sides alike.

    Args:
        quick: Tiny sizes (a smoke test), not a measurement.
        trl: Measure TRL's DPOTrainer too; None: only when ``trl`` is importable.
        lora: Also measure the LoRA variant.
        profile: Print a torch.profiler operator table of the last step of each side.
    """
    common.setup()
    trl = common.want_trl(trl)
    model_dir, batch, rounds, warmup, steps, turns = common.trainer_sizes(quick)
    scored, tokens = _pairs(model_dir, batch * (warmup + steps), turns)
    timed = tokens[batch * warmup :]
    counted = sum(_pair_tokens(t) for t in timed)
    shared = sum(len(p) + len(c) + len(r) for p, c, r in timed)
    prompts = sorted(len(p) for p, _, _ in tokens)
    responses = sorted(len(x) for _, c, r in tokens for x in (c, r))
    rows = []
    for variant in (False, True) if lora else (False,):
        sides = {"ours": [], "trl": []}
        for r in range(rounds):
            last = profile and r == rounds - 1
            sides["ours"].append(_ours(model_dir, scored, tokens, batch, warmup, steps, variant, last))
            if trl:
                sides["trl"].append(_trl(model_dir, tokens, batch, warmup, steps, variant, last))
        ours = _merge(sides["ours"])
        base = _merge(sides["trl"]) if trl else None
        case = (
            f"{'LoRA r16' if variant else 'full FT'}, {batch} pairs/step, prompt {prompts[0]}–{prompts[-1]} "
            f"tok, responses {responses[0]}–{responses[-1]} tok, {model_dir.name}, fp32, β {BETA:g}"
        )
        same = base is None or base["tokens"] == ours["tokens"]
        reference = "adapters disabled" if variant else "frozen copy"
        notes = (
            f"{rounds} rounds (ours, TRL, …) of {warmup} warm-up + {steps} timed steps; Lightning Trainer + "
            f"OnlineDPOModule.training_step on fixed pairs vs DPOTrainer; reference: {reference} (both); "
            f"same non-pad tokens per step: {'yes' if same else 'NO'}; tokens counted as prompt+chosen+"
            f"prompt+rejected ({counted} per round), ours runs each prompt once ({shared}, "
            f"{counted / shared:.2f}× fewer)"
        )
        if base is not None:
            diff = max(abs(a - b) for a, b in zip(ours["logps"], base["logps"], strict=True))
            notes += (
                f"; first step's mean policy log π(chosen), log π(rejected): ours "
                f"{ours['logps'][0]:.4f}, {ours['logps'][1]:.4f}, TRL {base['logps'][0]:.4f}, "
                f"{base['logps'][1]:.4f} (max |difference| {diff:.1e})"
            )
        mem_note = (
            f"peak RSS ours {ours['peak']:.0f} MiB"
            + (f", TRL {base['peak']:.0f} MiB" if base else "")
            + "; value = peak minus RSS before loading the model (largest of the rounds)"
        )
        o = ours["split"]
        split_note = (
            f"median split of a step: ours: policy log-probs {o['policy']:.3g} s, reference log-probs "
            f"{o['reference']:.3g} s (tokenizing inside these two: {o['tokenize']:.3g} s), loss + backward + "
            f"clipping + AdamW + logging {o['rest']:.3g} s"
        )
        if base is not None:
            b = base["split"]
            split_note += (
                f"; TRL: compute_loss (policy and reference forwards, loss, metrics) {b['forward']:.3g} s, "
                f"backward + clipping + AdamW {b['rest']:.3g} s"
            )
        label = "TRL DPOTrainer"
        rows += [
            common.row(NAME, case, "throughput", "non-pad tok/s", ours["rate"], base and base["rate"], label,
                       goal=GOAL, notes=notes),
            common.row(NAME, case, "step time", "s", ours["times"], base and base["times"], label,
                       higher_is_better=False, notes=split_note),
            common.row(NAME, case, "peak memory added", "MiB", [ours["delta"]], base and [base["delta"]],
                       label, higher_is_better=False, notes=mem_note),
        ]  # fmt: skip
    return rows


def _merge(results: list[dict]) -> dict:
    """``common.merge_rounds`` plus the first round's log-probs and the median split of a step."""
    return {
        **common.merge_rounds(results),
        "logps": results[0]["logps"],
        "split": {
            k: statistics.median(s[k] for r in results for s in r["split"]) for k in results[0]["split"][0]
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
    parser.add_argument("--no-trl", dest="trl", action="store_false", default=None, help="skip TRL")
    parser.add_argument("--no-lora", dest="lora", action="store_false", help="full fine-tuning only")
    parser.add_argument("--profile", action="store_true", help="operator table of the last step of each side")
    args = parser.parse_args()
    rows = run(args.quick, args.trl, args.lora, args.profile)
    common.print_rows(rows)


if __name__ == "__main__":
    main()
