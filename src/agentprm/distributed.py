"""FSDP2 for Lightning's ``ModelParallelStrategy``: shard a causal LM one decoder layer at a time.

With ``strategy: ModelParallelStrategy`` (``configs/trainer/fsdp.yaml``) Lightning builds the device
mesh and the LightningModule applies the parallelism itself in ``configure_model``::

    def configure_model(self) -> None:
        if self.device_mesh is not None:  # None under every other strategy
            fully_shard_decoder(self.model, self.device_mesh)

Each decoder layer becomes its own FSDP unit (its parameters are all-gathered just before its forward
and freed after), then the root takes what is left (embeddings, final norm, LM head, a PRM head).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from torch import nn

if TYPE_CHECKING:
    from torch.distributed.device_mesh import DeviceMesh

__all__ = [
    "decoder_layers",
    "fsdp_modules",
    "full_state_dict",
    "fully_shard_decoder",
    "gathered",
    "shard_for_strategy",
]

# Attribute paths of the decoder layer list, from the unwrapped causal LM: Llama, Mistral, Qwen, Gemma,
# SmolLM, Phi-3 (model.layers); GPT-2, Falcon (transformer.h); Pythia (gpt_neox.layers);
# OPT (model.decoder.layers); a bare decoder (layers).
_LAYER_PATHS = ("model.layers", "transformer.h", "gpt_neox.layers", "model.decoder.layers", "layers")


def decoder_layers(model: nn.Module) -> list[nn.Module]:
    """The decoder layers of a transformers causal LM, also inside a peft wrapper.

    Looks up the usual attribute paths (``model.layers`` and others) on the model or, for a peft
    model, on ``get_base_model()``; falls back to the modules whose class is listed in the model's
    ``_no_split_modules`` (transformers' own list of its decoder-layer classes).

    Raises:
        ValueError: No decoder layers found (the message names the model class).
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    for path in _LAYER_PATHS:
        found = _attribute(base, path)
        if isinstance(found, nn.ModuleList) and len(found) > 0:
            return list(found)
    names = set(getattr(base, "_no_split_modules", None) or ())
    layers = [m for m in base.modules() if type(m).__name__ in names]
    if layers:
        return layers
    raise ValueError(
        f"no decoder layers found in {type(model).__name__}: looked for {', '.join(_LAYER_PATHS)} "
        f"and for the _no_split_modules classes; pass the layer list to fully_shard_decoder(layers=…)"
    )


def fully_shard_decoder(
    model: nn.Module,
    mesh: DeviceMesh,
    *,
    layers: Sequence[nn.Module] | None = None,
    mp_policy: Any = None,
    reshard_after_forward: bool = True,
) -> nn.Module:
    """Apply FSDP2 (``torch.distributed.fsdp.fully_shard``) to each decoder layer, then to the root.

    Args:
        model: A transformers causal LM, a peft model around one, or a module holding one (pass
            ``layers`` for the last).
        mesh: The device mesh, e.g. the LightningModule's ``self.device_mesh``. A 2-D mesh with a
            ``"data_parallel"`` dimension (``ModelParallelStrategy``'s) is sharded over that dimension.
        layers: The modules to shard one by one; default :func:`decoder_layers` of ``model``.
        mp_policy: A ``torch.distributed.fsdp.MixedPrecisionPolicy`` (e.g. bf16 parameters, fp32
            gradient reduction); default: keep the parameters' dtype.
        reshard_after_forward: Free each layer's gathered parameters after its forward (saves memory,
            costs a second all-gather in backward).

    Returns:
        ``model``, modified in place: its parameters are now sharded ``DTensor`` s.
    """
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    names = getattr(mesh, "mesh_dim_names", None) or ()
    if mesh.ndim > 1 and "data_parallel" in names:
        mesh = mesh["data_parallel"]
    options = {
        "mesh": mesh,
        "reshard_after_forward": reshard_after_forward,
        "mp_policy": mp_policy if mp_policy is not None else MixedPrecisionPolicy(),
    }
    for layer in layers if layers is not None else decoder_layers(model):
        fully_shard(layer, **options)
    fully_shard(model, **options)
    return model


def _attribute(obj: Any, path: str) -> Any:
    for name in path.split("."):
        obj = getattr(obj, name, None)
        if obj is None:
            return None
    return obj


def fsdp_modules(module: nn.Module) -> list[nn.Module]:
    """The FSDP2 units in ``module`` (itself included), in ``modules()`` order (the same on every rank)."""
    from torch.distributed.fsdp import FSDPModule

    return [m for m in module.modules() if isinstance(m, FSDPModule)]


def shard_for_strategy(
    owner,
    *,
    model: nn.Module,
    extra: Sequence[nn.Module] = (),
    lora: bool = False,
) -> None:
    """What a stage module's ``configure_model`` does: under ``ModelParallelStrategy`` (the
    LightningModule ``owner`` has a ``device_mesh``) shard ``model`` with
    :func:`fully_shard_decoder` (its decoder layers, then the model itself) and each module of
    ``extra`` (heads outside the model) as its own unit; under every other strategy, or when the
    model is sharded already, nothing.

    Raises:
        ValueError: ``lora`` (LoRA adapters are not sharded here: LoRA is the small-memory path;
            train it with DDP) or a tensor-parallel mesh (only data parallelism is implemented).
    """
    mesh = getattr(owner, "device_mesh", None)
    if mesh is None or fsdp_modules(model):  # not FSDP, or configure_model already ran
        return
    if lora:
        raise ValueError(
            "model.lora with ModelParallelStrategy (FSDP2) is not supported: train LoRA with DDP "
            "(configs/trainer/ddp.yaml), or drop lora to shard the full model"
        )
    names = getattr(mesh, "mesh_dim_names", None) or ()
    if "tensor_parallel" in names and mesh["tensor_parallel"].size() > 1:
        raise ValueError("tensor_parallel_size > 1 is not implemented; set it to 1 (FSDP2 data parallelism)")
    fully_shard_decoder(model, mesh)
    if extra:
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        dp = mesh["data_parallel"] if mesh.ndim > 1 and "data_parallel" in names else mesh
        for part in extra:
            fully_shard(part, mesh=dp, mp_policy=MixedPrecisionPolicy())


@contextmanager
def gathered(module: nn.Module) -> Iterator[nn.Module]:
    """Run ``module`` with every FSDP2 unit's parameters gathered and kept for the block.

    Inside, forwards issue no collectives, so each rank may run as many of them as its own work
    needs (sampling, environment episodes of different lengths). Entering and leaving are
    collectives: every rank must enter the block together. A module without FSDP2 units passes
    through unchanged (single process, DDP).
    """
    units = fsdp_modules(module)
    if not units:
        yield module
        return
    for unit in units:
        unit.set_reshard_after_forward(False, recurse=False)
        unit.unshard()
    try:
        yield module
    finally:
        for unit in units:
            unit.reshard()
            unit.set_reshard_after_forward(True, recurse=False)


def full_state_dict(module: nn.Module) -> dict | None:
    """The full (unsharded) state dict of an FSDP2 ``module`` on CPU, gathered on every rank; a
    collective. None when ``module`` is not sharded (save it as it is)."""
    if not fsdp_modules(module):
        return None
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(module, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
