"""PRM rows and batches: what an objective (:mod:`agentprm.objectives`) builds from trajectories,
their tokenised examples, and the collated batch the PRM scores."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from agentprm.prompts import Renderer
from agentprm.records import State
from agentprm.sampling import left_pad, right_pad

__all__ = ["PRMBatch", "PRMExample", "PRMRow", "RowContext", "collate_prm", "shared_prefix_batch"]


@dataclass(frozen=True)
class PRMRow:
    """One training row before tokenisation: the (state, response) sequences it scores, in the
    order the objective's loss reads them, its target or label, its game and its state's key."""

    sequences: tuple[tuple[State, str], ...]
    target: float
    game_id: str
    state_key: str
    targets: tuple[float, ...] = ()
    """One target per sequence, for objectives that score lists (empty otherwise)."""


@dataclass(frozen=True)
class RowContext:
    """What the data module hands an objective building rows: the PRM's renderer, the rollout
    sources (reference labels live beside them), the data seed, and the state values V(s) of a
    value model when the objective shapes its targets with one (an input, computed by the PRM's
    side: :meth:`agentprm.prm.PRMModule.data_inputs`)."""

    renderer: Renderer
    rollouts: tuple[str, ...]
    seed: int
    values: Callable[[list[State]], list[float]] | None = None
    next_actions: Callable[[list[State], int], list[str]] | None = None
    """InversePRM's a' ~ π(·|s'): one sampled response per state, seeded (the PRM's
    :func:`agentprm.prm.next_actions` of ``objective.next_policy``)."""


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
    targets: tuple[float, ...] = ()
    response_starts: tuple[int, ...] = ()
    """Where each sequence's response begins (its prompt's length); empty when not known."""


@dataclass
class PRMBatch:
    """The sequences of a PRM batch as :meth:`agentprm.prm.PRMModule.batch_scores` reads them.

    ``input_ids``/``attention_mask`` ``[N, L]`` right-padded, every example's sequences in order;
    ``score_index`` ``[N]`` each sequence's last token (the end of the assistant turn);
    ``num_sequences`` ``[B]`` per example; ``state_key`` per example. When sequences of one state
    share a token prefix, the prefix fields lay each shared prefix out once (see
    :func:`shared_prefix_batch`): ``prefix_ids``/``prefix_mask`` ``[G, P]`` (left-padded),
    ``continuation_ids``/``continuation_mask`` ``[N, C]`` (right-padded, in the order of
    ``input_ids``) and ``prefix_index`` ``[N]``; otherwise they are None. ``response_start`` ``[N]``:
    the position of each sequence's first response token (None when an example does not say). Each
    objective extends it with its own fields (:mod:`agentprm.objectives`).
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
    response_start: torch.Tensor | None = None

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
    if all(len(e.response_starts) == len(e.sequences) for e in examples):
        shared["response_start"] = torch.tensor([r for e in examples for r in e.response_starts])
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
