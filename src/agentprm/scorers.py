"""Scorers: what Best-of-N, online DPO and the probe ask to rank responses at states.

A :class:`Scorer` scores N responses at each of many states; only the order of one state's scores
matters (Best-of-N plays the top one, DPO pairs the top and bottom ones). Two kinds:

- the learned PRM (:class:`~agentprm.prm.PRMModule`, a directory written by ``agentprm fit -c
  configs/prm/…``): its scores are logits of Q;
- :class:`ExpertQScorer`, an oracle: Q^μ(s, a) of the search expert, who finishes the episode
  from the state (:mod:`agentprm.reference`). It locates bottlenecks: DPO or Best-of-N against it
  is the ceiling any PRM can reach with them, and with ``noise`` (each state's ranking reversed
  with probability p, so every pair drawn from it is flipped with probability p) it tells which
  pair accuracy a PRM must reach.

:func:`load_scorer` takes either: a PRM directory, or ``oracle`` with optional settings,
``oracle?noise=0.2&data=builtin:small&max_steps=30&gamma=0.95&seed=0&memory=2``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Protocol, runtime_checkable
from urllib.parse import parse_qsl

import torch

from agentprm.prompts import Renderer, parse_response
from agentprm.records import State

__all__ = ["ORACLE", "ExpertQScorer", "Scorer", "load_scorer"]

ORACLE = "oracle"


@runtime_checkable
class Scorer(Protocol):
    """Scores responses at states; higher is better, comparable within one state."""

    def score_batch(self, states: Sequence[State], responses: Sequence[Sequence[str]]) -> list[torch.Tensor]:
        """Scores ``[N_b]`` of each state's responses."""
        ...


class ExpertQScorer:
    """The search expert's Q^μ(s, a) as a scorer (an oracle PRM), optionally with label noise.

    A response is scored by the command parsed from it (an unparsable or invalid command is a
    step that changes nothing, as in the environment).

    Args:
        data: The games the states come from (``builtin:small``, ``alfworld``, a data root).
        max_steps: The episode budget the expert must win within (the evaluation's).
        gamma: Discount γ.
        noise: Probability p that a state's scores are negated: its ranking reversed, so a pair
            drawn from it is flipped. Decided once per (state, seed), so a state keeps its error.
        seed: Seed of the noise.
        memory: The expert remembers objects from its last ``memory`` observations (None: all);
            the policy's history window + 1 gives values it can learn from its prompt.
    """

    def __init__(
        self,
        data: str = "builtin:small",
        max_steps: int = 30,
        gamma: float = 0.95,
        noise: float = 0.0,
        seed: int = 0,
        memory: int | None = None,
    ) -> None:
        from agentprm.reference import ExpertValues

        if not 0.0 <= noise <= 1.0:
            raise ValueError(f"oracle noise must be in [0, 1], found {noise}")
        self.values = ExpertValues(data, max_steps, gamma, memory=memory)
        self.noise, self.seed = noise, seed
        self.renderer = Renderer(response_format="action")

    def flipped(self, state: State) -> bool:
        """Whether this state's ranking is reversed (probability ``noise``, fixed per state)."""
        if self.noise <= 0.0:
            return False
        digest = hashlib.sha256(f"{self.seed}|{state.game_id}|{state.key()}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64 < self.noise

    def score_batch(self, states: Sequence[State], responses: Sequence[Sequence[str]]) -> list[torch.Tensor]:
        if len(states) != len(responses):
            raise ValueError(f"{len(states)} states but {len(responses)} response lists")
        out = []
        for state, texts in zip(states, responses, strict=True):
            commands = [parse_response(t).command for t in texts]
            q = torch.tensor(self.values.q_values(state, commands), dtype=torch.float32)
            out.append(-q if self.flipped(state) else q)
        return out

    def score(self, state: State, responses: Sequence[str]) -> torch.Tensor:
        return self.score_batch([state], [responses])[0]

    # The DPO module moves its frozen parts to its device; the oracle has no weights.
    def to(self, *args, **kwargs) -> ExpertQScorer:
        return self

    def requires_grad_(self, requires_grad: bool = True) -> ExpertQScorer:
        return self


def load_scorer(spec: str) -> Scorer:
    """A scorer from its spec: a PRM directory, or ``oracle[?key=value&…]`` (see the module doc)."""
    if spec == ORACLE or spec.startswith(ORACLE + "?"):
        settings = dict(parse_qsl(spec.partition("?")[2], keep_blank_values=True))
        types = {"data": str, "max_steps": int, "gamma": float, "noise": float, "seed": int, "memory": int}
        unknown = sorted(set(settings) - set(types))
        if unknown:
            raise ValueError(
                f"scorer {spec!r}: unknown oracle setting(s) {unknown}; expected {sorted(types)}"
            )
        try:
            kwargs = {k: types[k](v) for k, v in settings.items()}
        except ValueError as err:
            raise ValueError(f"scorer {spec!r}: {err}") from err
        return ExpertQScorer(**kwargs)
    from agentprm.prm import PRMModule

    return PRMModule.load(spec)
