"""A new sampler in one file: the random agent, uniform over the admissible commands.

Every stage that acts takes it through ``sampler:`` in its model arguments (rollouts, evaluation,
online DPO)::

    model:
      init_args:
        sampler:
          class_path: random_policy.RandomSamplerFactory    # this file on PYTHONPATH

It ignores the stage's model: a baseline a policy must beat (``agentprm test`` with it gives the
random agent's success on the same games and random numbers). It cannot score every admissible
command, so what needs that (distinct branch actions, Best-of-N over all commands) says so and
stops. tests/test_sampler_seam.py plays it through rollouts, evaluation and online DPO.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

from agentprm.prompts import Renderer
from agentprm.records import State
from agentprm.sampling import Sample, SamplerFactory


class RandomSampler:
    """Uniform draws over each state's admissible commands (greedy: the first command)."""

    mode = "admissible"

    def __init__(self, renderer: Renderer, seed: int) -> None:
        self.renderer, self.rng = renderer, random.Random(seed)

    def sample(
        self,
        states: Sequence[State],
        n: int = 1,
        *,
        greedy: bool = False,
        distinct: bool = False,
        keys: Sequence[int] | None = None,
    ) -> list[list[Sample]]:
        out = []
        for k, state in enumerate(states):
            commands = list(state.admissible_commands)
            rng = random.Random(keys[k]) if keys is not None else self.rng
            if greedy:
                picks = commands[: min(n, len(commands))] if distinct else [commands[0]] * n
            elif distinct:
                picks = rng.sample(commands, min(n, len(commands)))
            else:
                picks = [rng.choice(commands) for _ in range(n)]
            logprob = -math.log(len(commands))
            out.append([Sample(self.renderer.response("", c), c, "", (), logprob) for c in picks])
        return out


class RandomSamplerFactory(SamplerFactory):
    """Makes :class:`RandomSampler` (no settings: the stage's seed fixes its draws)."""

    mode = "admissible"

    def build(self, model, tokenizer, renderer: Renderer, seed: int) -> RandomSampler:
        return RandomSampler(renderer, seed)
