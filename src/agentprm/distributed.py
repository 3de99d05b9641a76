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

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from torch import nn

if TYPE_CHECKING:
    from torch.distributed.device_mesh import DeviceMesh

__all__ = ["decoder_layers", "fully_shard_decoder"]

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
