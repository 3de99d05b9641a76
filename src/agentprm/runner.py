"""Run one stage: Lightning's CLI over the project's modules (``agentprm fit|test|predict|validate``).

The console script (:mod:`agentprm.cli`, inside its own error reporting) calls :func:`run_lightning`;
the loop (:mod:`agentprm.iterate`, stages in-process) calls :func:`run_stage`; so neither of those
two imports the other.
"""

from __future__ import annotations

__all__ = ["remove_empty_log_dirs", "run_lightning", "run_stage"]


def run_stage(argv: list[str]) -> int:
    """A stage as ``agentprm <verb> …`` runs it: an expected error is printed as one line
    ``agentprm <verb>: …`` and gives exit status 2 (see :func:`agentprm.errors.report_errors`)."""
    from agentprm.errors import report_errors

    return report_errors(f"agentprm {argv[0]}", lambda: run_lightning(argv))


def run_lightning(argv: list[str]) -> int:
    """Run Lightning's CLI on ``argv`` (the verb first).

    A run that fails leaves no empty ``lightning_logs/version_N`` folder behind (Lightning makes it
    before the stage's own setup runs).
    """
    from lightning.pytorch import LightningDataModule, LightningModule
    from lightning.pytorch.cli import LightningCLI

    trainers = []

    class CLI(LightningCLI):
        def instantiate_trainer(self, **kwargs):
            trainers.append(super().instantiate_trainer(**kwargs))
            return trainers[-1]

    try:
        CLI(
            LightningModule,
            LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            args=argv,
            save_config_kwargs={"overwrite": True},
            parser_kwargs={"parser_mode": "omegaconf"},
        )
    except BaseException:
        for trainer in trainers:
            remove_empty_log_dirs(trainer)
        raise
    return 0


def remove_empty_log_dirs(trainer) -> None:
    """Remove the loggers' version folders (and their parents) that a failed run left empty."""
    import contextlib
    from pathlib import Path

    for logger in trainer.loggers:
        folder = getattr(logger, "log_dir", None)
        for path in (Path(folder), Path(folder).parent) if folder else ():
            with contextlib.suppress(OSError):  # not there, or not empty: kept
                path.rmdir()
