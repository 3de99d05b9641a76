"""What the trainable stages (SFT, PRM, online DPO) share: the output folder, FSDP2 sharding of the
trained model under ``ModelParallelStrategy``, and the save at the end of fitting."""

from __future__ import annotations

from pathlib import Path

from agentprm.errors import check_writable

__all__ = ["TrainableStage"]


class TrainableStage:
    """Mixin of the trainable stages (SFT, PRM, online DPO), before ``LightningModule`` in the bases.

    - The output folder is checked when fitting starts; the module's ``_save(folder, states)``
      runs on rank 0 when it ends (``states``: name → the full state dict of each of
      ``saved_modules``, gathered from every rank under FSDP2, else None; ``_save(folder)`` alone
      writes the module's own weights). The folder is ``hparams.output_dir``, else
      ``<trainer.default_root_dir>/<default_output>``.
    - ``configure_model`` shards the trained model under ``ModelParallelStrategy`` (FSDP2, one unit
      per decoder layer; configs/trainer/fsdp.yaml) and does nothing under other strategies.
    """

    default_output = "policy"

    def setup(self, stage: str) -> None:
        if stage == "fit":  # before training, not when saving after it
            check_writable("model.output_dir", self._output_dir())
        connect = getattr(getattr(self.trainer, "datamodule", None), "connect", None)
        if callable(connect):  # the data is handed what it tokenises with, not left to find it
            connect(**self.data_inputs())

    def data_inputs(self) -> dict:
        """What this stage hands its data module's ``connect``: its tokenizer (the PRM adds its
        renderer, objective and encoder)."""
        return {"tokenizer": self.tokenizer}

    def _output_dir(self) -> str:
        return self.hparams.output_dir or str(Path(self.trainer.default_root_dir) / self.default_output)

    def on_fit_end(self) -> None:
        """Gather the full weights (a collective under FSDP2, on every rank), write on rank 0."""
        from agentprm.distributed import full_state_dict

        states = {name: full_state_dict(getattr(self, name)) for name in self.saved_modules}
        if self.trainer.is_global_zero:
            self._save(self._output_dir(), states)

    saved_modules: tuple[str, ...] = ("model",)
    """Attributes whose weights ``_save`` writes; under FSDP2 they are gathered first."""

    def configure_model(self) -> None:
        """Under ``ModelParallelStrategy`` (configs/trainer/fsdp.yaml) shard the trained model one
        decoder layer at a time (FSDP2); under every other strategy do nothing."""
        from agentprm.distributed import shard_for_strategy

        model, extra = self._sharded_parts()
        shard_for_strategy(self, model=model, extra=extra, lora=self.hparams.get("lora") is not None)

    @property
    def sharded(self) -> bool:
        """Whether the module holds FSDP2 units: then every rank must run the same forwards, so
        data-dependent shortcuts (e.g. a PRM's shared-prefix pass) are off."""
        from agentprm.distributed import fsdp_modules

        return bool(fsdp_modules(self))

    def _sharded_parts(self) -> tuple:
        """The model to shard (its forward is the one the module calls) and the trained modules
        outside it (e.g. a PRM's head), each sharded as its own unit."""
        return getattr(self, self.saved_modules[0]), []
