"""LightningDataModules by stage, each in its own module:

- :mod:`~agentprm.data.sft`: demonstrations → SFT batches (:class:`SFTDataModule`);
- :mod:`~agentprm.data.episodes`: the episodes a rollout or an evaluation plays
  (:class:`RolloutDataModule`, :class:`EpisodeBatch`);
- :mod:`~agentprm.data.prm`: rollouts → the PRM objective's rows (:class:`PRMDataModule`), with the
  row and batch types in :mod:`~agentprm.data.batches`;
- :mod:`~agentprm.data.policy`: the states online DPO improves the policy at
  (:class:`PolicyDataModule`);
- :mod:`~agentprm.data.common`: what they share (:func:`spread`, :func:`read_trajectories`).

The modules that tokenise (SFT, PRM) are handed their tokenizer (and the PRM's objective and
renderer) by the stage they are trained with, through ``connect`` (called by
:class:`~agentprm.stage.TrainableStage` in ``setup``); they never reach into the trainer.
This folder also holds the package data of the built-in games (``games/``) and demonstrations
(``demos/``).
"""

from __future__ import annotations

from agentprm.data.batches import PRMBatch, PRMExample, PRMRow, RowContext, collate_prm, shared_prefix_batch
from agentprm.data.common import read_trajectories, spread
from agentprm.data.episodes import EpisodeBatch, RolloutDataModule
from agentprm.data.policy import PolicyDataModule, policy_states
from agentprm.data.prm import PRMDataModule
from agentprm.data.sft import LengthGroupedSampler, SFTDataModule, SFTExample, collate_sft, sft_examples

__all__ = [
    "EpisodeBatch",
    "LengthGroupedSampler",
    "PRMBatch",
    "PRMDataModule",
    "PRMExample",
    "PRMRow",
    "PolicyDataModule",
    "RolloutDataModule",
    "RowContext",
    "SFTDataModule",
    "SFTExample",
    "collate_prm",
    "collate_sft",
    "policy_states",
    "read_trajectories",
    "sft_examples",
    "shared_prefix_batch",
    "spread",
]
