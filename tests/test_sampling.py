"""Sampling with a real (tiny) transformers model: both action-selection modes."""

from __future__ import annotations

import pytest
import torch

from agentprm.backbone import load_causal_lm, load_tokenizer
from agentprm.prompts import Renderer
from agentprm.records import State, Turn
from agentprm.sampling import (
    HFSampler,
    Sampler,
    chat_ids,
    response_ids,
    score_continuations,
    score_continuations_batch,
)


@pytest.fixture(scope="module")
def lm():
    torch.manual_seed(0)
    return load_causal_lm("tiny").eval(), load_tokenizer("tiny")


def _state(obs: str = "You arrive at cabinet 1. The cabinet 1 is closed.", history: int = 1) -> State:
    turns = tuple(
        Turn(f"You arrive at drawer {k}. Nothing.", f"go to drawer {k}") for k in range(1, history + 1)
    )
    return State(
        task="put a clean mug in cabinet.",
        observation=obs,
        admissible_commands=("go to countertop 1", "open cabinet 1", "look", "inventory"),
        history=turns,
        game_id="train/x/trial_0",
        turn=len(turns),
    )


def _full_logprob(model, ids: list[int], start: int) -> float:
    x = torch.tensor([ids])
    with torch.no_grad():
        lp = model(input_ids=x).logits[0].float().log_softmax(-1)
    return float(sum(lp[j - 1, ids[j]] for j in range(start, len(ids))))


def test_shared_prompt_scores_equal_scoring_each_continuation_alone(lm):
    model, tok = lm
    renderer = Renderer("compact", response_format="action")
    state = _state()
    prompt = chat_ids(tok, renderer, state)
    conts = [
        chat_ids(tok, renderer, state, renderer.response("", c))[len(prompt) :]
        for c in state.admissible_commands
    ]
    assert len({len(c) for c in conts}) > 1  # different lengths exercise the padding
    shared = score_continuations(model, prompt, conts, tok.pad_token_id)
    alone = torch.tensor([_full_logprob(model, prompt + c, len(prompt)) for c in conts])
    torch.testing.assert_close(shared, alone, rtol=1e-4, atol=1e-4)


def test_batched_prompts_score_as_each_prompt_alone(lm):
    """States of different lengths scored together (left-padded prompts, one cache) = each alone."""
    model, tok = lm
    renderer = Renderer("compact", history_window=4, response_format="action")
    states = [_state(history=h) for h in (0, 3, 1)]
    prompts = [chat_ids(tok, renderer, s) for s in states]
    assert len({len(p) for p in prompts}) == 3
    conts = [
        [
            chat_ids(tok, renderer, s, renderer.response("", c))[len(p) :]
            for c in s.admissible_commands[: 2 + i]
        ]
        for i, (s, p) in enumerate(zip(states, prompts, strict=True))
    ]
    together = score_continuations_batch(model, prompts, conts, tok.pad_token_id)
    assert [len(t) for t in together] == [2, 3, 4]
    for p, c, t in zip(prompts, conts, together, strict=True):
        alone = torch.tensor([_full_logprob(model, p + x, len(p)) for x in c])
        torch.testing.assert_close(t, alone, rtol=1e-4, atol=1e-4)
    sampler = HFSampler(model, tok, renderer, "admissible")
    alone = []
    for s in states:
        p = chat_ids(tok, renderer, s)
        c = [response_ids(tok, renderer, s, p, renderer.response("", x)) for x in s.admissible_commands]
        alone.append(score_continuations(model, p, c, tok.pad_token_id))
    for limit in (1, 5, 256):  # states grouped into forwards of at most `limit` candidates
        sampler.max_rows = limit
        got = [scores for _, _, scores in sampler.candidate_logprobs(states)]
        for g, a in zip(got, alone, strict=True):
            torch.testing.assert_close(g, a, rtol=1e-4, atol=1e-4)


def test_admissible_mode_returns_admissible_commands_with_their_logprobs(lm):
    model, tok = lm
    sampler = HFSampler(model, tok, Renderer("compact", response_format="action"), "admissible", seed=3)
    assert isinstance(sampler, Sampler)
    states = [_state(), _state("You arrive at countertop 1. On it, you see a mug 1.", history=2)]
    out = sampler.sample(states, n=5)
    assert [len(o) for o in out] == [5, 5]
    for state, samples in zip(states, out, strict=True):
        for s in samples:
            assert s.command in state.admissible_commands and s.text == f"ACTION: {s.command}"
            assert s.token_ids[-1] == tok.eos_token_id
            full = chat_ids(tok, sampler.renderer, state, s.text)
            start = len(chat_ids(tok, sampler.renderer, state))
            assert s.logprob == pytest.approx(
                _full_logprob(model, full[: start + len(s.token_ids)], start), abs=1e-4
            )
    greedy = sampler.sample(states[:1], n=2, greedy=True)[0]
    best = max(out[0] + greedy, key=lambda s: s.logprob)
    assert greedy[0].command == greedy[1].command == best.command


def test_same_seed_same_samples_and_temperature_spreads_choices(lm):
    model, tok = lm
    renderer = Renderer("compact", response_format="action")
    states = [_state()]
    a = HFSampler(model, tok, renderer, "admissible", temperature=5.0, seed=11).sample(states, n=40)
    b = HFSampler(model, tok, renderer, "admissible", temperature=5.0, seed=11).sample(states, n=40)
    assert [s.command for s in a[0]] == [s.command for s in b[0]]
    assert len({s.command for s in a[0]}) >= 3  # a high temperature spreads over the candidates
    cold = HFSampler(model, tok, renderer, "admissible", temperature=1e-3, seed=11).sample(states, n=20)
    assert len({s.command for s in cold[0]}) == 1


def test_generate_mode_batches_with_left_padding(lm):
    model, tok = lm
    renderer = Renderer("compact", response_format="action")
    short, long = _state(history=0), _state(history=3)
    sampler = HFSampler(model, tok, renderer, "generate", max_new_tokens=12, seed=0)
    alone = sampler.sample([short], n=1, greedy=True)[0][0]
    batched = sampler.sample([long, short], n=1, greedy=True)[1][0]
    assert batched.token_ids == alone.token_ids  # padding does not change the greedy continuation
    samples = sampler.sample([short, long], n=3)
    assert [len(s) for s in samples] == [3, 3]
    for state, group in zip([short, long], samples, strict=True):
        prompt = chat_ids(tok, renderer, state)
        for s in group:
            assert 1 <= len(s.token_ids) <= 12
            assert s.logprob == pytest.approx(
                _full_logprob(model, prompt + list(s.token_ids), len(prompt)), abs=1e-3
            )


def test_generate_mode_is_seeded(lm):
    model, tok = lm
    renderer = Renderer("compact", response_format="action")
    a = HFSampler(model, tok, renderer, "generate", max_new_tokens=8, seed=4).sample([_state()], n=4)
    b = HFSampler(model, tok, renderer, "generate", max_new_tokens=8, seed=4).sample([_state()], n=4)
    assert [s.token_ids for s in a[0]] == [s.token_ids for s in b[0]]


def test_bad_arguments_are_named(lm):
    model, tok = lm
    with pytest.raises(ValueError, match="mode must be"):
        HFSampler(model, tok, Renderer(), "beam")
    with pytest.raises(ValueError, match="temperature must be > 0"):
        HFSampler(model, tok, Renderer(), temperature=0)


def test_common_random_numbers_pick_by_the_inverse_cdf():
    from agentprm.sampling import _inverse_cdf

    probs = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    near = torch.tensor([0.48, 0.32, 0.2], dtype=torch.float64)
    same = sum(
        _inverse_cdf(probs, 1, False, torch.Generator().manual_seed(k))
        == _inverse_cdf(near, 1, False, torch.Generator().manual_seed(k))
        for k in range(400)
    )
    assert same >= 385  # only uniforms in [0.48, 0.5) (and nothing else) change the pick
    counts = [0, 0, 0]
    for k in range(3000):
        counts[_inverse_cdf(probs, 1, False, torch.Generator().manual_seed(k))[0]] += 1
    assert [round(c / 3000, 1) for c in counts] == [0.5, 0.3, 0.2]
    for k in range(50):
        picks = _inverse_cdf(probs, 5, True, torch.Generator().manual_seed(k))
        assert sorted(picks) == [0, 1, 2]  # without replacement: each command once
