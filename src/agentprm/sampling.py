"""Action selection: the Sampler protocol and its transformers backend.

Two modes, used alike by rollouts, evaluation, Best-of-N and online DPO:

- ``generate`` (the paper's): the policy writes ``REASON: … ACTION: …`` freely. All prompts of a
  batch go through one ``generate`` call (left padding, KV cache), ``n`` samples per prompt.
- ``admissible``: the response is one of the admissible commands. Every candidate response is
  scored by its log-likelihood given the prompt — the prompt is run once and its KV cache shared by
  all candidates — and one is drawn from the softmax over candidates at a temperature (or the
  argmax). Small models waste about half their steps on invalid commands when generating freely.

Every sample carries its text, token ids and log-probability under the policy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

import torch

from agentprm.prompts import Renderer, parse_response
from agentprm.records import State

__all__ = [
    "HFSampler",
    "Sample",
    "Sampler",
    "SamplingMode",
    "chat_ids",
    "response_ids",
    "score_continuations",
    "shared_prefix_forward",
]

SamplingMode = Literal["generate", "admissible"]


@dataclass(frozen=True)
class Sample:
    """One response of the policy at one state.

    Attributes:
        text: The response text (what the PRM scores and SFT/DPO train on).
        command: The normalized command parsed from it (what the environment receives).
        reason: The parsed reason (empty when the response has none).
        token_ids: The response's token ids, end-of-turn token included when it was produced.
        logprob: Sum of the token log-probabilities under the policy (at temperature 1).
    """

    text: str
    command: str
    reason: str
    token_ids: tuple[int, ...]
    logprob: float


@runtime_checkable
class Sampler(Protocol):
    """Draws responses for a batch of states."""

    def sample(self, states: Sequence[State], n: int = 1, *, greedy: bool = False) -> list[list[Sample]]:
        """``n`` responses for each state (``greedy``: the most likely, repeated ``n`` times)."""
        ...


def chat_ids(tokenizer, renderer: Renderer, state: State, response: str | None = None) -> list[int]:
    """Token ids of the chat-formatted prompt, or of prompt + response when ``response`` is given."""
    if response is None:
        messages, kwargs = renderer.messages(state), {"add_generation_prompt": True}
    else:
        messages, kwargs = renderer.conversation(state, response), {}
    ids = tokenizer.apply_chat_template(messages, tokenize=True, **kwargs)
    if isinstance(ids, dict) or hasattr(ids, "input_ids"):
        ids = ids["input_ids"]
    return list(ids)


def _end_ids(tokenizer) -> list[int]:
    return [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []


class HFSampler:
    """Sampler over a transformers causal LM.

    Args:
        model: A causal LM (``PreTrainedModel`` or a peft wrapper of one).
        tokenizer: Its tokenizer, with a chat template and an end-of-turn ``eos_token``.
        renderer: The prompt renderer.
        mode: ``generate`` or ``admissible``.
        temperature: Sampling temperature (over tokens in ``generate``, over candidates in
            ``admissible``).
        top_p: Nucleus sampling threshold (``generate`` only).
        max_new_tokens: Response length cap (``generate`` only).
        seed: Seed of the sampler's own generator; the same seed and inputs give the same samples.
    """

    def __init__(
        self,
        model,
        tokenizer,
        renderer: Renderer,
        mode: SamplingMode = "generate",
        temperature: float = 1.0,
        top_p: float = 1.0,
        max_new_tokens: int = 64,
        seed: int = 0,
    ) -> None:
        if mode not in ("generate", "admissible"):
            raise ValueError(f"mode must be 'generate' or 'admissible', found {mode!r}")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0 (use greedy=True for argmax), found {temperature}")
        self.model, self.tokenizer, self.renderer = model, tokenizer, renderer
        self.mode, self.temperature, self.top_p = mode, temperature, top_p
        self.max_new_tokens = max_new_tokens
        self.generator = torch.Generator().manual_seed(seed)
        self.seed = seed

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.no_grad()
    def sample(self, states: Sequence[State], n: int = 1, *, greedy: bool = False) -> list[list[Sample]]:
        if not states:
            return []
        was_training = self.model.training
        self.model.eval()
        try:
            if self.mode == "admissible":
                return [self._admissible(state, n, greedy) for state in states]
            return self._generate(states, n, greedy)
        finally:
            self.model.train(was_training)

    # -- generate -----------------------------------------------------------------------------
    def _generate(self, states: Sequence[State], n: int, greedy: bool) -> list[list[Sample]]:
        prompts = [chat_ids(self.tokenizer, self.renderer, s) for s in states]
        pad = self.tokenizer.pad_token_id
        width = max(map(len, prompts))
        ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=self.device)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=self.device)
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=self.generator))
        torch.manual_seed(seed)  # generate() draws from the global generator
        out = self.model.generate(
            input_ids=ids,
            attention_mask=mask,
            do_sample=not greedy,
            temperature=None if greedy else self.temperature,
            top_p=None if greedy else self.top_p,
            top_k=None,
            max_new_tokens=self.max_new_tokens,
            num_return_sequences=n,
            eos_token_id=_end_ids(self.tokenizer),
            pad_token_id=pad,
            return_dict_in_generate=True,
            output_logits=True,
        )
        new = out.sequences[:, width:]
        logprobs = torch.stack(out.logits, dim=1).float().log_softmax(-1)
        token_lp = logprobs.gather(-1, new.unsqueeze(-1)).squeeze(-1)
        eos = set(_end_ids(self.tokenizer))
        result: list[list[Sample]] = [[] for _ in states]
        for row in range(new.shape[0]):
            tokens: list[int] = []
            total = 0.0
            for j, tok in enumerate(new[row].tolist()):
                if tok == pad and pad not in eos and tokens and tokens[-1] in eos:
                    break
                tokens.append(tok)
                total += float(token_lp[row, j])
                if tok in eos:
                    break
            text = self.tokenizer.decode(tokens, skip_special_tokens=True).strip()
            parsed = parse_response(text)
            result[row // n].append(Sample(text, parsed.command, parsed.reason, tuple(tokens), total))
        return result

    # -- admissible ---------------------------------------------------------------------------
    def candidate_logprobs(self, state: State) -> tuple[list[str], list[list[int]], torch.Tensor]:
        """Responses for every admissible command, their token ids and log-likelihoods (prompt once)."""
        responses = [self.renderer.response("", c) for c in state.admissible_commands]
        prompt = chat_ids(self.tokenizer, self.renderer, state)
        suffixes = [response_ids(self.tokenizer, self.renderer, state, prompt, r) for r in responses]
        return (
            responses,
            suffixes,
            score_continuations(self.model, prompt, suffixes, self.tokenizer.pad_token_id),
        )

    def _admissible(self, state: State, n: int, greedy: bool) -> list[Sample]:
        if not state.admissible_commands:
            raise ValueError(f"admissible mode needs admissible commands; game {state.game_id} has none")
        responses, suffixes, scores = self.candidate_logprobs(state)
        if greedy:
            picks = [int(scores.argmax())] * n
        else:
            probs = torch.softmax(scores.double() / self.temperature, dim=0)
            picks = torch.multinomial(probs, n, replacement=True, generator=self.generator).tolist()
        out = []
        for i in picks:
            parsed = parse_response(responses[i])
            out.append(
                Sample(responses[i], parsed.command, parsed.reason, tuple(suffixes[i]), float(scores[i]))
            )
        return out


def response_ids(tokenizer, renderer: Renderer, state: State, prompt: list[int], response: str) -> list[int]:
    """The response's token ids after ``prompt``, through its end-of-turn token.

    Tokenized as part of the whole conversation (so merges across the boundary match what the
    model sees), then cut after the end-of-turn token: what a chat template appends after it is not
    part of the response.
    """
    full = chat_ids(tokenizer, renderer, state, response)
    if full[: len(prompt)] != prompt:
        raise ValueError(
            "the tokenizer's chat template does not extend the generation prompt with the response "
            "token-for-token; admissible scoring needs a template whose prompt is a prefix of the "
            "conversation"
        )
    suffix = full[len(prompt) :]
    # Keep the response up to and including its end-of-turn token; drop what the template appends after.
    eos = tokenizer.eos_token_id
    return suffix[: suffix.index(eos) + 1] if eos in suffix else suffix


def shared_prefix_forward(module, prompt: Sequence[int], continuations: Sequence[Sequence[int]], pad_id: int):
    """Run one prompt once and K continuations of it against its KV cache, in one padded batch.

    ``module`` is a causal LM or its decoder trunk: anything taking ``input_ids``, ``attention_mask``,
    ``past_key_values``, ``position_ids`` and ``use_cache``. Continuations are right-padded; padded
    positions are masked out and never influence real ones.

    Returns:
        ``(prefix_out, out, ids, keep)``: the prompt's output (batch 1), the continuations' output
        (batch K), their ids ``[K, W]`` and the mask of real (non-pad) positions ``[K, W]``.
    """
    device = next(module.parameters()).device
    k, n = len(continuations), len(prompt)
    prefix_out = module(input_ids=torch.tensor([list(prompt)], device=device), use_cache=True)
    cache = prefix_out.past_key_values
    cache.batch_repeat_interleave(k)
    width = max(map(len, continuations))
    ids = torch.full((k, width), pad_id, device=device)
    keep = torch.zeros((k, width), dtype=torch.bool, device=device)
    for i, c in enumerate(continuations):
        ids[i, : len(c)] = torch.tensor(list(c), device=device)
        keep[i, : len(c)] = True
    mask = torch.cat([torch.ones((k, n), dtype=torch.long, device=device), keep.long()], dim=1)
    positions = torch.arange(n, n + width, device=device).expand(k, -1)
    out = module(
        input_ids=ids, attention_mask=mask, past_key_values=cache, position_ids=positions, use_cache=False
    )
    return prefix_out, out, ids, keep


def score_continuations(model, prompt: Sequence[int], continuations: Sequence[Sequence[int]], pad_id: int):
    """Log-likelihood of each continuation given one shared prompt, the prompt computed once.

    Args:
        model: A causal LM.
        prompt: Prompt token ids, shape ``[P]``.
        continuations: K continuation token id lists (lengths may differ; each ≥ 1 token).
        pad_id: Padding id (its positions are masked out).

    Returns:
        A float tensor ``[K]``: Σ_j log p(c_j | prompt, c_<j).
    """
    prefix_out, out, ids, keep = shared_prefix_forward(model, prompt, continuations, pad_id)
    k = len(continuations)
    first = prefix_out.logits[0, -1].float().log_softmax(-1)  # [V]: each continuation's first token
    lp = torch.cat([first.expand(k, 1, -1), out.logits.float()[:, :-1].log_softmax(-1)], dim=1)  # [K, W, V]
    token_lp = lp.gather(-1, ids.unsqueeze(-1)).squeeze(-1)
    return (token_lp * keep).sum(-1)
