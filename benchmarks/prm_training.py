"""PRM training throughput and peak memory: agentprm's PRMModule (Lightning) vs TRL's RewardTrainer.

Both train the same random Llama (``common.bench_model``, built by ``build_tiny_model``) on the same
(state, chosen, rejected) pairs with the Bradley–Terry loss, float32, the same batch (pairs per
step), the same sequences (the PRM's own tokenization, handed to TRL pre-tokenized), the same
order (TRL's sampler set to sequential), AdamW at lr 1e-4 (the same ``torch.optim.AdamW``
implementation: TRL's default fused kernel is switched to ``adamw_torch``), gradient clipping at
1.0, no gradient checkpointing, and the same thread count.

- Ours: ``PRMModule(objective=RelativeObjective())`` — its real ``training_step``
  (``batch_scores``: each pair's state runs once into a KV cache and chosen and rejected continue
  from it, as ``collate_prm`` lays the batch out; ``_step`` + ``losses.bradley_terry``) and
  ``configure_optimizers`` — driven by a real ``lightning.Trainer`` (``precision="32-true"``,
  ``gradient_clip_val=1.0``, as ``configs/prm/relative.yaml``); a callback times
  ``on_train_batch_start`` → ``on_train_batch_end`` (forward, backward, clipping, optimiser and
  scheduler step; the batch is already loaded).
- TRL: ``RewardTrainer`` on ``AutoModelForSequenceClassification`` loaded from the same directory;
  a ``TrainerCallback`` times ``on_step_begin`` → ``on_step_end`` (the same span).

Tokens are the non-pad tokens of each step counted as whole sequences (TRL's own
``num_input_tokens_seen`` with ``include_num_input_tokens_seen="non_padding"`` is checked against
ours). Peak memory is the
process's peak RSS from before the model is loaded to the end of training, minus the RSS before.

    .venv/bin/python benchmarks/prm_training.py [--quick]
"""

from __future__ import annotations

import argparse
import functools
import logging
import random
import tempfile
import time
import warnings
from pathlib import Path

import common

NAME = "PRM training"
ORDER = 10
GOAL = 1.5
RENDERER = {"template": "compact", "history_window": 4, "response_format": "action"}
"""The PRM's renderer here: the last 4 turns in full, so states are 100–400 tokens."""


def _pairs(model_dir: Path, n_pairs: int, n_turns: int, seed: int = 0):
    """PRMExample pairs (chosen, rejected responses at the same real state) and the pad id.

    Tokenized exactly as ``PRMModule.encode`` does (``chat_ids`` + ``response_ids``) with the
    renderer the benchmarked module uses, without loading a model.
    """
    from agentprm.backbone import load_tokenizer
    from agentprm.data import PRMExample
    from agentprm.prompts import Renderer
    from agentprm.sampling import chat_ids, response_ids

    states = [
        s for s in common.random_states(n_turns, n_games=4, seed=seed) if len(s.admissible_commands) > 1
    ]
    tokenizer = load_tokenizer(str(model_dir))
    renderer = Renderer(**RENDERER)
    rng = random.Random(seed)
    out = []
    for i in range(n_pairs):
        state = states[i % len(states)]
        prompt = chat_ids(tokenizer, renderer, state)
        seqs = tuple(
            tuple(prompt + response_ids(tokenizer, renderer, state, prompt, renderer.response("", c)))
            for c in rng.sample(list(state.admissible_commands), 2)
        )
        out.append(PRMExample(seqs, 1.0, state.game_id, state.key()))
    return out, tokenizer.pad_token_id


def _prefix_shared_tokens(sequences) -> int:
    """Tokens of a pair when the common prefix (the state) is computed once."""
    a, b = sequences
    common_len = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
    return len(a) + len(b) - common_len


def _ours(model_dir: Path, examples, pad_id: int, batch: int, warmup: int, steps: int, profile: bool) -> dict:
    """Per-step seconds and tokens of PRMModule in a Lightning Trainer, and the peak memory."""
    import lightning as L
    from torch.utils.data import DataLoader

    from agentprm.objectives import RelativeObjective
    from agentprm.prm import PRMModule

    class StepTimer(L.Callback):
        def __init__(self) -> None:
            self.times: list[float] = []
            self.tokens: list[int] = []

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            self.tokens.append(int(batch.attention_mask.sum()))
            profiler.start(profile and batch_idx == warmup + steps - 1)
            self.start = time.perf_counter()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            self.times.append(time.perf_counter() - self.start)
            profiler.stop("ours: PRMModule in a Lightning Trainer")

    timer, profiler = StepTimer(), common.StepProfiler()
    objective = RelativeObjective()
    loader = DataLoader(
        examples,
        batch_size=batch,
        shuffle=False,
        collate_fn=functools.partial(objective.collate, pad_id=pad_id),
    )
    with tempfile.TemporaryDirectory() as tmp, common.PeakRSS() as mem, warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*(validation_step|LeafSpec).*")
        module = PRMModule(
            model=str(model_dir), objective=objective, lr=1e-4, warmup_steps=0, **RENDERER,
            output_dir=str(Path(tmp) / "prm"),
        )  # fmt: skip
        trainer = L.Trainer(
            accelerator="cpu", devices=1, precision="32-true", max_steps=warmup + steps,
            gradient_clip_val=1.0, logger=False, enable_checkpointing=False, enable_progress_bar=False,
            enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0, callbacks=[timer],
            default_root_dir=tmp,
        )  # fmt: skip
        trainer.fit(module, train_dataloaders=loader)
    return {"times": timer.times[warmup:], "tokens": timer.tokens[warmup:], "mem": mem}


def _trl(model_dir: Path, examples, batch: int, warmup: int, steps: int, profile: bool) -> dict:
    """Per-step seconds and tokens of TRL's RewardTrainer on the same weights and pairs; peak memory."""
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, TrainerCallback
    from trl import RewardConfig, RewardTrainer

    class StepTimer(TrainerCallback):
        def __init__(self) -> None:
            self.times: list[float] = []
            self.tokens: list[int] = []

        def on_step_begin(self, args, state, control, **kwargs):
            self.seen = state.num_input_tokens_seen
            profiler.start(profile and state.global_step == warmup + steps - 1)
            self.start = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            self.times.append(time.perf_counter() - self.start)
            self.tokens.append(int(state.num_input_tokens_seen - self.seen))
            profiler.stop("TRL RewardTrainer")

    timer, profiler = StepTimer(), common.StepProfiler()
    data = Dataset.from_list(
        [{"chosen_ids": list(e.sequences[0]), "rejected_ids": list(e.sequences[1])} for e in examples]
    )
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    with tempfile.TemporaryDirectory() as tmp, common.PeakRSS() as mem, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.getLogger("transformers").setLevel(logging.ERROR)
        model = AutoModelForSequenceClassification.from_pretrained(str(model_dir), num_labels=1)
        model.config.pad_token_id = tokenizer.pad_token_id
        args = RewardConfig(
            output_dir=tmp, max_steps=warmup + steps, per_device_train_batch_size=batch, learning_rate=1e-4,
            lr_scheduler_type="constant", optim="adamw_torch", max_grad_norm=1.0, weight_decay=0.0,
            bf16=False, fp16=False, use_cpu=True, gradient_checkpointing=False, max_length=None,
            report_to="none", save_strategy="no", logging_steps=10_000, disable_tqdm=True,
            dataloader_num_workers=0, train_sampling_strategy="sequential",
            include_num_input_tokens_seen="non_padding", seed=0,
        )  # fmt: skip
        trainer = RewardTrainer(
            model=model, args=args, train_dataset=data, processing_class=tokenizer, callbacks=[timer]
        )
        if len(trainer.train_dataset) != len(examples):
            raise RuntimeError(f"TRL kept {len(trainer.train_dataset)} of {len(examples)} pairs")
        trainer.train()
    return {"times": timer.times[warmup:], "tokens": timer.tokens[warmup:], "mem": mem}


def run(quick: bool = False, trl: bool | None = None, profile: bool = False) -> list[dict]:
    """PRM training rows: tokens/s, step time and peak memory of ours vs TRL.

    Ours and TRL alternate in rounds (ours, TRL, ours, TRL), each round a fresh trainer with its
    warm-up step, so a change of machine load hits both sides alike.

    Args:
        quick: Tiny sizes (a smoke test), not a measurement.
        trl: Measure TRL's RewardTrainer too; None: only when ``trl`` is importable.
        profile: Print a torch.profiler operator table of the last step of each side.
    """
    common.setup()
    trl = common.want_trl(trl)
    model_dir, batch, rounds, warmup, steps, turns = common.trainer_sizes(quick)
    examples, pad_id = _pairs(model_dir, batch * (warmup + steps), turns)
    sides = {"ours": [], "trl": []}
    for r in range(rounds):
        last = profile and r == rounds - 1
        sides["ours"].append(_ours(model_dir, examples, pad_id, batch, warmup, steps, last))
        if trl:
            sides["trl"].append(_trl(model_dir, examples, batch, warmup, steps, last))
    ours = common.merge_rounds(sides["ours"])
    base = common.merge_rounds(sides["trl"]) if trl else None
    lengths = sorted(len(s) for e in examples for s in e.sequences)
    case = (
        f"{batch} pairs/step, seq {lengths[0]}–{lengths[-1]} tok (median {lengths[len(lengths) // 2]}), "
        f"{model_dir.name}, fp32"
    )
    same = base is None or base["tokens"] == ours["tokens"]
    timed = examples[batch * warmup :]
    full = sum(len(s) for e in timed for s in e.sequences)
    shared = sum(_prefix_shared_tokens(e.sequences) for e in timed)
    notes = (
        f"{rounds} rounds (ours, TRL, …) of {warmup} warm-up + {steps} timed steps; Lightning Trainer + "
        f"PRMModule vs RewardTrainer; same non-pad tokens per step: {'yes' if same else 'NO'} (tokens "
        f"counted as TRL runs them, each pair's state twice: {full} per round); ours runs each state "
        f"once (collate_prm's shared prefixes): {shared} per round, {full / shared:.2f}× fewer"
    )
    mem_note = (
        f"peak RSS ours {ours['peak']:.0f} MiB"
        + (f", TRL {base['peak']:.0f} MiB" if base else "")
        + "; value = peak minus RSS before loading the model (largest of the rounds)"
    )
    label = "TRL RewardTrainer"
    return [
        common.row(NAME, case, "throughput", "non-pad tok/s", ours["rate"], base and base["rate"], label,
                   goal=GOAL, notes=notes),
        common.row(NAME, case, "step time", "s", ours["times"], base and base["times"], label,
                   higher_is_better=False),
        common.row(NAME, case, "peak memory added", "MiB", [ours["delta"]], base and [base["delta"]], label,
                   higher_is_better=False, notes=mem_note),
    ]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
    parser.add_argument("--no-trl", dest="trl", action="store_false", default=None, help="skip TRL")
    parser.add_argument("--profile", action="store_true", help="operator table of the last step of each side")
    args = parser.parse_args()
    rows = run(args.quick, args.trl, args.profile)
    common.print_rows(rows)


if __name__ == "__main__":
    main()
