"""``agentprm iterate``: the AgentPRM / InversePRM loop, stage after stage, resumable.

SFT π0 (unless a policy is given), then for i = 1..K: rollouts of π_{i−1} → PRM Q_i → online DPO
π_i (initialised from and regularised to π_{i−1}) → evaluation of π_i and of Best-of-N(π_i, Q_i).

Every stage is one ``agentprm fit|predict|test`` run of a per-stage config plus overrides; the
exact command is written next to its outputs (``command.txt``) so any stage reruns alone. A stage
that finished leaves ``done.json`` and is never recomputed; a killed run rerun with the same
command continues from the first unfinished stage (rollout batches already written are kept).

Layout under ``<runs_dir>/<name>/``::

    iter_0/policy/model            π0 (SFT, or a copy of the given policy's path in iterate.json)
    iter_0/eval/policy             π0 on the held-out games
    iter_<i>/rollouts              π_{i−1}'s trajectories on the training games
    iter_<i>/prm/model             Q_i
    iter_<i>/policy/model          π_i
    iter_<i>/eval/{policy,bon}     π_i alone; Best-of-N(π_i, Q_i)
    summary.json                   one row per policy π_0..π_K (see docs/metrics.md)
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

import yaml

from agentprm.errors import StageFailed, check_writable
from agentprm.records import atomic_write_json, atomic_write_text

__all__ = ["IterateConfig", "Stage", "iterate", "main"]

Method = Literal["agentprm", "inverseprm"]


@dataclasses.dataclass
class Stage:
    """One stage: a per-stage config (or several, each passed with ``-c`` in order, e.g. the
    stage's config then a callback bundle) and extra command-line overrides (``--key=value``)."""

    config: str | list[str]
    args: list[str] = dataclasses.field(default_factory=list)

    @property
    def configs(self) -> list[str]:
        return [self.config] if isinstance(self.config, str) else list(self.config)


def _default_stages() -> dict[str, Stage]:
    return {
        "sft": Stage("configs/sft/quickstart.yaml"),
        "rollout": Stage("configs/rollout/quickstart.yaml"),
        "prm": Stage("configs/prm/absolute.yaml"),
        "policy": Stage("configs/policy/quickstart.yaml"),
        "eval": Stage("configs/eval/quickstart.yaml"),
    }


@dataclasses.dataclass
class IterateConfig:
    """Settings of ``agentprm iterate``.

    Args:
        name: Run name; artifacts go under ``<runs_dir>/<name>``.
        method: ``agentprm`` (PRM from π's own rollouts, Monte-Carlo targets) or ``inverseprm``
            (PRM from expert demonstrations vs every past policy's rollouts).
        iterations: K, the number of policy improvements.
        seed: Seed of every stage (stage seeds are derived from it and the iteration).
        runs_dir: Parent of the run directory.
        policy: π0 directory; None trains it by SFT.
        trainer: Hardware fragments (e.g. ``configs/trainer/ddp.yaml``) added to every stage
            after its own config.
        stages: The stage configs (``sft``, ``rollout``, ``prm``, ``policy``, ``eval``).
        prm_init: What Q_i starts from: ``policy`` (π_{i−1}'s weights) or ``config`` (the PRM
            config's ``model``).
        accumulate_rollouts: AgentPRM: train Q_i and DPO on the rollouts of every past policy
            (else only π_{i−1}'s).
        expert: InversePRM: the demonstrations (``builtin:<set>`` or JSONL paths).
        bon_n: N of the Best-of-N evaluation (0 skips it).
        bon_sweep: Extra N values evaluated for the last policy (the success-vs-N plot).
        eval_episodes: Episodes per held-out game in every evaluation, sampled at the eval
            config's temperature with common random numbers, so that two policies' episodes pair
            up (``paired_vs_previous`` in the summary: the difference with its 95% interval and
            McNemar p-value). 0: one greedy episode per game.
        eval_train_games: Also evaluate every policy on this many training games (spread over
            the split; the games its rollouts practise), paired the same way; 0 skips it.
        isolate_stages: Run each stage in its own process (``auto``: when a trainer fragment asks
            for more than one device or a strategy, which Lightning launches per stage).
        overwrite: A finished stage whose command differs from this run's (other settings under
            the same run name) is deleted and run again, with every stage after it; off, the run
            stops at that stage and names the difference.
    """

    name: str = "quickstart"
    method: Method = "agentprm"
    iterations: int = 2
    seed: int = 0
    runs_dir: str = "runs"
    policy: str | None = None
    trainer: list[str] = dataclasses.field(default_factory=list)
    stages: dict[str, Stage] = dataclasses.field(default_factory=_default_stages)
    prm_init: Literal["policy", "config"] = "policy"
    accumulate_rollouts: bool = False
    expert: list[str] = dataclasses.field(default_factory=lambda: ["builtin:small"])
    bon_n: int = 8
    bon_sweep: list[int] = dataclasses.field(default_factory=list)
    eval_episodes: int = 8
    eval_train_games: int = 0
    isolate_stages: Literal["auto", "yes", "no"] = "auto"
    overwrite: bool = False


# --------------------------------------------------------------------------------------------
# Running one stage
# --------------------------------------------------------------------------------------------
class StageRunner:
    """Runs stages in this process (fast) or as ``agentprm`` subprocesses (multi-device).

    A stage whose folder holds ``done.json`` is skipped only if that run's command was the same;
    with another command (other settings) it stops with the difference, unless ``overwrite``
    (then the folder is emptied and the stage runs again). Once a stage runs, every later stage
    runs again too: its inputs changed. In-process, a stage is ``run(argv)`` (default
    :func:`agentprm.runner.run_stage`: the Lightning verbs), which returns the exit status.
    """

    def __init__(
        self,
        isolate: bool,
        log: Callable[[str], None],
        overwrite: bool = False,
        run: Callable[[list[str]], int] | None = None,
    ) -> None:
        self.isolate, self.log, self.overwrite, self.run = isolate, log, overwrite, run
        self.seconds: dict[str, float] = {}
        self.ran = False

    def __call__(self, key: str, folder: Path, argv: list[str]) -> bool:
        """Run ``agentprm <argv>`` unless ``folder/done.json`` holds the same command; True if it ran now."""
        import shutil

        from agentprm.provenance import SettingsChanged

        done = folder / "done.json"
        command = "agentprm " + shlex.join(argv)
        if done.is_file():
            record = json.loads(done.read_text())
            if record.get("command") == command and not self.ran:
                self.seconds[key] = record.get("seconds", 0.0)
                self.log(f"[{key}] done already, skipped ({folder})")
                return False
            if record.get("command") != command and not self.overwrite:
                changes = _argv_changes(record.get("command", ""), command)
                raise SettingsChanged(
                    f"stage {key}: {folder} was made by another command ({changes}); rerun with "
                    "--overwrite true to replace the run's stages from there, or use another --name"
                )
            shutil.rmtree(folder)  # stale: other settings, or its inputs were remade
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(folder / "command.txt", command + "\n")
        self.log(f"[{key}] {command}")
        start = time.time()
        if self.isolate:
            status = subprocess.call([sys.executable, "-m", "agentprm.cli", *argv])
        else:
            from agentprm.runner import run_stage

            try:
                status = (self.run or run_stage)(argv)  # an expected error: printed there, status 2
            except Exception:  # a bug: its traceback follows, the hint first
                self.log(f"[{key}] failed; rerun alone with: {command}")
                raise
        if status != 0:
            raise StageFailed(f"stage {key} failed (exit status {status}); rerun alone with: {command}")
        seconds = time.time() - start
        self.seconds[key] = seconds
        self.ran = True
        atomic_write_json(done, {"stage": key, "seconds": seconds, "command": command})
        self.log(f"[{key}] finished in {seconds:.0f} s")
        return True


# Settings a rerun of the same run may change: more iterations, another Best-of-N sweep, how stages run.
_RESUMABLE = ("iterations", "bon_sweep", "isolate_stages", "overwrite")


def _check_run(run: Path, cfg: IterateConfig) -> None:
    """Stop before any work when the run folder was made with other settings (``iterate.json``)."""
    from agentprm.provenance import SettingsChanged, describe_changes

    path = run / "iterate.json"
    if not path.is_file() or cfg.overwrite:
        return
    old = {k: v for k, v in json.loads(path.read_text()).items() if k not in _RESUMABLE}
    new = {k: v for k, v in json.loads(json.dumps(dataclasses.asdict(cfg))).items() if k not in _RESUMABLE}
    if old != new:
        raise SettingsChanged(
            f"run {run} was made with other settings ({describe_changes(old, new)}); rerun with "
            "--overwrite true to replace its stages where they differ, or use another --name"
        )


def _argv_changes(old: str, new: str) -> str:
    """The arguments only in the old command and only in the new one."""
    a, b = shlex.split(old), shlex.split(new)
    gone, added = [x for x in a if x not in b], [x for x in b if x not in a]
    return f"was {' '.join(gone) or '–'}, now {' '.join(added) or '–'}"


_VERBS = {"sft": "fit", "rollout": "predict", "prm": "fit", "policy": "fit", "eval": "test"}
"""The ``agentprm`` verb that runs each stage."""


def _config_flags(paths: Sequence[str]) -> list[str]:
    """``-c PATH`` for each config file, in order (later files override earlier ones)."""
    return [a for path in paths for a in ("-c", path)]


def _check_stage(name: str, stage: Stage, fragments: Sequence[str]) -> None:
    """Parse a stage's configs, the hardware fragments and its args as its command will (nothing is
    built or run), so a mistyped key or a bad value stops the loop before the first stage, not
    mid-loop. Raises ValueError naming ``stages.<name>`` and what the parser said."""
    import contextlib
    import io

    from agentprm.runner import run_lightning

    argv = [_VERBS[name], *_config_flags([*stage.configs, *fragments]), *stage.args, "--print_config"]
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            run_lightning(argv)
    except SystemExit as done:
        if done.code in (0, None):
            return
        raise ValueError(f"stages.{name}: exit status {done.code}") from None
    except ValueError as err:  # the parser's error, as one line (runner.parser_error)
        raise ValueError(f"stages.{name}: {err}") from None


def _needs_isolation(fragments: Sequence[str]) -> bool:
    for path in fragments:
        trainer = (yaml.safe_load(Path(path).read_text()) or {}).get("trainer", {}) or {}
        devices, nodes = trainer.get("devices", 1), trainer.get("num_nodes", 1)
        strategy = trainer.get("strategy", "auto")
        strategy = strategy.get("class_path", "") if isinstance(strategy, dict) else str(strategy)
        if str(devices) not in ("1", "None") or int(nodes) != 1 or strategy not in ("auto", "single_device"):
            return True
    return False


# --------------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------------
def iterate(cfg: IterateConfig, log: Callable[[str], None] = print) -> dict:
    """Run (or resume) the loop; returns the summary written to ``<run>/summary.json``."""
    missing = [s for s in ("rollout", "prm", "policy", "eval") if s not in cfg.stages]
    if cfg.policy is None and "sft" not in cfg.stages:
        missing.append("sft")
    if missing:
        raise ValueError(f"iterate: stages {missing} have no config (stages.<name>.config)")
    if cfg.iterations < 0:
        raise ValueError(f"iterations must be >= 0, found {cfg.iterations}")
    for name, stage in cfg.stages.items():
        if not stage.configs:
            raise ValueError(f"stages.{name}.config: no config file given")
        for config in stage.configs:
            if not Path(config).is_file():
                raise FileNotFoundError(f"stages.{name}.config: {config} does not exist")
    for fragment in cfg.trainer:
        if not Path(fragment).is_file():
            raise FileNotFoundError(f"trainer: {fragment} does not exist")
    if cfg.policy is not None and not (Path(cfg.policy) / "config.json").is_file():
        raise FileNotFoundError(f"policy: {cfg.policy} is not a model directory (no config.json there)")
    for name in ("sft", "rollout", "prm", "policy", "eval"):
        if name in cfg.stages and (name != "sft" or cfg.policy is None):
            _check_stage(name, cfg.stages[name], cfg.trainer)
    check_writable("runs_dir", Path(cfg.runs_dir) / cfg.name)
    run = Path(cfg.runs_dir) / cfg.name
    run.mkdir(parents=True, exist_ok=True)
    _check_run(run, cfg)
    atomic_write_json(run / "iterate.json", dataclasses.asdict(cfg))
    isolate = cfg.isolate_stages == "yes" or (cfg.isolate_stages == "auto" and _needs_isolation(cfg.trainer))
    runner = StageRunner(isolate, log, cfg.overwrite)

    def argv(stage: str, root: Path, i: int, *extra: str, last: Sequence[str] = ()) -> list[str]:
        """The stage's command: its verb, its configs, the hardware fragments, the loop's settings
        (``extra``), the stage's own ``args``, then ``last`` (loop settings that a stage's args must
        not undo)."""
        spec = cfg.stages[stage]
        return [
            _VERBS[stage],
            *_config_flags([*spec.configs, *cfg.trainer]),
            f"--seed_everything={cfg.seed * 1000 + i}",
            f"--trainer.default_root_dir={root}",
            *extra,
            *spec.args,
            *last,
        ]

    # π0
    policy = run / "iter_0" / "policy" / "model"
    if cfg.policy is None:
        root = run / "iter_0" / "policy"
        runner("iter_0/sft", root, argv("sft", root, 0, f"--model.init_args.output_dir={policy}"))
    else:
        policy = Path(cfg.policy)
    rows = [_evaluate(runner, argv, run, 0, policy, None, cfg)]
    _write_summary(run, cfg, rows, runner, log)

    rollouts: list[Path] = []
    for i in range(1, cfg.iterations + 1):
        it = run / f"iter_{i}"
        # Rollouts of π_{i−1} on the training games.
        out = it / "rollouts"
        runner(
            f"iter_{i}/rollout",
            out,
            argv(
                "rollout",
                out,
                i,
                f"--model.init_args.model={policy}",
                f"--model.init_args.output_dir={out}",
                f"--model.init_args.policy_id=pi_{i - 1}",
                f"--model.init_args.seed={cfg.seed * 1000 + i}",
            ),
        )
        rollouts.append(out)
        # AgentPRM trains Q_i and DPO on π_{i−1}'s rollouts, or on every past policy's.
        used = ",".join(map(str, rollouts if cfg.accumulate_rollouts else [out]))
        # Q_i.
        prm = it / "prm" / "model"
        extra = [f"--model.init_args.output_dir={prm}"]
        if cfg.prm_init == "policy":
            extra.append(f"--model.init_args.model={policy}")
        if cfg.method == "inverseprm":
            # The stage config's objective becomes InversePRM's; jsonargparse keeps the arguments
            # both classes take (gamma), so the discount of the stage config carries over.
            extra += [
                "--model.init_args.objective=agentprm.objectives.InverseObjective",
                f"--model.init_args.objective.init_args.expert=[{','.join(cfg.expert)}]",
                f"--model.init_args.objective.init_args.next_policy={policy}",
                f"--data.init_args.rollouts=[{','.join(map(str, rollouts))}]",
            ]
        else:
            extra.append(f"--data.init_args.rollouts=[{used}]")
        runner(f"iter_{i}/prm", it / "prm", argv("prm", it / "prm", i, *extra))
        # π_i by online DPO against Q_i, from and towards π_{i−1}.
        new_policy = it / "policy" / "model"
        runner(
            f"iter_{i}/policy",
            it / "policy",
            argv(
                "policy",
                it / "policy",
                i,
                f"--model.init_args.model={policy}",
                f"--model.init_args.prm={prm}",
                f"--model.init_args.output_dir={new_policy}",
                f"--model.init_args.seed={cfg.seed * 1000 + i}",
                f"--data.init_args.rollouts=[{used}]",
            ),
        )
        policy = new_policy
        rows.append(_evaluate(runner, argv, run, i, policy, prm, cfg))
        _write_summary(run, cfg, rows, runner, log)
    if cfg.bon_sweep and cfg.iterations > 0:
        _bon_sweep(runner, argv, run, cfg.iterations, policy, run / f"iter_{cfg.iterations}/prm/model", cfg)
    return _write_summary(run, cfg, rows, runner, log, final=True)


def _sampling(cfg: IterateConfig) -> list[str]:
    """Overrides of every evaluation: sampled episodes per game, or one greedy episode."""
    if cfg.eval_episodes <= 0:
        return ["--model.init_args.greedy=true", "--data.init_args.rollouts_per_game=1"]
    return ["--model.init_args.greedy=false", f"--data.init_args.rollouts_per_game={cfg.eval_episodes}"]


def _evaluate(runner, argv, run: Path, i: int, policy: Path, prm: Path | None, cfg: IterateConfig) -> dict:
    """π_i alone and, with a PRM, Best-of-N(π_i, Q_i), paired with π_{i−1}; one summary row."""
    ev = run / f"iter_{i}" / "eval"
    common = [f"--model.init_args.model={policy}", f"--model.init_args.policy_id=pi_{i}", *_sampling(cfg)]
    out = ev / "policy"
    runner(
        f"iter_{i}/eval",
        out,
        argv(
            "eval",
            out,
            i,
            *common,
            "--model.init_args.prm=null",
            f"--model.init_args.output_dir={out}",
        ),
    )
    alone = json.loads((out / "summary.json").read_text())
    row = {
        "iteration": i,
        "policy": str(policy),
        "policy_success_rate": alone["success_rate"],
        "policy_ci": alone["wilson95"],
        "mean_actions": alone["mean_actions"],
        "episodes": alone["episodes"],
        "per_task_type": {
            k: {"success_rate": v["success_rate"], "n": v["episodes"]}
            for k, v in alone["per_task_type"].items()
        },
        "paired_vs_previous": _paired(run / f"iter_{i - 1}" / "eval" / "policy", out) if i else None,
        "bon_success_rate": None,
        "bon_ci": None,
        "bon_n": None,
        "bon_vs_policy": None,
        "prm_pair_acc": None,
        "prm_ece": None,
    }
    if cfg.eval_train_games > 0:
        train = ev / "train"
        runner(
            f"iter_{i}/eval-train",
            train,
            argv(
                "eval",
                train,
                i,
                *common,
                "--model.init_args.prm=null",
                f"--model.init_args.output_dir={train}",
                # the training games the loop names, whatever max_games the held-out stage sets
                last=("--data.init_args.split=train", f"--data.init_args.max_games={cfg.eval_train_games}"),
            ),
        )
        row["train_success_rate"] = json.loads((train / "summary.json").read_text())["success_rate"]
        row["train_paired_vs_previous"] = (
            _paired(run / f"iter_{i - 1}" / "eval" / "train", train) if i else None
        )
    if prm is not None:
        row.update(_prm_metrics(run / f"iter_{i}" / "prm"))
        if cfg.bon_n > 0:
            bon = _bon(runner, argv, ev / "bon", i, common, prm, cfg.bon_n)
            row.update(
                bon_success_rate=bon["success_rate"],
                bon_ci=bon["wilson95"],
                bon_n=cfg.bon_n,
                bon_vs_policy=_paired(out, ev / "bon"),
            )
    return row


def _paired(before: Path, after: Path) -> dict | None:
    """The paired difference after − before of two evaluations of the same episodes (None if
    either is missing or they played different episodes)."""
    from agentprm.compare import paired_difference, read_results

    try:
        return paired_difference(read_results(before), read_results(after))
    except (FileNotFoundError, ValueError):
        return None


def _bon(runner, argv, out: Path, i: int, common: list[str], prm: Path, n: int) -> dict:
    runner(
        f"iter_{i}/eval-bon{n}",
        out,
        argv(
            "eval",
            out,
            i,
            *common,
            f"--model.init_args.prm={prm}",
            f"--model.init_args.best_of_n={n}",
            "--model.init_args.greedy=false",
            f"--model.init_args.output_dir={out}",
        ),
    )
    return json.loads((out / "summary.json").read_text())


def _bon_sweep(runner, argv, run: Path, i: int, policy: Path, prm: Path, cfg: IterateConfig) -> None:
    common = [f"--model.init_args.model={policy}", f"--model.init_args.policy_id=pi_{i}", *_sampling(cfg)]
    ev = run / f"iter_{i}" / "eval"
    rows = []
    for n in sorted(set(cfg.bon_sweep) | ({cfg.bon_n} if cfg.bon_n else set())):
        s = _bon(runner, argv, ev / ("bon" if n == cfg.bon_n else f"bon{n}"), i, common, prm, n)
        rows.append({"n": n, "success_rate": s["success_rate"], "ci": s["wilson95"]})
    atomic_write_json(ev / "bon_sweep.json", rows)


def _prm_metrics(prm_root: Path) -> dict:
    """The PRM's last validation pair accuracy and ECE, from its metrics.csv."""
    found: dict = {"prm_pair_acc": None, "prm_ece": None}
    for path in sorted(prm_root.glob("lightning_logs/version_*/metrics.csv")):
        for r in csv.DictReader(path.open()):
            if r.get("val/pair_acc"):
                found["prm_pair_acc"] = float(r["val/pair_acc"])
            if r.get("val/ece"):
                found["prm_ece"] = float(r["val/ece"])
    return found


def _write_summary(run: Path, cfg: IterateConfig, rows: list[dict], runner, log, final: bool = False) -> dict:
    for row in rows:
        i = row["iteration"]
        row["stage_seconds"] = {
            k.split("/", 1)[1]: round(v, 1) for k, v in runner.seconds.items() if k.startswith(f"iter_{i}/")
        }
    summary = {"name": cfg.name, "method": cfg.method, "seed": cfg.seed, "iterations": rows}
    atomic_write_json(run / "summary.json", summary)
    if final:
        log(format_table(summary))
    return summary


def format_table(summary: dict) -> str:
    """The per-iteration table printed at the end of ``agentprm iterate``.

    Δ is the paired difference with the previous policy on the same episodes (95% interval,
    McNemar p); ΔBoN is Best-of-N's over the policy alone.
    """

    def pct(v) -> str:
        return "   –  " if v is None else f"{100 * v:5.1f}%"

    def delta(d) -> str:
        if not d:
            return " " * 27
        lo, hi = d["ci95"]
        return (
            f"{100 * d['difference']:+5.1f} [{100 * lo:+5.1f},{100 * hi:+5.1f}] p={d['p_value']:.2g}".ljust(
                27
            )
        )

    lines = [
        f"{summary['method']} run {summary['name']!r} (seed {summary['seed']})",
        "iter  policy  (95% CI)        Δ vs previous (paired)       BoN     ΔBoN vs policy         "
        "actions  PRM pair-acc",
    ]
    for r in summary["iterations"]:
        lo, hi = r["policy_ci"]
        acc = "   –" if r["prm_pair_acc"] is None else f"{r['prm_pair_acc']:.2f}"
        lines.append(
            f"{r['iteration']:>4}  {pct(r['policy_success_rate'])}  [{100 * lo:4.1f}, {100 * hi:4.1f}]  "
            f"{delta(r.get('paired_vs_previous'))}  {pct(r['bon_success_rate'])}  "
            f"{delta(r.get('bon_vs_policy'))}  {r['mean_actions']:5.1f}    {acc}"
        )
        if r.get("train_success_rate") is not None:
            train = delta(r.get("train_paired_vs_previous"))
            lines.append(f"      train games: {pct(r['train_success_rate'])}  {train}")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------
def main(argv: Sequence[str]) -> int:
    """``agentprm iterate --config configs/quickstart.yaml [--iterations 3] [--seed 1] …``."""
    from jsonargparse import ActionConfigFile, ArgumentParser

    parser = ArgumentParser(
        prog="agentprm iterate",
        description="The AgentPRM / InversePRM loop: SFT → (rollouts → PRM → online DPO → eval) × K. "
        "Rerun the same command to resume.",
        parser_mode="omegaconf",
    )
    parser.add_argument("--config", action=ActionConfigFile, help="e.g. configs/quickstart.yaml")
    parser.add_class_arguments(IterateConfig, nested_key=None, fail_untyped=True)
    ns = parser.parse_args(list(argv))
    init = parser.instantiate_classes(ns)
    fields = {f.name for f in dataclasses.fields(IterateConfig)}
    cfg = IterateConfig(**{k: v for k, v in vars(init).items() if k in fields})
    cfg.stages = {k: v if isinstance(v, Stage) else Stage(**dict(v)) for k, v in cfg.stages.items()}
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    iterate(cfg)  # expected errors (SettingsChanged, StageFailed, …): one line, by cli.main
    return 0
