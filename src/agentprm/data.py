"""LightningDataModules and collators.

:class:`SFTDataModule` turns demonstrations (Trajectory records) into (prompt, response) token
sequences with the one renderer; the loss mask is set by token index (response tokens only). The
train/validation split is by game.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader

from agentprm.envs import check_env, env_factory
from agentprm.envs.base import EnvFactory
from agentprm.errors import check_range, check_sources
from agentprm.prompts import Renderer, ResponseFormat
from agentprm.records import Trajectory, read_jsonl
from agentprm.sampling import chat_ids, left_pad, response_ids, right_pad

__all__ = [
    "EpisodeBatch",
    "LengthGroupedSampler",
    "PRMBatch",
    "PRMDataModule",
    "PRMExample",
    "RolloutDataModule",
    "SFTDataModule",
    "SFTExample",
    "collate_prm",
    "collate_sft",
    "read_trajectories",
    "sft_examples",
    "shared_prefix_batch",
    "spread",
]

if TYPE_CHECKING:
    from agentprm.objectives import PRMRow

log = logging.getLogger(__name__)
IGNORE = -100


@dataclass(frozen=True)
class SFTExample:
    """One training sequence: prompt + response token ids, and where the response starts."""

    input_ids: tuple[int, ...]
    response_start: int
    game_id: str


def spread(items: Sequence, n: int | None) -> list:
    """``n`` evenly spaced items of a sorted sequence (all when ``n`` is None or large).

    Game ids sort by task type, so the first N would all be one task type; an even spread keeps
    every task type represented.
    """
    items = list(items)
    if n is None or n >= len(items):
        return items
    return [items[(i * len(items)) // n] for i in range(n)]


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
        tokenizer: The policy's tokenizer (model directory, hub name or ``tiny``); None: the tokenizer
            of the LightningModule this data is trained with.
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

    def setup(self, stage: str | None = None) -> None:
        if self.train_set:
            return
        from agentprm.targets import split_by_game

        self.tokenizer = self._tokenizer()
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

    def _tokenizer(self):
        if self.hparams.tokenizer is not None:
            from agentprm.backbone import load_tokenizer

            return load_tokenizer(self.hparams.tokenizer)
        module = self.trainer.lightning_module if self.trainer is not None else None
        if module is None or getattr(module, "tokenizer", None) is None:
            raise ValueError("SFTDataModule needs `tokenizer` when it is not used with a module that has one")
        return module.tokenizer

    def _loader(self, data: list[SFTExample], shuffle: bool) -> DataLoader:
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


@dataclass(frozen=True)
class EpisodeBatch:
    """B episodes to play together: (game id, rollout index) pairs, and the environment they are
    played in."""

    index: int
    env: EnvFactory
    max_steps: int
    episodes: tuple[tuple[str, int], ...]


class _Items(torch.utils.data.Dataset):
    def __init__(self, items: Sequence) -> None:
        self.items = list(items)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        return self.items[i]


class RolloutDataModule(LightningDataModule):
    """The episodes of a rollout: ``rollouts_per_game`` episodes of each game, in batches of B.

    The episode list depends only on these arguments, so a rerun produces the same batches (and
    skips the finished ones). Under DDP, Lightning's predict sampler gives each rank a disjoint
    share of the batches; no episode is duplicated or missing.

    Args:
        data: ALFWorld games: ``builtin:small`` / ``builtin:standard`` / ``alfworld`` / a data root
            (the shorthand for ``env: AlfWorldEnvFactory(data)``; default ``builtin:small``).
        env: The environment, by ``class_path`` (an :class:`~agentprm.envs.base.EnvFactory`);
            give it or ``data``, not both.
        split: A split of the environment's games (ALFWorld: ``train``, ``valid_seen``,
            ``valid_unseen``).
        games: Explicit game ids (overrides ``split`` selection); None: every game of the split.
        max_games: Only N games, evenly spread over the sorted ids (None: all).
        rollouts_per_game: Episodes per game.
        batch_size: Episodes stepped together (B environments).
        max_steps: Step budget per episode.
    """

    def __init__(
        self,
        data: str | None = None,
        split: str = "train",
        games: list[str] | None = None,
        max_games: int | None = None,
        rollouts_per_game: int = 4,
        batch_size: int = 16,
        max_steps: int = 20,
        env: EnvFactory | None = None,
    ) -> None:
        super().__init__()
        check_env("data.data", data, "data.env", env)
        self.env = env_factory(env, data)
        check_range("data.max_games", max_games, 1, optional=True)
        check_range("data.rollouts_per_game", rollouts_per_game, 1)
        check_range("data.batch_size", batch_size, 1)
        check_range("data.max_steps", max_steps, 1)
        self.save_hyperparameters(ignore=["env"])
        self.batches: list[EpisodeBatch] = []

    @property
    def num_episodes(self) -> int:
        return sum(len(b.episodes) for b in self.batches)

    def settings(self) -> dict:
        """What decides the episodes: the arguments, the environment by its identity."""
        return {**{k: v for k, v in self.hparams.items() if k != "data"}, "env": self.env.identity()}

    def setup(self, stage: str | None = None) -> None:
        h = self.hparams
        ids = list(h.games) if h.games else self.env.game_ids(h.split)
        ids = spread(sorted(ids), h.max_games)
        episodes = [(g, r) for r in range(h.rollouts_per_game) for g in ids]
        self.batches = [
            EpisodeBatch(k, self.env, h.max_steps, tuple(episodes[i : i + h.batch_size]))
            for k, i in enumerate(range(0, len(episodes), h.batch_size))
        ]
        world = self.trainer.world_size if self.trainer is not None else 1
        if len(self.batches) < world:
            raise ValueError(
                f"{len(episodes)} episodes make {len(self.batches)} batch(es) of data.batch_size="
                f"{h.batch_size} for {world} processes: every process needs at least one; lower "
                "data.batch_size or add games / rollouts_per_game"
            )

    def predict_dataloader(self) -> DataLoader:
        return DataLoader(_Items(self.batches), batch_size=None, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self.predict_dataloader()


def read_trajectories(sources: Sequence[str]) -> list[Trajectory]:
    """Every Trajectory of the given JSONL files or rollout directories, each file read once.

    A directory gives its ``batch-*.jsonl`` shards (sorted), or every ``*.jsonl`` file when it has
    no shards (a folder of hand-made files). A source given twice, or a file also inside a given
    directory, is read once, with a warning.
    """
    import warnings
    from pathlib import Path

    files: list[Path] = []
    for source in map(Path, sources):
        if source.is_dir():
            found = sorted(source.glob("batch-*.jsonl")) or sorted(source.glob("*.jsonl"))
        elif source.exists():
            found = [source]
        else:
            raise FileNotFoundError(f"no rollout file or directory {source}")
        files += found
    seen: dict[Path, None] = {}
    for f in files:
        seen.setdefault(f.resolve())
    if len(seen) < len(files):
        warnings.warn(
            f"{len(files) - len(seen)} trajectory file(s) given more than once (e.g. the same rollout "
            f"directory twice in {', '.join(map(str, sources))}); each is read once",
            stacklevel=2,
        )
    if not seen:
        raise FileNotFoundError(f"no .jsonl trajectory files in {', '.join(map(str, sources))}")
    return [t for f in seen for t in read_jsonl(f)]


@dataclass(frozen=True)
class PRMExample:
    """One scored sequence (absolute), a chosen/rejected pair (relative) or a transition (inverse).

    ``state_keys`` is the key of each sequence's state where they differ (InversePRM's s and s');
    empty: every sequence is of the example's ``state_key`` (or, without one, of one unnamed state).
    Sequences of one state share their state's tokens, which :func:`collate_prm` lays out once.
    """

    sequences: tuple[tuple[int, ...], ...]
    target: float = 0.0
    game_id: str = ""
    state_key: str = ""
    state_keys: tuple[str, ...] = ()


@dataclass
class PRMBatch:
    """The sequences of a PRM batch as :meth:`agentprm.prm.PRMModule.batch_scores` reads them.

    ``input_ids``/``attention_mask`` ``[N, L]`` right-padded, every example's sequences in order;
    ``score_index`` ``[N]`` each sequence's last token (the end of the assistant turn);
    ``num_sequences`` ``[B]`` per example; ``state_key`` per example. When sequences of one state
    share a token prefix, the prefix fields lay each shared prefix out once (see
    :func:`shared_prefix_batch`): ``prefix_ids``/``prefix_mask`` ``[G, P]`` (left-padded),
    ``continuation_ids``/``continuation_mask`` ``[N, C]`` (right-padded, in the order of
    ``input_ids``) and ``prefix_index`` ``[N]``; otherwise they are None. Each objective extends it
    with its own fields (:mod:`agentprm.objectives`).
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    score_index: torch.Tensor
    num_sequences: torch.Tensor
    state_key: list[str]
    prefix_ids: torch.Tensor | None = None
    prefix_mask: torch.Tensor | None = None
    continuation_ids: torch.Tensor | None = None
    continuation_mask: torch.Tensor | None = None
    prefix_index: torch.Tensor | None = None

    @property
    def shares_prefixes(self) -> bool:
        """Whether the batch lays shared prefixes out once."""
        return self.prefix_ids is not None


def collate_prm(
    examples: Sequence[PRMExample],
    pad_id: int,
    share_prefix: bool = True,
    kind: type[PRMBatch] = PRMBatch,
    **fields,
) -> PRMBatch:
    """A ``kind`` batch of every sequence of ``examples`` (pairs flattened as chosen, rejected, …)
    plus an objective's own ``fields``; with ``share_prefix`` the shared prefixes are laid out once
    when sequences of one state (a pair's, or rows of the same state key) share tokens."""
    seqs = [s for e in examples for s in e.sequences]
    width = max(map(len, seqs))
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s)
        mask[i, : len(s)] = 1
    shared = shared_prefix_batch(examples, pad_id) if share_prefix else {}
    return kind(
        input_ids=ids,
        attention_mask=mask,
        score_index=torch.tensor([len(s) - 1 for s in seqs]),
        num_sequences=torch.tensor([len(e.sequences) for e in examples]),
        state_key=[e.state_key for e in examples],
        **shared,
        **fields,
    )


def _common_length(seqs: Sequence[Sequence[int]]) -> int:
    """Length of the longest common prefix of ``seqs``."""
    first, n = seqs[0], min(map(len, seqs))
    for other in seqs[1:]:
        n = next((i for i in range(n) if other[i] != first[i]), n)
    return n


def shared_prefix_batch(examples: Sequence[PRMExample], pad_id: int) -> dict[str, torch.Tensor]:
    """The sequences of ``examples`` as shared prefixes and continuations; empty when nothing is shared.

    Sequences are grouped by state (``state_keys``, else the example's ``state_key``, else the
    example); a group's prefix is its sequences' longest common prefix, cut so that every
    continuation keeps at least one token (the scored last token). A sequence alone in its group,
    or in a group without a common prefix, is a prefix of all but its last token. Nothing is
    returned when no prefix token would be saved or some prefix would be empty (a 1-token sequence).
    """
    groups: dict[tuple, list[int]] = {}
    seqs: list[tuple[int, ...]] = []
    for i, e in enumerate(examples):
        for j, s in enumerate(e.sequences):
            key = e.state_keys[j] if e.state_keys else e.state_key
            groups.setdefault(("state", key) if key else ("example", i), []).append(len(seqs))
            seqs.append(s)
    prefix_of = [0] * len(seqs)
    cut = [0] * len(seqs)
    prefixes: list[tuple[int, ...]] = []
    saved = 0
    for members in groups.values():
        n = min(_common_length([seqs[m] for m in members]), min(len(seqs[m]) for m in members) - 1)
        parts = [members] if len(members) > 1 and n > 0 else [[m] for m in members]
        for part in parts:
            length = n if len(part) > 1 else len(seqs[part[0]]) - 1
            if length < 1:
                return {}
            saved += (len(part) - 1) * length
            for m in part:
                prefix_of[m], cut[m] = len(prefixes), length
            prefixes.append(seqs[part[0]][:length])
    if saved == 0:
        return {}
    conts = [s[c:] for s, c in zip(seqs, cut, strict=True)]
    prefix_ids, prefix_mask = left_pad(prefixes, pad_id)
    cont_ids, cont_mask = right_pad(conts, pad_id)
    return {
        "prefix_ids": prefix_ids,
        "prefix_mask": prefix_mask,
        "continuation_ids": cont_ids,
        "continuation_mask": cont_mask,
        "prefix_index": torch.tensor(prefix_of),
    }


class PRMDataModule(LightningDataModule):
    """Rollouts → PRM training data, split by game, as the PRM's objective asks.

    The rows come from the objective of the :class:`~agentprm.prm.PRMModule` this data is trained
    with (``model.init_args.objective``, :mod:`agentprm.objectives`): Monte-Carlo or shaped Q
    targets, state values, preference pairs or InversePRM transitions. In ``setup()`` the objective
    reads any extra trajectories it needs (InversePRM's expert demonstrations), every game is split
    once (a game's demonstrations and rollouts land on the same side), each side's rows are built
    and tokenised with the PRM's own tokenizer and renderer, and batches are the objective's typed
    batches.

    Args:
        rollouts: Directories (or files) of Trajectory JSONL, e.g. ``runs/x/rollouts/iter_0``. For
            InversePRM these are the learner (negative) trajectories, e.g. every past policy's.
        val_fraction: Share of games held out for validation.
        batch_size: Examples per batch (a pair or a transition counts once).
        max_length: Longest sequence in tokens; longer ones are skipped and counted.
        seed: Seed of the game split and of the objective's sampling (InversePRM's balancing and a').
    """

    def __init__(
        self,
        rollouts: list[str],
        val_fraction: float = 0.15,
        batch_size: int = 16,
        max_length: int = 1024,
        seed: int = 42,
    ) -> None:
        super().__init__()
        check_range("data.val_fraction", val_fraction, 0, 1, below_high=True)
        check_range("data.batch_size", batch_size, 1)
        check_range("data.max_length", max_length, 1)
        check_sources("data.rollouts", rollouts)  # inputs checked before any model is loaded
        self.save_hyperparameters()
        self.train_set: list[PRMExample] = []
        self.val_set: list[PRMExample] = []
        self.skipped_too_long = 0

    def _examples(self, rows: Sequence[PRMRow], encode) -> list[PRMExample]:
        out: list[PRMExample] = []
        for row in rows:
            seqs = tuple(tuple(p + r) for p, r in (encode(state, x) for state, x in row.sequences))
            if max(map(len, seqs)) > self.hparams.max_length:
                self.skipped_too_long += 1
                continue
            keys = tuple(state.key() for state, _ in row.sequences)
            out.append(PRMExample(seqs, row.target, row.game_id, row.state_key, keys))
        return out

    def setup(self, stage: str | None = None) -> None:
        if self.train_set:
            return
        from agentprm.objectives import RowContext
        from agentprm.targets import split_games

        module = self.trainer.lightning_module if self.trainer is not None else None
        if module is None or not hasattr(module, "objective"):
            raise ValueError(
                "PRMDataModule is used with a PRMModule, whose objective, tokenizer and renderer it uses"
            )
        h = self.hparams
        self.objective = module.objective
        learners = read_trajectories(h.rollouts)
        context = RowContext(module.renderer, tuple(h.rollouts), h.seed)
        experts = self.objective.prepare(learners, context)
        # One split over every game, so a game's demonstrations and rollouts land on the same side.
        _, val_games = split_games([t.game_id for t in [*learners, *experts]], h.val_fraction, h.seed)
        held = set(val_games)
        for side, keep in (
            ("train_set", lambda t: t.game_id not in held),
            ("val_set", lambda t: t.game_id in held),
        ):
            rows = self.objective.rows(
                [t for t in learners if keep(t)], [t for t in experts if keep(t)], context
            )
            setattr(self, side, self._examples(rows, module.encode))
        self.pad_id = module.tokenizer.pad_token_id
        name = type(self.objective).__name__
        if not self.train_set:
            raise ValueError(f"no {name} PRM examples in {h.rollouts}")
        log.info("PRM (%s): %d train / %d val examples", name, len(self.train_set), len(self.val_set))

    def _loader(self, data: list[PRMExample], shuffle: bool) -> DataLoader:
        return DataLoader(
            data,
            batch_size=self.hparams.batch_size,
            shuffle=shuffle,
            collate_fn=functools.partial(self.objective.collate, pad_id=self.pad_id),
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, shuffle=False)
