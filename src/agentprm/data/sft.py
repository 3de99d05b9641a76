"""SFT data: demonstrations (Trajectory records) as (prompt, response) token sequences rendered by
the one renderer; the loss mask is set by token index (response tokens only); the train/validation
split is by game. The tokenizer is the policy's, handed over by :meth:`SFTDataModule.connect`."""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader

from agentprm.data.common import spread
from agentprm.errors import check_range
from agentprm.prompts import Renderer, ResponseFormat
from agentprm.records import Trajectory, read_jsonl
from agentprm.sampling import chat_ids, response_ids

__all__ = ["IGNORE", "LengthGroupedSampler", "SFTDataModule", "SFTExample", "collate_sft", "sft_examples"]

log = logging.getLogger(__name__)
IGNORE = -100


@dataclass(frozen=True)
class SFTExample:
    """One training sequence: prompt + response token ids, and where the response starts."""

    input_ids: tuple[int, ...]
    response_start: int
    game_id: str


def sft_examples(
    trajectories: Sequence[Trajectory], tokenizer, renderer: Renderer, max_length: int
) -> tuple[list[SFTExample], int]:
    """One example per step of each trajectory; returns the examples and how many were too long.

    The response is re-rendered from the step's (reason, command) with ``renderer``, so the
    demonstrations train whatever response format the renderer asks for.
    """
    out, too_long = [], 0
    for traj in trajectories:
        for t, step in enumerate(traj.steps):
            state = traj.state_at(t)
            prompt = chat_ids(tokenizer, renderer, state)
            response = renderer.response(step.reason, step.command)
            full = prompt + response_ids(tokenizer, renderer, state, prompt, response)
            if len(full) > max_length:
                too_long += 1
                continue
            out.append(SFTExample(tuple(full), len(prompt), traj.game_id))
    return out, too_long


def collate_sft(examples: Sequence[SFTExample], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded batch: ``input_ids``, ``attention_mask`` and ``labels`` (-100 off the response)."""
    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for i, e in enumerate(examples):
        n = len(e.input_ids)
        ids[i, :n] = torch.tensor(e.input_ids)
        mask[i, :n] = 1
        labels[i, e.response_start : n] = ids[i, e.response_start : n]
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


class LengthGroupedSampler(torch.utils.data.Sampler[int]):
    """Random order in which neighbouring items have similar lengths, so batches pad little.

    Each epoch: shuffle, cut into windows of ``window`` batches, sort each window by length, cut it
    into batches and shuffle the batches. A ``DataLoader(batch_size=B, sampler=…)`` then pads each
    batch to a nearly equal length (the approach of ``group_by_length`` in Hugging Face trainers).
    Under DDP Lightning wraps it in a distributed sampler (each rank takes every world-th index,
    neighbours stay alike). Deterministic given ``seed`` and the epoch (``set_epoch``).
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int, window: int = 50) -> None:
        self.lengths, self.batch_size, self.seed, self.window = list(lengths), batch_size, seed, window
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(len(self.lengths), generator=g).tolist()
        span = self.batch_size * self.window
        batches = []
        for start in range(0, len(order), span):
            window = sorted(order[start : start + span], key=self.lengths.__getitem__, reverse=True)
            batches += [window[i : i + self.batch_size] for i in range(0, len(window), self.batch_size)]
        for b in torch.randperm(len(batches), generator=g).tolist():
            yield from batches[b]


class SFTDataModule(LightningDataModule):
    """Demonstrations → SFT batches.

    Args:
        tokenizer: The policy's tokenizer (model directory, hub name or ``tiny``); None: the one the
            stage hands over (:meth:`connect`).
        demonstrations: ``builtin:small`` / ``builtin:standard`` (the search expert's winning episodes
            on that set's ``split``), or a path to a JSONL file of Trajectory records.
        split: The games' split the built-in demonstrations come from.
        max_games: Use only N games, evenly spread over the sorted ids (None: all).
        template: Prompt template (``paper``, ``compact`` or a ``.j2`` file).
        history_window: Turns of history kept in full in prompts.
        response_format: ``reason_action`` or ``action``.
        val_fraction: Share of games held out for validation (split by game).
        batch_size: Sequences per batch.
        max_length: Longest sequence in tokens; longer ones are skipped and counted.
        group_by_length: Batch training sequences of similar length together
            (:class:`LengthGroupedSampler`): about 23% fewer padded tokens on the built-in games,
            but there similar lengths mean similar turns, and the tiny model learned slower per
            step (held-out loss 0.53 vs 0.40 after 2 epochs, one run each), so it is off by default.
        num_workers: DataLoader workers.
        seed: Seed of the game split.
    """

    def __init__(
        self,
        tokenizer: str | None = None,
        demonstrations: str = "builtin:small",
        split: str = "train",
        max_games: int | None = None,
        template: str = "compact",
        history_window: int | None = 2,
        response_format: ResponseFormat = "action",
        val_fraction: float = 0.1,
        batch_size: int = 16,
        max_length: int = 1024,
        group_by_length: bool = False,
        num_workers: int = 0,
        seed: int = 42,
    ) -> None:
        super().__init__()
        check_range("data.max_games", max_games, 1, optional=True)
        check_range("data.val_fraction", val_fraction, 0, 1, below_high=True)
        check_range("data.batch_size", batch_size, 1)
        check_range("data.max_length", max_length, 1)
        self.save_hyperparameters()
        self.renderer = Renderer(template, history_window, response_format)
        self.train_set: list[SFTExample] = []
        self.val_set: list[SFTExample] = []
        self.skipped_too_long = 0
        self.tokenizer = None

    def _demonstrations(self) -> list[Trajectory]:
        source = self.hparams.demonstrations
        if source.startswith("builtin:"):
            from agentprm.rollout import expert_demonstrations

            demos = expert_demonstrations(source, self.hparams.split)
        else:
            demos = read_jsonl(source)
        demos = [t for t in demos if t.won and t.failure is None]
        keep = set(spread(sorted({t.game_id for t in demos}), self.hparams.max_games))
        demos = [t for t in demos if t.game_id in keep]
        if not demos:
            raise ValueError(f"no winning demonstrations in {source!r} (split {self.hparams.split!r})")
        return demos

    def connect(self, tokenizer) -> None:
        """The policy's tokenizer, handed over by the stage (:class:`~agentprm.stage.TrainableStage`
        in ``setup``); ``data.tokenizer``, when given, is used instead (:meth:`setup` loads it and
        builds the examples without a stage). The examples are built once."""
        if self.hparams.tokenizer is None:
            self.tokenizer = tokenizer
        self._build()

    def setup(self, stage: str | None = None) -> None:
        if self.hparams.tokenizer is not None and self.tokenizer is None:
            from agentprm.backbone import load_tokenizer

            self.tokenizer = load_tokenizer(self.hparams.tokenizer)
        self._build()

    def _build(self) -> None:
        if self.train_set or self.tokenizer is None:
            return
        from agentprm.targets import split_by_game

        train, val = split_by_game(self._demonstrations(), self.hparams.val_fraction, self.hparams.seed)
        n = self.hparams.max_length
        self.train_set, long_a = sft_examples(train, self.tokenizer, self.renderer, n)
        self.val_set, long_b = sft_examples(val, self.tokenizer, self.renderer, n)
        self.skipped_too_long = long_a + long_b
        if self.skipped_too_long:
            log.warning("skipped %d SFT sequences longer than %d tokens", self.skipped_too_long, n)
        log.info(
            "SFT: %d train / %d val sequences from %d / %d games; %d prompts had turns cut by the window",
            len(self.train_set),
            len(self.val_set),
            len({t.game_id for t in train}),
            len({t.game_id for t in val}),
            self.renderer.truncations,
        )

    def _loader(self, data: list[SFTExample], shuffle: bool) -> DataLoader:
        if self.tokenizer is None:
            raise ValueError(
                "SFTDataModule has no tokenizer: give data.tokenizer or connect(tokenizer) it to its "
                "policy (agentprm's SFTModule does in setup)"
            )
        pad = self.tokenizer.pad_token_id
        h = self.hparams
        sampler = None
        if shuffle and h.group_by_length:
            # torch's seed, set by seed_everything: another run seed gives another order
            seed = torch.initial_seed() % 2**31
            sampler = LengthGroupedSampler([len(e.input_ids) for e in data], h.batch_size, seed)
        return DataLoader(
            data,
            batch_size=h.batch_size,
            shuffle=shuffle and sampler is None,
            sampler=sampler,
            num_workers=h.num_workers,
            collate_fn=functools.partial(collate_sft, pad_id=pad),
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, shuffle=False)
