"""Online DPO against a frozen PRM: the policy update of AgentPRM and InversePRM (paper Eq. 10).

Every training step takes a batch of states, samples k ≥ 2 responses per state from the current
policy, scores them with the frozen PRM (each state computed once for its k responses), keeps the
highest- and lowest-scored as the chosen/rejected pair (ties and gaps under ``margin`` dropped) and
takes a DPO step against the reference π_{i−1}. The prompt of a pair runs through the policy once,
chosen and rejected continue from its KV cache.

The reference costs no second copy with LoRA: it is the same weights with the adapters disabled.
With full fine-tuning a frozen copy is kept outside the trained module (not in the optimiser, the
gradient all-reduce or the checkpoint).
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Literal

import torch
from lightning.pytorch import LightningModule

from agentprm import losses
from agentprm.backbone import Dtype, LoraSettings, load_causal_lm, load_tokenizer
from agentprm.data.policy import PolicyDataModule, policy_states
from agentprm.distributed import gathered
from agentprm.errors import check_model_path, check_writable
from agentprm.optim import adamw_warmup_cosine
from agentprm.prompts import Renderer, ResponseFormat
from agentprm.records import State
from agentprm.sampling import (
    HFSamplerFactory,
    Sample,
    Sampler,
    SamplerFactory,
    SamplingMode,
    chat_ids,
    response_ids,
    score_continuations_batch,
)
from agentprm.stage import TrainableStage

__all__ = [
    "OnlineDPOModule",
    "PolicyDataModule",  # moved to agentprm.data.policy; importable here for existing configs
    "ScoredState",
    "policy_states",
]

Reference = Literal["auto", "adapters", "copy"]


@dataclasses.dataclass(frozen=True)
class ScoredState:
    """k policy samples at one state with their PRM scores and the pair chosen from them.

    Attributes:
        state: The state.
        samples: The k samples.
        scores: The PRM score (logit) of each sample, after the non-stop penalty.
        chosen: Index of the chosen (highest-scored) sample, None when the state gives no pair.
        rejected: Index of the rejected (lowest-scored) sample, None when the state gives no pair.
        pairs: The (chosen, rejected) index pairs trained on: (chosen, rejected) alone, or with
            ``pairs=all`` every pair of different responses whose scores differ by more than
            the margin.
    """

    state: State
    samples: tuple[Sample, ...]
    scores: tuple[float, ...]
    chosen: int | None
    rejected: int | None
    pairs: tuple[tuple[int, int], ...] = ()

    def to_row(self) -> dict:
        """A JSON-ready row: the state, each response with its score, the pair."""
        return {
            "game_id": self.state.game_id,
            "turn": self.state.turn,
            "task": self.state.task,
            "observation": self.state.observation,
            "responses": [s.text for s in self.samples],
            "scores": list(self.scores),
            "chosen": self.chosen,
            "rejected": self.rejected,
            "pairs": [list(p) for p in self.pairs],
        }


class OnlineDPOModule(TrainableStage, LightningModule):
    """Online DPO of a policy against a frozen PRM.

    Args:
        model: The policy to improve, π_{i−1} (a Hugging Face directory; ``tiny`` for the untrained
            tiny model). It is also the reference.
        prm: The frozen PRM directory written by ``agentprm fit -c configs/prm/…``, or
            ``oracle[?noise=…]``: the search expert's Q (:func:`agentprm.scorers.load_scorer`).
        dtype: Weight dtype of policy and reference.
        lora: LoRA settings; with LoRA the reference is the policy with its adapters disabled.
        reference: ``auto`` (adapters with LoRA, else a frozen copy), ``adapters`` or ``copy``.
        beta: DPO β (paper: 0.03).
        label_smoothing: Conservative-DPO ε (0: the standard loss).
        nll_weight: Weight α of an NLL anchor on the chosen responses (RPO, Pang et al. 2024,
            "Iterative Reasoning Preference Optimization"): the loss adds α·(−log π(y⁺|s) / |y⁺|),
            so the preferred response gains probability instead of only its margin over the
            rejected one (0: plain DPO).
        samples_per_state: k responses sampled per state (≥ 2).
        candidates: ``sample`` (k samples of the policy, repeats allowed: a peaked policy often
            gives no pair) or ``distinct`` (k different commands drawn without replacement from the
            policy, ``admissible`` mode).
        pairs: ``best_worst`` (the top- and bottom-scored samples of a state), ``all`` (every
            pair of different samples whose scores differ by more than ``margin``) or ``policy``
            (the top-scored sample against the policy's own most likely sample, when the PRM
            scores that one lower: corrections only; where the policy already prefers the best
            sample there is no pair, so frequent commands are not reinforced).
        mode: How the policy samples: ``admissible`` (over the admissible commands) or ``generate``.
        temperature: Sampling temperature.
        top_p: Nucleus threshold (``generate``).
        max_new_tokens: Response-length cap (``generate``).
        non_stop_penalty: Score given to a response that never produced its end-of-turn token
            (``generate``; None keeps the PRM's score). The reference code uses −1.0.
        margin: Minimum PRM-score gap between chosen and rejected; smaller gaps (ties included)
            give no pair.
        lr: Peak learning rate (AdamW), linear warm-up then cosine decay to 10%.
        weight_decay: AdamW weight decay.
        warmup_steps: Warm-up steps.
        template: Prompt template of the policy.
        history_window: Turns of history kept in full.
        response_format: ``action`` or ``reason_action``.
        output_dir: Where the improved policy is written at the end of fitting (None:
            ``<trainer.default_root_dir>/policy``), LoRA merged into the weights.
        seed: Base seed of the sampler (step s on rank r samples with a seed of (seed, s, r)).
        sampler: The sampler, by ``class_path`` (a :class:`~agentprm.sampling.SamplerFactory`,
            built over the weights being trained); when given it replaces ``mode``,
            ``temperature``, ``top_p`` and ``max_new_tokens`` (None: their
            :class:`~agentprm.sampling.HFSamplerFactory`).
    """

    def __init__(
        self,
        model: str = "tiny",
        prm: str = "runs/quickstart/prm/absolute/prm",
        dtype: Dtype = "float32",
        lora: LoraSettings | None = None,
        reference: Reference = "auto",
        beta: float = 0.03,
        label_smoothing: float = 0.0,
        nll_weight: float = 0.0,
        samples_per_state: int = 4,
        candidates: Literal["sample", "distinct"] = "sample",
        pairs: Literal["best_worst", "all", "policy"] = "best_worst",
        mode: SamplingMode = "admissible",
        temperature: float = 1.0,
        top_p: float = 1.0,
        max_new_tokens: int = 64,
        non_stop_penalty: float | None = None,
        margin: float = 0.0,
        lr: float = 1e-4,
        weight_decay: float = 0.0,
        warmup_steps: int = 0,
        template: str = "compact",
        history_window: int | None = 1,
        response_format: ResponseFormat = "action",
        output_dir: str | None = None,
        seed: int = 0,
        sampler: SamplerFactory | None = None,
    ) -> None:
        super().__init__()
        if samples_per_state < 2:
            raise ValueError(
                f"samples_per_state must be >= 2 (a pair needs two samples), found {samples_per_state}"
            )
        if beta <= 0:
            raise ValueError(f"beta must be > 0, found {beta}")
        if nll_weight < 0:
            raise ValueError(f"nll_weight must be >= 0, found {nll_weight}")
        if candidates not in ("sample", "distinct"):
            raise ValueError(f"candidates must be 'sample' or 'distinct', found {candidates!r}")
        self.sampler_factory = sampler or HFSamplerFactory(mode, temperature, top_p, max_new_tokens)
        if candidates == "distinct" and self.sampler_factory.mode != "admissible":
            raise ValueError("candidates=distinct needs mode=admissible (it draws among the commands)")
        if pairs not in ("best_worst", "all", "policy"):
            raise ValueError(f"pairs must be 'best_worst', 'all' or 'policy', found {pairs!r}")
        if reference not in ("auto", "adapters", "copy"):
            raise ValueError(f"reference must be 'auto', 'adapters' or 'copy', found {reference!r}")
        if reference == "adapters" and lora is None:
            raise ValueError("reference='adapters' needs LoRA (model.init_args.lora); use 'copy' or 'auto'")
        check_model_path("model.model", model)
        if output_dir:
            check_writable("model.output_dir", output_dir)
        from agentprm.scorers import load_scorer

        # The PRM first: a wrong path fails here, before the policy is loaded and copied.
        scorer = load_scorer(prm)
        scorer.requires_grad_(False)
        self.save_hyperparameters(ignore=["sampler"])
        self.model = load_causal_lm(model, dtype=dtype, lora=lora)
        self.tokenizer = load_tokenizer(model)
        self.renderer = Renderer(template, history_window, response_format)
        self.uses_adapters = lora is not None and reference in ("auto", "adapters")
        # Frozen parts live outside the module tree: no optimiser state, no DDP buckets, no checkpoint.
        self._frozen: dict[str, torch.nn.Module] = {}
        if not self.uses_adapters:
            ref = copy.deepcopy(self.model).eval()
            ref.requires_grad_(False)
            self._frozen["reference"] = ref
        self._frozen["prm"] = scorer

    # -- frozen parts -------------------------------------------------------------------------
    @property
    def prm(self):
        """The frozen scorer (a PRM or the oracle), on this module's device."""
        return self._frozen["prm"]

    @property
    def reference_model(self) -> torch.nn.Module | None:
        """The frozen reference copy (None with LoRA: the adapters are disabled instead)."""
        return self._frozen.get("reference")

    def reference_context(self) -> AbstractContextManager:
        """Context in which ``self.model`` computes the reference (adapters off), else a no-op."""
        return self.model.disable_adapter() if self.uses_adapters else nullcontext()

    def on_fit_start(self) -> None:
        for part in self._frozen.values():
            part.to(self.device)

    def transfer_batch_to_device(self, batch, device, dataloader_idx: int):
        return batch  # a list of States: text, nothing to move

    # -- sampling and scoring -----------------------------------------------------------------
    def sampler(self, seed: int) -> Sampler:
        """A sampler over the current policy weights."""
        return self.sampler_factory.build(self.model, self.tokenizer, self.renderer, seed)

    def _finished(self, sample: Sample) -> bool:
        return bool(sample.token_ids) and sample.token_ids[-1] == self.tokenizer.eos_token_id

    @torch.no_grad()
    def score_states(self, states: Sequence[State], seed: int) -> list[ScoredState]:
        """k samples per state from the current policy, scored by the PRM, with the pairs picked."""
        h = self.hparams
        drawn = self.sampler(seed).sample(
            list(states), h.samples_per_state, distinct=h.candidates == "distinct"
        )
        all_scores = self.prm.score_batch(list(states), [[s.text for s in samples] for samples in drawn])
        out = []
        for state, samples, state_scores in zip(states, drawn, all_scores, strict=True):
            scores = [float(v) for v in state_scores.tolist()]
            if h.non_stop_penalty is not None and self.sampler_factory.mode == "generate":
                done = [self._finished(s) for s in samples]
                scores = [v if ok else h.non_stop_penalty for v, ok in zip(scores, done, strict=True)]
            best = max(range(len(scores)), key=scores.__getitem__)
            worst = min(range(len(scores)), key=scores.__getitem__)
            if scores[best] - scores[worst] <= h.margin:
                out.append(ScoredState(state, tuple(samples), tuple(scores), None, None))
                continue
            if h.pairs == "all":
                pairs = tuple(
                    (i, j)
                    for i in range(len(samples))
                    for j in range(len(samples))
                    if scores[i] - scores[j] > h.margin and samples[i].text != samples[j].text
                )
            elif h.pairs == "policy":
                likely = max(range(len(samples)), key=lambda i: samples[i].logprob)
                if scores[best] - scores[likely] <= h.margin:
                    out.append(ScoredState(state, tuple(samples), tuple(scores), None, None))
                    continue
                worst, pairs = likely, ((best, likely),)
            else:
                pairs = ((best, worst),)
            out.append(ScoredState(state, tuple(samples), tuple(scores), best, worst, pairs))
        return out

    def _step_seed(self) -> int:
        return (self.hparams.seed * 1_000_003 + self.global_step) * 64 + self.global_rank

    # -- training -----------------------------------------------------------------------------
    def _logps(
        self, model, scored: Sequence[ScoredState], which: Sequence[Sequence[int]]
    ) -> list[torch.Tensor]:
        """log π(y | s) of the samples ``which[b]`` of each state, every prompt computed once.

        All states go through ``model`` together: one forward for the prompts, one for the responses.
        """
        prompts, suffixes = [], []
        for s, picks in zip(scored, which, strict=True):
            prompt = chat_ids(self.tokenizer, self.renderer, s.state)
            prompts.append(prompt)
            suffixes.append(
                [
                    response_ids(self.tokenizer, self.renderer, s.state, prompt, s.samples[i].text)
                    for i in picks
                ]
            )
        return score_continuations_batch(model, prompts, suffixes, self.tokenizer.pad_token_id)

    def training_step(self, batch: list[State], batch_idx: int):
        with gathered(self.model):  # each rank samples as much as its states need (FSDP2)
            scored = self.score_states(batch, self._step_seed())
        paired = [s for s in scored if s.pairs]
        size = len(batch)
        all_scores = torch.tensor([v for s in scored for v in s.scores])
        self.log("dpo/prm_score", all_scores.mean(), prog_bar=True, batch_size=size)
        self.log("dpo/pair_fraction", len(paired) / max(1, size), batch_size=size)
        self.log("dpo/distinct_samples", _distinct_per_state(scored), batch_size=size)
        if not paired:
            # Every state tied: a zero loss through the same forward and backward as a step with
            # pairs, so every rank takes part in the same collectives (DDP's gradient all-reduce,
            # FSDP2's gathers and reduce-scatters).
            return self._logps(self.model, scored[:1], [[0]])[0].sum() * 0.0
        # Policy and reference score every sample of a paired state once (one pass each): the
        # pairs index into them, and the reference's scores of all k give the KL estimate on
        # what the policy actually sampled.
        every = [range(len(s.samples)) for s in paired]
        policy_all = self._logps(self.model, paired, every)
        with torch.no_grad(), self.reference_context():
            ref_model = self.model if self.reference_model is None else self.reference_model
            ref_all = self._logps(ref_model, paired, every)
        index = [(b, i, j) for b, s in enumerate(paired) for i, j in s.pairs]
        policy = torch.stack([torch.stack([policy_all[b][i], policy_all[b][j]]) for b, i, j in index])
        ref = torch.stack([torch.stack([ref_all[b][i], ref_all[b][j]]) for b, i, j in index])
        sampled = torch.tensor([x.logprob for s in paired for x in s.samples], dtype=torch.float32)
        h = self.hparams
        out = losses.dpo(policy[:, 0], policy[:, 1], ref[:, 0], ref[:, 1], h.beta, h.label_smoothing)
        loss = out.loss
        if h.nll_weight > 0:
            lengths = torch.tensor(
                [max(1, len(paired[b].samples[i].token_ids)) for b, i, _ in index], device=policy.device
            )
            nll = -(policy[:, 0] / lengths).mean()
            loss = loss + h.nll_weight * nll
            self.log("dpo/nll", nll.detach(), batch_size=len(index))
        gap = torch.tensor([paired[b].scores[i] - paired[b].scores[j] for b, i, j in index])
        self.log_dict(
            {
                "dpo/loss": out.loss,
                "dpo/margin": out.margins.mean(),
                "dpo/chosen_reward": out.chosen_rewards.mean(),
                "dpo/rejected_reward": out.rejected_rewards.mean(),
                "dpo/accuracy": out.accuracy,
                "dpo/prm_gap": gap.mean(),
                "dpo/pairs": float(len(index)),
                "dpo/kl": losses.kl_estimate(sampled, torch.cat(ref_all).float().cpu()),
            },
            batch_size=len(index),
        )
        return loss

    def validation_step(self, batch: list[State], batch_idx: int):
        """Mean PRM score of the policy's samples on held-out states (the reward-hacking signal)."""
        with gathered(self.model):
            scored = self.score_states(batch, seed=self.hparams.seed * 7919 + batch_idx)
        scores = torch.tensor([v for s in scored for v in s.scores])
        self.log("val/prm_score", scores.mean(), batch_size=len(batch), sync_dist=True)
        self.log(
            "val/prm_best",
            torch.tensor([max(s.scores) for s in scored]).mean(),
            batch_size=len(batch),
            sync_dist=True,
        )

    def configure_optimizers(self):
        h = self.hparams
        total = int(self.trainer.estimated_stepping_batches)
        trainable = [p for p in self.parameters() if p.requires_grad]
        return adamw_warmup_cosine(trainable, h.lr, h.weight_decay, h.warmup_steps, total, 0.1)

    def _save(self, out: str, states: dict | None = None) -> None:
        from agentprm.backbone import save_hf

        save_hf(self.model, self.tokenizer, out, merge_lora=True, state_dict=(states or {}).get("model"))


def _distinct_per_state(scored: Sequence[ScoredState]) -> float:
    """Mean number of different responses among a state's samples."""
    return sum(len({x.text for x in s.samples}) for s in scored) / max(1, len(scored))


# --------------------------------------------------------------------------------------------
# States to improve the policy on
# --------------------------------------------------------------------------------------------
