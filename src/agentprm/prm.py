"""PRMModule: a causal-LM trunk with a scalar head, read at the last token of the assistant turn.

The PRM scores a (state, full response) pair rendered as a two-message conversation with the one
renderer; σ(score) estimates Q(s, a) ∈ [0, 1]. What it is trained on and with which loss is its
``objective`` (:mod:`agentprm.objectives`: absolute soft BCE on Monte-Carlo, shaped or reference
targets, relative Bradley–Terry on preference pairs, InversePRM on the implied reward
Q(s, a) − γ·Q(s', a') of expert and learner transitions), chosen once by ``class_path``.

:meth:`PRMModule.score` scores N candidate responses of one state with the state computed once:
the prompt runs through the trunk a single time and its KV cache is shared by every candidate.
Training does the same per batch: where sequences share a state (a pair's chosen and rejected,
rows of one state), :func:`~agentprm.data.collate_prm` lays the state out once and
:meth:`PRMModule.forward_shared` runs it once, gradients flowing through its KV cache.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from lightning.pytorch import LightningModule

from agentprm import objectives
from agentprm.backbone import Dtype, LoraSettings, load_causal_lm, load_tokenizer
from agentprm.errors import check_model_path, check_writable
from agentprm.objectives import PRMObjective
from agentprm.optim import adamw_warmup_cosine
from agentprm.prompts import Renderer, ResponseFormat
from agentprm.records import State
from agentprm.sampling import (
    HFSamplerFactory,
    chat_ids,
    pad_prompts,
    prefix_cache_forward,
    response_ids,
    row_groups,
)
from agentprm.stage import TrainableStage

__all__ = ["PRMModule", "calibration", "pair_accuracy"]


def calibration(probs: torch.Tensor, targets: torch.Tensor, bins: int = 10) -> tuple[float, list[dict]]:
    """Expected calibration error of predicted Q (``probs``) against targets, and the reliability bins.

    ECE = Σ_b (n_b / n) · |mean prediction_b − mean target_b| over equal-width bins of the prediction.
    """
    edges = torch.linspace(0, 1, bins + 1)
    index = torch.clamp(torch.bucketize(probs, edges[1:-1]), 0, bins - 1)
    ece, table = 0.0, []
    for b in range(bins):
        mask = index == b
        n = int(mask.sum())
        if n == 0:
            continue
        pred, true = float(probs[mask].mean()), float(targets[mask].mean())
        ece += n / len(probs) * abs(pred - true)
        table.append({"bin": b, "count": n, "mean_prediction": pred, "mean_target": true})
    return ece, table


def pair_accuracy(scores: torch.Tensor, targets: torch.Tensor, keys: Sequence[str], delta: float = 0.015):
    """Share of same-state pairs whose targets differ by ≥ ``delta`` that the scores order correctly.

    None when there is no such pair. Ties in score count as half right.
    """
    groups: dict[str, list[int]] = {}
    for i, k in enumerate(keys):
        groups.setdefault(k, []).append(i)
    right = total = 0.0
    for idx in groups.values():
        for a in idx:
            for b in idx:
                if targets[a] - targets[b] >= delta - 1e-12:
                    total += 1
                    right += 1.0 if scores[a] > scores[b] else 0.5 if scores[a] == scores[b] else 0.0
    return right / total if total else None


class PRMModule(TrainableStage, LightningModule):
    """Process reward model: LM trunk + scalar head (small init), LoRA or full fine-tuning.

    Args:
        model: Backbone directory or hub name (``tiny``: the project's tiny model). The PRM may use
            a different model and tokenizer from the policy.
        dtype: Weight dtype.
        lora: LoRA settings for the trunk (the head is always trained); None trains every weight.
        gradient_checkpointing: Recompute activations in the backward pass.
        objective: What the PRM is trained on and its loss (:mod:`agentprm.objectives`):
            ``AbsoluteObjective`` (soft BCE; Monte-Carlo, value, shaped or reference targets),
            ``RelativeObjective`` (Bradley–Terry on pairs) or ``InverseObjective`` (InversePRM), or
            any class implementing :class:`~agentprm.objectives.PRMObjective`, by ``class_path``.
            None: ``AbsoluteObjective()``. The data module builds its rows from it.
        head_init_std: Standard deviation of the head's initial weights (scores start near 0).
        likelihood_prior: Weight w of the LM's own log-likelihood of the response in the score:
            score = head(h) + w · log p(response | state). From a policy's weights with w > 0 the
            PRM starts at that policy's ranking of the responses (the head starts near 0), and
            training moves the score only as far as its targets say: a residual on the policy.
            0 (default): the head alone. Not with FSDP (the LM head shares a sharded embedding).
        lr: Peak learning rate (AdamW), linear warm-up then cosine decay to 10%.
        weight_decay: AdamW weight decay.
        warmup_steps: Warm-up steps.
        template: Prompt template of the renderer the PRM reads states with.
        history_window: Turns of history kept in full.
        response_format: Format of the responses it scores.
        output_dir: Where the trained PRM (trunk as a Hugging Face directory + ``head.pt``) is written
            at the end of fitting (None: ``<trainer.default_root_dir>/prm``).
    """

    default_output = "prm"  # under trainer.default_root_dir when output_dir is None

    def __init__(
        self,
        model: str = "tiny",
        dtype: Dtype = "float32",
        lora: LoraSettings | None = None,
        gradient_checkpointing: bool = False,
        objective: PRMObjective | None = None,
        head_init_std: float = 1e-3,
        likelihood_prior: float = 0.0,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        warmup_steps: int = 20,
        template: str = "compact",
        history_window: int | None = 1,
        response_format: ResponseFormat = "action",
        output_dir: str | None = None,
    ) -> None:
        super().__init__()
        check_model_path("model.model", model)
        if not likelihood_prior >= 0.0:
            raise ValueError(f"model.likelihood_prior: expected a weight >= 0, found {likelihood_prior}")
        if output_dir:
            check_writable("model.output_dir", output_dir)
        self.objective = objectives.from_config(objective)
        self.save_hyperparameters(ignore=["objective"])
        self.hparams["objective"] = objectives.to_config(self.objective)  # a checkpoint rebuilds it
        self.lm = load_causal_lm(model, dtype=dtype, lora=lora, gradient_checkpointing=gradient_checkpointing)
        self.tokenizer = load_tokenizer(model)
        self.renderer = Renderer(template, history_window, response_format)
        # An attribute, not read from hparams: inside another stage built by LightningCLI (online
        # DPO's PRM) save_hyperparameters records that stage's arguments, not these.
        self.likelihood_prior = float(likelihood_prior)
        hidden = self.trunk.config.hidden_size
        self.head = torch.nn.Linear(hidden, 1)
        torch.nn.init.normal_(self.head.weight, std=head_init_std)
        torch.nn.init.zeros_(self.head.bias)
        self.lm.train()
        self._val: list[tuple[torch.Tensor, torch.Tensor, list[str]]] = []
        self.calibration_table: dict | None = None

    @property
    def trunk(self):
        """The decoder stack without the LM head (hidden states are read from it directly)."""
        base = self.lm.get_base_model() if hasattr(self.lm, "get_base_model") else self.lm
        return base.model

    @classmethod
    def load(cls, path: str, **kwargs) -> PRMModule:
        """A trained PRM from the directory its ``fit`` wrote (trunk + ``head.pt``), in eval mode.

        Its objective is rebuilt from ``prm.json``; a PRM saved before objectives were classes
        (``loss``, ``gamma``, ``inverse_objective`` there) gets the matching objective.
        """
        head = Path(path) / "head.pt"
        if not head.is_file():
            raise FileNotFoundError(
                f"{head}: not a PRM directory (written by `agentprm fit -c configs/prm/…`)"
            )
        import json

        settings = (
            json.loads((Path(path) / "prm.json").read_text()) if (Path(path) / "prm.json").is_file() else {}
        )
        if "loss" in settings:  # written before objectives were classes
            legacy = {k: settings.pop(k) for k in ("gamma", "inverse_objective") if k in settings}
            settings["objective"] = objectives.from_config(settings.pop("loss"), **legacy)
        prm = cls(model=str(path), **{**settings, **kwargs})
        state = torch.load(head, weights_only=True)
        prm.head.weight.data.copy_(state["weight"])
        prm.head.bias.data.copy_(state["bias"])
        return prm.eval()

    # -- scoring ------------------------------------------------------------------------------
    def forward(self, input_ids, attention_mask, score_index, response_start=None) -> torch.Tensor:
        """Scores ``[B]`` of right-padded sequences, read at ``score_index`` ``[B]``; with a
        likelihood prior, ``response_start`` ``[B]`` says where each response begins."""
        hidden = self.trunk(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        rows = torch.arange(hidden.shape[0], device=hidden.device)
        scores = self.head(hidden[rows, score_index].to(self.head.weight.dtype)).squeeze(-1)
        if not self.likelihood_prior:
            return scores
        rows = rows[:, None]
        loglik = self._response_loglik(
            lambda p: hidden[rows, p], lambda t: input_ids[rows, t], self._starts(response_start), score_index
        )
        return scores + self.likelihood_prior * loglik

    @staticmethod
    def _starts(response_start) -> torch.Tensor:
        if response_start is None:
            raise ValueError(
                "a PRM with a likelihood prior needs where each response begins (the batch's "
                "response_start): build its batches with agentprm.data.PRMDataModule"
            )
        return response_start

    def _response_loglik(self, hidden_at, token_at, start, last) -> torch.Tensor:
        """Σ_t log p(x_t | x_<t) over positions ``start`` … ``last`` of each sequence ``[N]``, from
        the trunk's hidden states (``hidden_at(positions [N, R]) -> [N, R, H]``) through the LM head."""
        width = max(int((last - start).max()) + 1, 1)
        t = start[:, None] + torch.arange(width, device=start.device)
        real = t <= last[:, None]
        t = torch.minimum(t, last[:, None])
        base = self.lm.get_base_model() if hasattr(self.lm, "get_base_model") else self.lm
        logits = base.get_output_embeddings()(hidden_at(t - 1)).float()
        token = logits.log_softmax(-1).gather(-1, token_at(t).unsqueeze(-1)).squeeze(-1)
        return (token * real).sum(-1)

    def forward_shared(
        self, prefix_ids, prefix_mask, continuation_ids, continuation_mask, prefix_index, response_start=None
    ) -> torch.Tensor:
        """Scores ``[N]`` of sequences that share prefixes, each prefix run once (differentiable).

        Sequence n is the real tokens of ``prefix_ids[prefix_index[n]]`` followed by those of
        ``continuation_ids[n]`` (the layout of :func:`agentprm.data.shared_prefix_batch`). The
        left-padded prefixes ``[G, P]`` run as one batch into a KV cache; every continuation (right-
        padded, ``[N, C]``) runs against its prefix's rows of that cache, its positions continuing
        the prefix's real length and the prefix's padding masked out. Gradients flow through the
        cache into the prefixes; the scores equal :meth:`forward` on the whole sequences (a response
        may begin inside its shared prefix: ``response_start`` counts from the prefix's first token).
        """
        prefix_out, out = prefix_cache_forward(
            self.trunk, prefix_ids, prefix_mask, continuation_ids, continuation_mask, prefix_index
        )
        last = continuation_mask.sum(1) - 1
        rows = torch.arange(last.shape[0], device=last.device)
        scores = self.head(out.last_hidden_state[rows, last].to(self.head.weight.dtype)).squeeze(-1)
        if not self.likelihood_prior:
            return scores
        # Position p of sequence n: the prefix's p-th real token (left-padded) or continuation p − L.
        rows, owner = rows[:, None], prefix_index[:, None]
        width, length = prefix_ids.shape[1], prefix_mask.sum(1)[prefix_index][:, None]
        cont_width = continuation_ids.shape[1]

        def at(prefix, continuation):
            def read(p):
                inside = p < length
                a = prefix[owner, (width - length + p).clamp(0, width - 1)]
                b = continuation[rows, (p - length).clamp(0, cont_width - 1)]
                return torch.where(inside.unsqueeze(-1) if a.dim() == 3 else inside, a, b)

            return read

        loglik = self._response_loglik(
            at(prefix_out.last_hidden_state, out.last_hidden_state),
            at(prefix_ids, continuation_ids),
            self._starts(response_start),
            length.squeeze(1) + last,
        )
        return scores + self.likelihood_prior * loglik

    def batch_scores(self, batch) -> torch.Tensor:
        """Scores ``[N]`` of a :func:`~agentprm.data.collate_prm` batch, in the order of its sequences.

        Shared prefixes (when the batch lays them out) run once through :meth:`forward_shared`,
        except under gradient checkpointing, which drops the KV cache in training, and under FSDP2,
        where every rank must run the same forwards whatever its batch shares; otherwise the whole
        sequences run through :meth:`forward`.
        """
        checkpointing = self.training and self.hparams.gradient_checkpointing
        if batch.shares_prefixes and not checkpointing and not self.sharded:
            return self.forward_shared(
                batch.prefix_ids,
                batch.prefix_mask,
                batch.continuation_ids,
                batch.continuation_mask,
                batch.prefix_index,
                batch.response_start,
            )
        return self(batch.input_ids, batch.attention_mask, batch.score_index, batch.response_start)

    def data_inputs(self) -> dict:
        """What :class:`~agentprm.data.PRMDataModule` is handed (``connect``, in ``setup``)."""
        inputs = {"renderer": self.renderer, "objective": self.objective, "encode": self.encode}
        value_model = getattr(self.objective, "value_model", None)
        if getattr(self.objective, "target", None) == "shaped" and value_model:
            inputs["values"] = state_values(value_model)  # V(s): an input, computed here
        next_policy = getattr(self.objective, "next_policy", None)
        if next_policy:  # InversePRM's a' ~ π(·|s'): an input too
            o = self.objective
            inputs["next_actions"] = next_actions(next_policy, self.renderer, o.next_mode, o.next_temperature)
        return {"tokenizer": self.tokenizer, **inputs}

    def encode(self, state: State, response: str) -> tuple[list[int], list[int]]:
        """Prompt ids and response ids (through the end-of-turn token) of one (state, response)."""
        prompt = chat_ids(self.tokenizer, self.renderer, state)
        return prompt, response_ids(self.tokenizer, self.renderer, state, prompt, response)

    max_score_rows = 256
    """Distinct (state, response) rows scored in one forward by :meth:`score_batch`."""

    @torch.no_grad()
    def score_batch(self, states: Sequence[State], responses: Sequence[Sequence[str]]) -> list[torch.Tensor]:
        """Scores of each state's responses (``[N_b]`` per state), many states per forward.

        Each state runs once (its KV cache shared by its responses) and a response repeated at a
        state is scored once: sampled candidates often repeat. States are grouped into forwards of
        at most :attr:`max_score_rows` distinct responses.
        """
        if len(states) != len(responses):
            raise ValueError(f"{len(states)} states but {len(responses)} response lists")
        items = []
        for state, texts in zip(states, responses, strict=True):
            if not texts:
                raise ValueError(f"no responses to score at game {state.game_id} turn {state.turn}")
            distinct = list(dict.fromkeys(texts))
            prompt = chat_ids(self.tokenizer, self.renderer, state)
            suffixes = [response_ids(self.tokenizer, self.renderer, state, prompt, r) for r in distinct]
            items.append((prompt, suffixes, [distinct.index(t) for t in texts]))
        was_training = self.training
        self.eval()
        try:
            distinct_scores: list[torch.Tensor] = []
            for group in row_groups([len(suffixes) for _, suffixes, _ in items], self.max_score_rows):
                chunk = [items[i] for i in group]
                tensors = pad_prompts(
                    [p for p, _, _ in chunk],
                    [s for _, s, _ in chunk],
                    self.tokenizer.pad_token_id,
                    self.device,
                )
                starts = torch.tensor([len(p) for p, s, _ in chunk for _ in s], device=self.device)
                scores = self.forward_shared(*tensors, starts).float().cpu()
                distinct_scores += scores.split([len(s) for _, s, _ in chunk])
        finally:
            self.train(was_training)
        return [d[index] for d, (_, _, index) in zip(distinct_scores, items, strict=True)]

    def score(self, state: State, responses: Sequence[str]) -> torch.Tensor:
        """Scores ``[N]`` of N responses to one state, the state computed once (shared KV cache)."""
        return self.score_batch([state], [responses])[0]

    # -- training -----------------------------------------------------------------------------
    def _step(self, batch) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
        """The objective's loss and metrics on a batch, and the batch's scores ``[N]``."""
        scores = self.batch_scores(batch).float()
        loss, metrics = self.objective.loss(scores, batch)
        return loss, metrics, scores

    def training_step(self, batch, batch_idx):
        loss, metrics, _ = self._step(batch)
        size = batch.input_ids.shape[0]
        self.log_dict({f"train/{k}": v for k, v in metrics.items()}, batch_size=size)
        self.log("prm/loss", loss, prog_bar=True, batch_size=size)
        return loss

    def validation_step(self, batch, batch_idx):
        _, metrics, scores = self._step(batch)
        size = batch.input_ids.shape[0]
        self.log_dict({f"val/{k}": v for k, v in metrics.items()}, batch_size=size, sync_dist=True)
        seen = self.objective.predictions(scores, batch)
        self._val.append((seen.probs.detach().cpu(), seen.targets.detach().cpu(), seen.keys))

    def on_validation_epoch_end(self) -> None:
        if not self._val:
            return
        probs = torch.cat([p for p, _, _ in self._val])
        targets = torch.cat([t for _, t, _ in self._val])
        keys = [k for _, _, ks in self._val for k in ks]
        self._val.clear()
        ece, table = calibration(probs, targets)
        self.calibration_table = {"ece": ece, "bins": table, "objective": type(self.objective).__name__}
        self.log("val/ece", ece)
        if self.objective.pair_accuracy:
            acc = pair_accuracy(probs, targets, keys)
            if acc is not None:
                self.log("val/pair_acc", acc)

    def configure_optimizers(self):
        h = self.hparams
        total = int(self.trainer.estimated_stepping_batches)
        return adamw_warmup_cosine(self.parameters(), h.lr, h.weight_decay, h.warmup_steps, total, 0.1)

    saved_modules = ("lm", "head")

    def configure_model(self) -> None:
        if self.likelihood_prior and getattr(self, "device_mesh", None) is not None:
            raise ValueError(
                "model.likelihood_prior: not supported under FSDP (the LM head it reads shares the "
                "sharded embedding); train this PRM with DDP or on one device"
            )
        super().configure_model()
        if self.sharded:  # the LM head (unused here) shares the embedding, now a sharded parameter
            self.lm.tie_weights()

    def _sharded_parts(self) -> tuple:
        # The PRM calls the trunk (not the LM's forward, whose LM head it never uses): the trunk is
        # the root unit, the head one of its own.
        return self.trunk, [self.head]

    def _save(self, out: str, states: dict | None = None) -> None:
        from agentprm.backbone import save_hf
        from agentprm.records import atomic_write_json

        states = states or {}
        source = states.get("head") or {k: v.detach().cpu() for k, v in self.head.state_dict().items()}
        head = {"weight": source["weight"], "bias": source["bias"]}
        keys = ("template", "history_window", "response_format")
        settings = {
            **{k: self.hparams[k] for k in keys},
            "likelihood_prior": self.likelihood_prior,
            "objective": objectives.to_config(self.objective),
        }
        table = self.calibration_table

        def head_and_settings(folder: Path) -> None:
            torch.save(head, folder / "head.pt")
            atomic_write_json(folder / "prm.json", settings)
            if table is not None:  # the last validation's reliability bins (agentprm report plots them)
                atomic_write_json(folder / "calibration.json", table)

        save_hf(self.lm, self.tokenizer, out, extra=head_and_settings, state_dict=states.get("lm"))


def state_values(value_model: str) -> Callable[[list[State]], list[float]]:
    """V(s) for a list of states: the value model's logit of each state with an empty response."""
    model = PRMModule.load(value_model)
    return lambda states: [float(v[0]) for v in model.score_batch(states, [[""]] * len(states))]


def next_actions(
    policy: str, renderer: Renderer, mode: str = "admissible", temperature: float = 1.0
) -> Callable[[list[State], int], list[str]]:
    """a' ~ π(·|s') for a list of states and a seed: one sampled response per state from the
    policy directory (InversePRM's next actions at the expert's next states)."""
    model, tokenizer = load_causal_lm(policy), load_tokenizer(policy)
    factory = HFSamplerFactory(mode, temperature)

    def sample(states: list[State], seed: int) -> list[str]:
        sampler = factory.build(model, tokenizer, renderer, seed)
        return [s[0].text for s in sampler.sample(states, 1)]

    return sample
