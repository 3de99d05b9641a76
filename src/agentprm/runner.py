"""Run one stage: Lightning's CLI over the project's modules (``agentprm fit|test|predict|validate``).

The console script (:mod:`agentprm.cli`, inside its own error reporting) calls :func:`run_lightning`;
the loop (:mod:`agentprm.iterate`, stages in-process) calls :func:`run_stage`; so neither of those
two imports the other.
"""

from __future__ import annotations

__all__ = ["parser_error", "remove_empty_log_dirs", "run_lightning", "run_stage"]


def run_stage(argv: list[str]) -> int:
    """A stage as ``agentprm <verb> …`` runs it: an expected error is printed as one line
    ``agentprm <verb>: …`` and gives exit status 2 (see :func:`agentprm.errors.report_errors`)."""
    from agentprm.errors import report_errors

    return report_errors(f"agentprm {argv[0]}", lambda: run_lightning(argv))


def run_lightning(argv: list[str]) -> int:
    """Run Lightning's CLI on ``argv`` (the verb first).

    A run that fails leaves no empty ``lightning_logs/version_N`` folder behind (Lightning makes it
    before the stage's own setup runs). A command the parser refuses (an unknown key or class_path, a
    value of the wrong type) raises ``ValueError`` with the gist of jsonargparse's report as one line
    (:func:`parser_error`), e.g. ``model.objective: Option 'delta' is not accepted``.
    """
    from lightning.pytorch import LightningDataModule, LightningModule
    from lightning.pytorch.cli import LightningCLI

    trainers = []

    class CLI(LightningCLI):
        def parse_arguments(self, parser, args) -> None:
            import contextlib
            import io
            import sys

            err = io.StringIO()
            try:
                with contextlib.redirect_stderr(err):
                    super().parse_arguments(parser, args)
            except SystemExit as done:
                if done.code in (0, None):  # --help, --print_config
                    raise
                raise ValueError(parser_error(err.getvalue(), done.code)) from None
            finally:
                sys.stderr.write(err.getvalue() if "error: " not in err.getvalue() else "")

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
    """Remove the loggers' version folders (and their parents) that a failed run left empty, or
    holding only the ``config.yaml`` the CLI writes when setup starts (nothing ran)."""
    import contextlib
    from pathlib import Path

    for logger in trainer.loggers:
        folder = getattr(logger, "log_dir", None)
        if (
            folder
            and [p.name for p in Path(folder).glob("*")] == ["config.yaml"]
            and trainer.global_step == 0
        ):
            (Path(folder) / "config.yaml").unlink()
        for path in (Path(folder), Path(folder).parent) if folder else ():
            with contextlib.suppress(OSError):  # not there, or not empty: kept
                path.rmdir()


def parser_error(text: str, code) -> str:
    """The gist of a jsonargparse error report: the key, what it expected and what it was given."""
    import re

    lines = [line.strip() for line in text.splitlines() if line.strip()]
    start = next((i for i, line in enumerate(lines) if line.startswith("error: ")), None)
    if start is None:
        return lines[-1] if lines else f"exit status {code}"
    report = [lines[start][len("error: ") :], *lines[start + 1 :]]
    # Nested keys (a class_path argument's own arguments) name the whole path: model.objective.
    keys = re.findall(r'Parser key "([^"]+)"', "\n".join(report))
    key = f"{'.'.join(dict.fromkeys(keys))}: " if keys else ""
    if refused := next((line for line in report if "not accepted" in line), None):
        return key + refused.lstrip("- ")
    said = ("has no attribute", "Expected a dot import path", "Expected a typing.Literal")
    if wrong := next((line for line in report if any(s in line for s in said)), None):
        return key + wrong.lstrip("- ")  # an unknown class_path or a value outside a Literal
    expected = [t.replace("NoneType", "None") for t in re.findall(r"Expected a <class '([^']+)'>", text)]
    given = next((line.split(":", 1)[1].strip() for line in report if line.startswith("Given value:")), None)
    if expected and given is not None:
        return f"{key}expected {' or '.join(expected)}, given {given!r}"
    plain = [line for line in report[1:] if not line.startswith(("Subtypes:", "Errors:", "Given"))]
    return key + (plain[0].lstrip("- ") if plain else report[0])
