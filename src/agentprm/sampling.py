"""Action selection: the Sampler protocol and its transformers backend.

Two modes, used alike by rollouts, evaluation, Best-of-N and online DPO:

- ``generate`` (the paper's): the policy writes ``REASON: … ACTION: …`` freely. All prompts of a
  batch go through one ``generate`` call (left padding, KV cache), ``n`` samples per prompt.
- ``admissible``: the response is one of the admissible commands. Every candidate response is
  scored by its log-likelihood given the prompt — the prompt is run once and its KV cache shared by
  all candidates — and one is drawn from the softmax over candidates at a temperature (or the
  argmax). Small models waste about half their steps on invalid commands when generating freely.

Every sample carries its text, token ids and log-probability under the policy.

Stages do not build samplers themselves: they are given a :class:`SamplerFactory` (``sampler:`` by
``class_path``; by default :class:`HFSamplerFactory` from their ``mode``/``temperature``/…
arguments), which makes a :class:`Sampler` over the stage's model. What only some samplers can do
(score every admissible command: :class:`CandidateScorer`) is asked for by the stages that need it,
which stop with a clear error when the sampler cannot.
"""

from __future__ import annotations

import functools
import inspect
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

import torch

from agentprm.plugins import Plugin
from agentprm.prompts import Renderer, parse_response
from agentprm.records import State

__all__ = [
    "CandidateScorer",
    "HFSampler",
    "HFSamplerFactory",
    "Sample",
    "Sampler",
    "SamplerFactory",
    "SamplingMode",
    "chat_ids",
    "draw_key",
    "left_pad",
    "pad_prompts",
    "prefix_cache_forward",
    "require_candidate_scores",
    "response_ids",
    "right_pad",
    "row_groups",
    "score_continuations",
    "score_continuations_batch",
    "shared_prefix_forward_batch",
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
    """Draws responses for a batch of states.

    ``mode`` is ``admissible`` when every response is one of the state's admissible commands (then
    stages pass ``keys`` for common random numbers and may ask for ``distinct`` samples), anything
    else otherwise (``generate``: free text).
    """

    mode: str

    def sample(
        self,
        states: Sequence[State],
        n: int = 1,
        *,
        greedy: bool = False,
        distinct: bool = False,
        keys: Sequence[int] | None = None,
    ) -> list[list[Sample]]:
        """``n`` responses for each state (``greedy``: the most likely; ``distinct``: without
        repeats while the commands last; ``keys``: one seed per state for its draw)."""
        ...


@runtime_checkable
class CandidateScorer(Protocol):
    """A sampler that also scores every admissible command (branches with distinct actions,
    Best-of-N over all commands, the probe)."""

    temperature: float
    generator: torch.Generator

    def candidate_logprobs(
        self, states: Sequence[State]
    ) -> list[tuple[list[str], list[list[int]], torch.Tensor]]:
        """Per state: the response of every admissible command, its token ids and log-likelihood."""
        ...


def require_candidate_scores(sampler: Sampler, who: str) -> CandidateScorer:
    """``sampler`` when it can score every admissible command; else a clear error naming ``who``."""
    if not isinstance(sampler, CandidateScorer):
        raise ValueError(
            f"{who} needs a sampler that scores every admissible command (candidate_logprobs, "
            f"temperature, generator); {type(sampler).__name__} does not"
        )
    return sampler


class SamplerFactory(Plugin, ABC):
    """Makes the sampler a stage acts with: what ``sampler:`` names in a config by ``class_path``.

    Its constructor arguments are its settings (recorded in each run's settings). A stage calls
    :meth:`build` with its model (the weights being trained, for online DPO), tokenizer and prompt
    renderer, and a seed, whenever it samples.

    Attributes:
        mode: ``admissible`` when its samplers answer with admissible commands (see
            :class:`Sampler`).
    """

    mode: str = "admissible"

    @abstractmethod
    def build(self, model, tokenizer, renderer: Renderer, seed: int) -> Sampler:
        """A sampler over ``model`` whose draws are fixed by ``seed``."""


def _check_sampling(mode: str, temperature: float) -> None:
    if mode not in ("generate", "admissible"):
        raise ValueError(f"mode must be 'generate' or 'admissible', found {mode!r}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0 (use greedy=True for argmax), found {temperature}")


class HFSamplerFactory(SamplerFactory):
    """:class:`HFSampler` over the stage's transformers model (the default of every stage).

    Args:
        mode: ``admissible`` or ``generate``.
        temperature: Sampling temperature.
        top_p: Nucleus threshold (``generate``).
        max_new_tokens: Response cap (``generate``).
    """

    def __init__(
        self,
        mode: SamplingMode = "admissible",
        temperature: float = 1.0,
        top_p: float = 1.0,
        max_new_tokens: int = 64,
    ) -> None:
        _check_sampling(mode, temperature)
        self.mode, self.temperature = mode, temperature
        self.top_p, self.max_new_tokens = top_p, max_new_tokens

    def build(self, model, tokenizer, renderer: Renderer, seed: int) -> HFSampler:
        return HFSampler(
            model, tokenizer, renderer, self.mode, self.temperature, self.top_p, self.max_new_tokens, seed
        )


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
        _check_sampling(mode, temperature)
        self.model, self.tokenizer, self.renderer = model, tokenizer, renderer
        self.mode, self.temperature, self.top_p = mode, temperature, top_p
        self.max_new_tokens = max_new_tokens
        self.generator = torch.Generator().manual_seed(seed)
        self.seed = seed

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.no_grad()
    def sample(
        self,
        states: Sequence[State],
        n: int = 1,
        *,
        greedy: bool = False,
        distinct: bool = False,
        keys: Sequence[int] | None = None,
    ) -> list[list[Sample]]:
        """``n`` responses per state; ``distinct`` (admissible mode): drawn without replacement,
        so a state with fewer than ``n`` admissible commands gets them all, each once.

        ``keys`` (admissible mode): one integer per state that seeds its draw instead of the
        sampler's running generator — common random numbers. A command is drawn by inverting the
        cumulative distribution over the admissible commands (in their order) at a uniform number
        fixed by the key, so two policies whose distributions at a state are close pick the same
        command there: paired evaluations of similar policies differ only where the policies do.
        """
        if not states:
            return []
        if distinct and self.mode != "admissible":
            raise ValueError("distinct samples need mode=admissible (they are drawn among the commands)")
        was_training = self.model.training
        self.model.eval()
        try:
            if self.mode == "admissible":
                return self._admissible(states, n, greedy, distinct, keys)
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
    max_rows = 256
    """Continuations scored in one forward: states are grouped until their candidates reach this."""

    @torch.no_grad()
    def candidate_logprobs(
        self, states: Sequence[State]
    ) -> list[tuple[list[str], list[list[int]], torch.Tensor]]:
        """Per state: responses for every admissible command, their token ids and log-likelihoods.

        Each prompt runs once; states are scored together, ``max_rows`` candidates per forward.
        """
        items = []
        for state in states:
            if not state.admissible_commands:
                raise ValueError(f"admissible mode needs admissible commands; game {state.game_id} has none")
            responses = [self.renderer.response("", c) for c in state.admissible_commands]
            prompt = chat_ids(self.tokenizer, self.renderer, state)
            suffixes = [response_ids(self.tokenizer, self.renderer, state, prompt, r) for r in responses]
            items.append((responses, prompt, suffixes))
        scores: list[torch.Tensor] = []
        for group in row_groups([len(suffixes) for _, _, suffixes in items], self.max_rows):
            chunk = [items[i] for i in group]
            scores += score_continuations_batch(
                self.model, [p for _, p, _ in chunk], [s for _, _, s in chunk], self.tokenizer.pad_token_id
            )
        return [(r, s, sc.cpu()) for (r, _, s), sc in zip(items, scores, strict=True)]

    def _admissible(
        self,
        states: Sequence[State],
        n: int,
        greedy: bool,
        distinct: bool = False,
        keys: Sequence[int] | None = None,
    ) -> list[list[Sample]]:
        if keys is not None and len(keys) != len(states):
            raise ValueError(f"{len(keys)} keys for {len(states)} states")
        result = []
        for k, (responses, suffixes, scores) in enumerate(self.candidate_logprobs(states)):
            if keys is not None and not greedy:
                probs = torch.softmax(scores.double() / self.temperature, dim=0)
                picks = _inverse_cdf(probs, n, distinct, torch.Generator().manual_seed(keys[k]))
            elif greedy and distinct:
                picks = scores.argsort(descending=True, stable=True)[:n].tolist()
            elif greedy:
                picks = [int(scores.argmax())] * n
            else:
                probs = torch.softmax(scores.double() / self.temperature, dim=0)
                k = min(n, len(responses)) if distinct else n
                draw = torch.multinomial(probs, k, replacement=not distinct, generator=self.generator)
                picks = draw.tolist()
            out = []
            for i in picks:
                parsed = parse_response(responses[i])
                out.append(
                    Sample(responses[i], parsed.command, parsed.reason, tuple(suffixes[i]), float(scores[i]))
                )
            result.append(out)
        return result


def draw_key(seed: int, episode: str, turn: int) -> int:
    """The common-random-numbers seed of one draw: a 63-bit hash of (seed, episode name, turn)."""
    import hashlib

    digest = hashlib.sha256(f"{seed}|{episode}|{turn}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def _inverse_cdf(probs: torch.Tensor, n: int, distinct: bool, generator: torch.Generator) -> list[int]:
    """``n`` indices drawn by inverting the cumulative distribution at uniforms from ``generator``
    (without replacement when ``distinct``: each draw renormalises over what is left)."""
    uniforms = torch.rand(n, generator=generator, dtype=torch.float64).tolist()
    picks: list[int] = []
    left = probs.clone()
    for u in uniforms[: min(n, len(probs)) if distinct else n]:
        cdf = torch.cumsum(left / left.sum(), 0)
        i = min(int(torch.searchsorted(cdf, torch.tensor([u], dtype=cdf.dtype))), len(cdf) - 1)
        while left[i] <= 0:  # rounding at the top end: step back to a command still available
            i -= 1
        picks.append(i)
        if distinct:
            left[i] = 0.0
    return picks


def row_groups(sizes: Sequence[int], limit: int) -> list[list[int]]:
    """Consecutive index groups whose sizes sum to at most ``limit`` (a larger item is alone)."""
    groups: list[list[int]] = []
    total = 0
    for i, size in enumerate(sizes):
        if groups and total + size <= limit:
            groups[-1].append(i)
            total += size
        else:
            groups.append([i])
            total = size
    return groups


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


def left_pad(seqs: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(ids, mask)`` ``[B, W]`` with every sequence ending in the last column."""
    width = max(map(len, seqs))
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, seq in enumerate(seqs):
        ids[i, width - len(seq) :] = torch.tensor(list(seq), dtype=torch.long)
        mask[i, width - len(seq) :] = 1
    return ids, mask


def right_pad(seqs: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(ids, mask)`` ``[B, W]`` with every sequence starting in the first column."""
    width = max(map(len, seqs))
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, seq in enumerate(seqs):
        ids[i, : len(seq)] = torch.tensor(list(seq), dtype=torch.long)
        mask[i, : len(seq)] = 1
    return ids, mask


class _Unpacked:
    """The continuations' outputs in ``[N, W, …]`` layout (``logits`` and/or ``last_hidden_state``)."""

    def __init__(self, out, rows: torch.Tensor, cols: torch.Tensor) -> None:
        for name in ("logits", "last_hidden_state"):
            value = getattr(out, name, None)
            setattr(self, name, None if value is None else value[rows, cols])


def _cache_argument(module) -> str:
    """The keyword a model's ``forward`` takes its KV cache under.

    transformers 5.24 renamed ``past_key_values`` to ``cache`` (the old name warns and goes in 5.40);
    earlier 5.x releases know only ``past_key_values``. A PEFT wrapper is looked through to its base.
    """
    base = module.get_base_model() if hasattr(module, "get_base_model") else module
    return _cache_keyword(type(base))


@functools.cache
def _cache_keyword(model_class: type) -> str:
    """:func:`_cache_argument` for one model class (its signature is read once, not every forward)."""
    try:
        parameters = inspect.signature(model_class.forward).parameters
    except (TypeError, ValueError):
        return "past_key_values"
    return "cache" if "cache" in parameters else "past_key_values"


def prefix_cache_forward(module, prefix_ids, prefix_mask, continuation_ids, continuation_mask, prefix_index):
    """Run left-padded prefixes ``[G, P]`` once and continuations ``[N, C]`` against their cache.

    Continuation n continues prefix ``prefix_index[n]``: it attends to that prefix's real tokens and
    to itself (causally), and its positions continue the prefix's real length, so its outputs equal
    running the whole sequence alone. The continuations of one prefix are packed into one row after
    it, kept apart by a block attention mask, so the prefix's keys and values are never copied per
    continuation. Differentiable: gradients flow through the cache into the prefixes. ``module`` is
    a causal LM or its decoder trunk (anything taking ``input_ids``, ``attention_mask`` — a custom
    4D mask here —, ``past_key_values`` or ``cache``, ``position_ids`` and ``use_cache``).

    Returns:
        ``(prefix_out, out)``: the prefixes' output (index ``[:, -1]`` is each prefix's last token)
        and the continuations' (``out.logits`` / ``out.last_hidden_state`` as ``[N, C, …]``).
    """
    device = prefix_ids.device
    lengths = prefix_mask.sum(1)
    padded = bool((lengths < prefix_mask.shape[1]).any())
    prefix_out = module(
        input_ids=prefix_ids,
        attention_mask=prefix_mask if padded else None,
        position_ids=(prefix_mask.cumsum(1) - 1).clamp_min(0),
        use_cache=True,
    )
    # Pack: continuation n takes columns start[n] … start[n] + len[n] − 1 of its prefix's row.
    groups, width = prefix_ids.shape[0], continuation_ids.shape[1]
    cont_lengths = continuation_mask.sum(1).tolist()
    owners = prefix_index.tolist()
    used = [0] * groups
    starts = []
    for owner, length in zip(owners, cont_lengths, strict=True):
        starts.append(used[owner])
        used[owner] += length
    packed = max(max(used), 1)
    start = torch.tensor(starts, device=device)
    offsets = torch.arange(width, device=device)
    real = continuation_mask.bool()
    rows = prefix_index[:, None].expand(-1, width)[real]
    cols = (start[:, None] + offsets)[real]
    ids = torch.full(
        (groups, packed), int(continuation_ids[0, 0]), dtype=continuation_ids.dtype, device=device
    )
    ids[rows, cols] = continuation_ids[real]
    positions = torch.zeros((groups, packed), dtype=torch.long, device=device)
    positions[rows, cols] = (lengths[prefix_index][:, None] + offsets).expand(-1, width)[real]
    segment = torch.full((groups, packed), -1, dtype=torch.long, device=device)
    segment[rows, cols] = torch.arange(len(owners), device=device)[:, None].expand(-1, width)[real]
    # Query q sees its prefix's real tokens and the earlier tokens of its own continuation; a padding
    # column sees only itself (never read, but a row must not be fully masked).
    columns = torch.arange(packed, device=device)
    own = (segment[:, :, None] == segment[:, None, :]) & (segment[:, :, None] >= 0)
    own = (own & (columns[:, None] >= columns[None, :])) | torch.eye(packed, dtype=torch.bool, device=device)
    allowed = torch.cat([prefix_mask.bool()[:, None, :].expand(-1, packed, -1), own], dim=2)
    cache = prefix_out.cache if hasattr(prefix_out, "cache") else prefix_out.past_key_values
    dtype = cache.layers[0].keys.dtype
    mask = torch.zeros(allowed.shape, dtype=dtype, device=device).masked_fill(
        ~allowed, torch.finfo(dtype).min
    )
    out = module(
        input_ids=ids,
        attention_mask=mask[:, None],
        position_ids=positions,
        use_cache=False,
        **{_cache_argument(module): cache},
    )
    cols_all = (start[:, None] + offsets).clamp(max=packed - 1)
    return prefix_out, _Unpacked(out, prefix_index[:, None].expand(-1, width), cols_all)


def pad_prompts(
    prompts: Sequence[Sequence[int]],
    continuations: Sequence[Sequence[Sequence[int]]],
    pad_id: int,
    device: torch.device | str = "cpu",
) -> tuple[torch.Tensor, ...]:
    """The tensors :func:`prefix_cache_forward` takes for B prompts and each one's continuations.

    Returns ``(prefix_ids, prefix_mask, continuation_ids, continuation_mask, prefix_index)``: the
    prompts left-padded ``[B, P]``, all continuations in order right-padded ``[C, W]`` and each
    continuation's prompt index ``[C]``.
    """
    if len(prompts) != len(continuations):
        raise ValueError(f"{len(prompts)} prompts but {len(continuations)} continuation lists")
    prefix_ids, prefix_mask = left_pad(prompts, pad_id)
    ids, mask = right_pad([c for conts in continuations for c in conts], pad_id)
    owner = torch.tensor([b for b, conts in enumerate(continuations) for _ in conts], dtype=torch.long)
    return tuple(t.to(device) for t in (prefix_ids, prefix_mask, ids, mask, owner))


def shared_prefix_forward_batch(
    module,
    prompts: Sequence[Sequence[int]],
    continuations: Sequence[Sequence[Sequence[int]]],
    pad_id: int,
):
    """Run B prompts once and each prompt's continuations against its KV cache, in two forwards.

    The token-list form of :func:`prefix_cache_forward`: prompts are left-padded to one width, the
    continuations of all prompts form one right-padded batch, in order.

    Returns:
        ``(prefix_out, out, ids, keep, owner)``: the prompts' output (batch B, index ``[:, -1]`` is
        each prompt's last token), the continuations' output (batch C = all continuations in
        order), their ids ``[C, W]``, the mask of real positions ``[C, W]`` (bool) and ``owner
        [C]``, the prompt index of each continuation.
    """
    prefix_ids, prefix_mask, ids, keep, owner = pad_prompts(
        prompts, continuations, pad_id, next(module.parameters()).device
    )
    prefix_out, out = prefix_cache_forward(module, prefix_ids, prefix_mask, ids, keep, owner)
    return prefix_out, out, ids, keep.bool(), owner


def score_continuations_batch(
    model,
    prompts: Sequence[Sequence[int]],
    continuations: Sequence[Sequence[Sequence[int]]],
    pad_id: int,
) -> list[torch.Tensor]:
    """Log-likelihood of each prompt's continuations, all prompts and continuations in two forwards.

    Differentiable (gradients flow through the prompts' cache): online DPO trains on it; sampling
    calls it under ``torch.no_grad``. Returns one float tensor per prompt, ``[K_b]``:
    Σ_j log p(c_j | prompt_b, c_<j).
    """
    prefix_out, out, ids, keep, owner = shared_prefix_forward_batch(model, prompts, continuations, pad_id)
    first = prefix_out.logits[:, -1].float().log_softmax(-1)[owner]  # [C, V]: each first token
    lp = torch.cat([first[:, None], out.logits.float()[:, :-1].log_softmax(-1)], dim=1)  # [C, W, V]
    token_lp = lp.gather(-1, ids.unsqueeze(-1)).squeeze(-1)
    return list((token_lp * keep).sum(-1).split([len(c) for c in continuations]))


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
    return score_continuations_batch(model, [prompt], [continuations], pad_id)[0]
