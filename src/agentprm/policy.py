"""Policy LightningModules: SFT of π0 on demonstrations.

The modules only orchestrate: the model comes from :mod:`agentprm.backbone`, the batches from
:mod:`agentprm.data`. At the end of fitting the policy is also written as a Hugging Face model
directory (``save_pretrained``: weights, config, tokenizer) that any later stage loads by path.
"""

from __future__ import annotations

import torch
from lightning.pytorch import LightningModule

from agentprm.backbone import Dtype, LoraSettings, load_causal_lm, load_tokenizer, save_hf
from agentprm.errors import check_model_path, check_writable
from agentprm.optim import adamw_warmup_cosine
from agentprm.stage import TrainableStage

__all__ = ["SFTModule"]


class SFTModule(TrainableStage, LightningModule):
    """Supervised fine-tuning of the policy on demonstrations (loss on response tokens only).

    Args:
        model: Model directory or hub name; ``tiny`` builds the project's tiny model once.
        dtype: Weight dtype.
        lora: LoRA settings; None fine-tunes every weight.
        gradient_checkpointing: Recompute activations in the backward pass.
        lr: Peak learning rate (AdamW).
        weight_decay: AdamW weight decay.
        warmup_steps: Linear warm-up steps, then cosine decay to ``min_lr_ratio`` × lr.
        min_lr_ratio: Final learning rate as a fraction of ``lr``.
        output_dir: Where the Hugging Face directory of the trained policy is written at the end
            of fitting (None: ``<trainer.default_root_dir>/policy``).
    """

    def __init__(
        self,
        model: str = "tiny",
        dtype: Dtype = "float32",
        lora: LoraSettings | None = None,
        gradient_checkpointing: bool = False,
        lr: float = 2e-3,
        weight_decay: float = 0.0,
        warmup_steps: int = 30,
        min_lr_ratio: float = 0.1,
        output_dir: str | None = None,
    ) -> None:
        super().__init__()
        check_model_path("model.model", model)
        if output_dir:
            check_writable("model.output_dir", output_dir)
        self.save_hyperparameters()
        self.model = load_causal_lm(
            model, dtype=dtype, lora=lora, gradient_checkpointing=gradient_checkpointing
        )
        self.tokenizer = load_tokenizer(model)
        self.model.train()

    def forward(self, input_ids, attention_mask):
        return self.model(input_ids=input_ids, attention_mask=attention_mask).logits

    def _loss(self, batch) -> tuple[torch.Tensor, int]:
        logits = self(batch["input_ids"], batch["attention_mask"]).float()
        labels = batch["labels"][:, 1:]
        tokens = int((labels != -100).sum())
        loss = torch.nn.functional.cross_entropy(
            logits[:, :-1].reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100
        )
        return loss, tokens

    def training_step(self, batch, batch_idx):
        loss, tokens = self._loss(batch)
        size = batch["input_ids"].shape[0]
        self.log("train/loss", loss, prog_bar=True, batch_size=size)
        self.log("train/response_tokens", float(tokens), reduce_fx="sum", batch_size=size)
        return loss

    def validation_step(self, batch, batch_idx):
        loss, _ = self._loss(batch)
        self.log("val/loss", loss, prog_bar=True, sync_dist=True, batch_size=batch["input_ids"].shape[0])

    def configure_optimizers(self):
        h = self.hparams
        total = int(self.trainer.estimated_stepping_batches)
        return adamw_warmup_cosine(
            self.model.parameters(), h.lr, h.weight_decay, h.warmup_steps, total, self.hparams.min_lr_ratio
        )

    def _save(self, out: str, states: dict | None = None) -> None:
        save_hf(self.model, self.tokenizer, out, state_dict=(states or {}).get("model"))
