"""FSDP2 helper: finds the decoder layers of a tiny Llama (also inside peft), shards them on CPU with a
one-process gloo group, and trains under Lightning's ModelParallelStrategy."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.strategies import ModelParallelStrategy
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM

from agentprm.distributed import decoder_layers, fully_shard_decoder


def _tiny_llama(seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=64,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=64,
    )
    return LlamaForCausalLM(config)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def clean_process_env():
    """Restore os.environ (Lightning sets MASTER_ADDR/PORT) and destroy any process group afterwards."""
    saved = dict(os.environ)
    for key in ("LOCAL_RANK", "RANK", "WORLD_SIZE", "NODE_RANK", "MASTER_ADDR", "MASTER_PORT"):
        os.environ.pop(key, None)
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(_free_port())
    yield
    if dist.is_initialized():
        dist.destroy_process_group()
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture
def one_process_group(clean_process_env):
    dist.init_process_group("gloo", rank=0, world_size=1, init_method=f"tcp://127.0.0.1:{_free_port()}")
    from torch.distributed.device_mesh import init_device_mesh

    return init_device_mesh("cpu", (1,))


@pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing.*:FutureWarning")  # peft → transformers
def test_decoder_layers_of_a_causal_lm_and_of_its_peft_wrapper():
    from peft import LoraConfig, get_peft_model

    model = _tiny_llama()
    layers = decoder_layers(model)
    assert layers == list(model.model.layers) and len(layers) == 2
    wrapped = get_peft_model(_tiny_llama(), LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    found = decoder_layers(wrapped)
    assert found == list(wrapped.get_base_model().model.layers)
    assert all(type(layer).__name__ == "LlamaDecoderLayer" for layer in found)


def test_decoder_layers_fall_back_to_no_split_modules_and_fail_clearly():
    class Wrapper(nn.Module):  # layers at an unusual path, announced the transformers way
        _no_split_modules = ("LlamaDecoderLayer",)

        def __init__(self) -> None:
            super().__init__()
            self.backbone = _tiny_llama()

    wrapper = Wrapper()
    assert decoder_layers(wrapper) == list(wrapper.backbone.model.layers)
    with pytest.raises(ValueError, match=r"no decoder layers found in Linear"):
        decoder_layers(nn.Linear(2, 2))


def test_fully_shard_decoder_shards_each_layer_then_the_root_and_still_learns(one_process_group):
    from torch.distributed.fsdp import FSDPModule
    from torch.distributed.tensor import DTensor

    reference = _tiny_llama()
    model = fully_shard_decoder(_tiny_llama(), one_process_group)
    assert isinstance(model, FSDPModule)
    assert all(isinstance(layer, FSDPModule) for layer in model.model.layers)
    assert all(isinstance(p, DTensor) for p in model.parameters())
    ids = torch.randint(0, 64, (2, 8), generator=torch.Generator().manual_seed(1))
    loss = model(input_ids=ids, labels=ids).loss
    assert torch.allclose(loss, reference(input_ids=ids, labels=ids).loss, atol=1e-5)  # same function
    before = model.model.layers[0].mlp.up_proj.weight.full_tensor().clone()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    loss.backward()
    optimizer.step()
    assert not torch.equal(before, model.model.layers[0].mlp.up_proj.weight.full_tensor())
    assert model(input_ids=ids, labels=ids).loss < loss


class _ShardedLM(LightningModule):
    """The pattern the stage modules follow: shard in configure_model when the strategy gives a mesh."""

    def __init__(self) -> None:
        super().__init__()
        self.model = _tiny_llama()

    def configure_model(self) -> None:
        fully_shard_decoder(self.model, self.device_mesh)

    def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self.model(input_ids=batch[0], labels=batch[0]).loss
        self.log("train/loss", loss)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.parameters(), lr=1e-2)

    def train_dataloader(self) -> torch.utils.data.DataLoader:
        ids = torch.randint(0, 64, (4, 8), generator=torch.Generator().manual_seed(2))
        return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(ids), batch_size=4)


def test_model_parallel_strategy_trains_the_sharded_module_on_cpu(clean_process_env, tmp_path):
    from torch.distributed.fsdp import FSDPModule

    module = _ShardedLM()
    strategy = ModelParallelStrategy(data_parallel_size=1, tensor_parallel_size=1)
    trainer = Trainer(
        accelerator="cpu",
        devices=1,
        strategy=strategy,
        max_steps=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(module)
    assert tuple(module.device_mesh.mesh_dim_names) == ("data_parallel", "tensor_parallel")
    assert isinstance(module.model, FSDPModule)
    assert all(isinstance(layer, FSDPModule) for layer in module.model.model.layers)
    assert trainer.global_step == 2 and torch.isfinite(trainer.callback_metrics["train/loss"])
