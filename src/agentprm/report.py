"""Plots and a Markdown summary of an ``agentprm iterate`` run directory.

``write_report(run_dir)`` (the ``agentprm report runs/<name>`` command) reads the run directory and
writes ``<run_dir>/report/``: ``report.md`` and up to four PNG plots (Matplotlib, Agg canvas, no
pyplot state). The run directory contract (written by ``agentprm iterate``):

- ``summary.json`` (required): ``{"name", "method", "iterations": [...]}``, one object per policy
  π_0..π_K with ``iteration``, ``policy_success_rate``, ``policy_ci``, ``bon_success_rate``,
  ``bon_ci``, ``bon_n``, ``mean_actions``, ``prm_pair_acc``, ``prm_ece``, ``per_task_type``
  (``{type: {"success_rate", "n"}}``) and ``stage_seconds`` (``{stage: seconds}``); π_0 has null
  PRM and Best-of-N fields.
- ``iter_<i>/policy/**/metrics.csv`` (optional): the CSVLogger file(s) of iteration i's online-DPO
  stage, with ``step`` and any of ``eval/success_rate``, ``dpo/prm_score``, ``monitor/prm_score``.
- ``iter_<i>/eval/bon_sweep.json`` (optional): ``[{"n", "success_rate", "ci"}, ...]``.
- ``iter_<i>/prm/calibration.json`` or ``iter_<i>/prm/model/calibration.json`` (optional, the PRM
  stage writes the latter): ``{"ece", "bins": [{"bin", "count",
  "mean_prediction", "mean_target"}, ...]}``.

A missing optional file leaves its plot or curve out, with a note in ``report.md``; a missing or
malformed ``summary.json``, or a malformed optional file, raises an error naming the file.
"""

from __future__ import annotations

import csv
import json
import os
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentprm.records import atomic_write_text

__all__ = ["PLOT_FILES", "RunData", "dpo_step_offsets", "load_run", "read_metrics_csv", "write_report"]

REPORT_DIR = "report"
PLOT_FILES = {
    "success": "success_per_iteration.png",
    "dpo": "dpo_success_vs_prm_score.png",
    "bon": "best_of_n_sweep.png",
    "calibration": "prm_calibration.png",
}
"""The plots, by kind, as file names inside ``<run_dir>/report/``."""

_CURVE_COLUMNS = ("eval/success_rate", "dpo/prm_score", "val/prm_score", "monitor/prm_score")
_WRITER = "`agentprm iterate`"

Curve = list[tuple[int, float]]


@dataclass
class RunData:
    """What the report reads from one run directory.

    Attributes:
        run_dir: The run directory.
        name: The run's name (``summary.json``; the directory name when absent).
        method: ``"agentprm"`` or ``"inverseprm"`` (``"?"`` when absent).
        iterations: The ``summary.json`` iteration objects, sorted by ``iteration``.
        curves: Iteration → metric column → ``(step, value)`` points from the DPO ``metrics.csv``.
        bon_sweeps: Iteration → Best-of-N sweep rows ``{"n", "success_rate", "ci"}``, sorted by n.
        calibrations: Iteration → ``{"ece", "bins"}``.
        notes: Human-readable notes on optional pieces that are missing.
    """

    run_dir: Path
    name: str
    method: str
    iterations: list[dict[str, Any]]
    curves: dict[int, dict[str, Curve]] = field(default_factory=dict)
    bon_sweeps: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    calibrations: dict[int, dict[str, Any]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def write_report(run_dir: str | os.PathLike) -> Path:
    """Write ``<run_dir>/report/report.md`` and its PNG plots; return the path of ``report.md``.

    Raises:
        FileNotFoundError: ``run_dir`` or its ``summary.json`` does not exist.
        ValueError: ``summary.json`` or an optional file is malformed (the message names the file).
    """
    run = load_run(run_dir)
    out = run.run_dir / REPORT_DIR
    out.mkdir(parents=True, exist_ok=True)
    drawn = {
        "success": _plot_success(run),
        "dpo": _plot_dpo(run) if any(c.get(k) for c in run.curves.values() for k in _CURVE_COLUMNS) else None,
        "bon": _plot_bon(run) if run.bon_sweeps else None,
        "calibration": _plot_calibration(run) if run.calibrations else None,
    }
    for kind, fig in drawn.items():
        path = out / PLOT_FILES[kind]
        if fig is None:
            path.unlink(missing_ok=True)  # no stale plot from an earlier report
        else:
            _save_png(fig, path)
    report = out / "report.md"
    atomic_write_text(report, _markdown(run, {k for k, fig in drawn.items() if fig is not None}))
    return report


# ---------------------------------------------------------------------------------------------- reading


def load_run(run_dir: str | os.PathLike) -> RunData:
    """Read a run directory (see the module docstring for its layout)."""
    root = Path(run_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such run directory; {_WRITER} creates runs/<name>/")
    summary_path = root / "summary.json"
    if not summary_path.is_file():
        raise FileNotFoundError(
            f"{summary_path}: missing; {_WRITER} writes it after evaluating each policy π_i "
            "(a run that has not finished evaluating π_0 has nothing to report)"
        )
    summary = _read_json(summary_path)
    iterations = summary.get("iterations") if isinstance(summary, dict) else None
    if not isinstance(iterations, list) or not iterations:
        raise ValueError(f"{summary_path}: expected an object with a non-empty 'iterations' list")
    for k, item in enumerate(iterations):
        for key in ("iteration", "policy_success_rate"):
            if not isinstance(item, dict) or not isinstance(item.get(key), int | float):
                raise ValueError(f"{summary_path}: iterations[{k}] needs a number under {key!r}")
    run = RunData(
        run_dir=root,
        name=str(summary.get("name") or root.name),
        method=str(summary.get("method") or "?"),
        iterations=sorted(iterations, key=lambda item: item["iteration"]),
    )
    for item in run.iterations:
        _load_iteration(run, int(item["iteration"]))
    return run


def _load_iteration(run: RunData, i: int) -> None:
    """Read iteration ``i``'s optional files into ``run``, noting what is missing (π_0 has no DPO/PRM)."""
    base = run.run_dir / f"iter_{i}"
    policy = base / "policy"
    # iter_0/policy is π0's SFT (or a given policy): its steps are not online-DPO steps.
    files = sorted(policy.rglob("metrics.csv"), key=_natural_key) if policy.is_dir() and i > 0 else []
    if files:
        run.curves[i] = _merge_curves([read_metrics_csv(p) for p in files])
        curves = run.curves[i]
        absent = [] if curves.get("eval/success_rate") else ["eval/success_rate"]
        if not any(curves.get(c) for c in _CURVE_COLUMNS[1:]):
            absent.append("a PRM score (" + ", ".join(_CURVE_COLUMNS[1:]) + ")")
        if absent:
            run.notes.append(f"iteration {i}: {', '.join(absent)} not logged in {_rel(run, files[-1])}.")
    elif i > 0:
        run.notes.append(
            f"iteration {i}: no metrics.csv under {_rel(run, policy)} (the online-DPO stage's CSVLogger "
            "writes it); its DPO curve is left out."
        )
    sweep = base / "eval" / "bon_sweep.json"
    if sweep.is_file():
        run.bon_sweeps[i] = _read_sweep(sweep)
    elif i > 0:
        run.notes.append(f"iteration {i}: no {_rel(run, sweep)} (Best-of-N sweep); left out of the N plot.")
    calibration = base / "prm" / "calibration.json"
    if not calibration.is_file() and (base / "prm" / "model" / "calibration.json").is_file():
        calibration = base / "prm" / "model" / "calibration.json"  # where the PRM stage writes it
    if calibration.is_file():
        run.calibrations[i] = _read_calibration(calibration)
    elif i > 0:
        run.notes.append(
            f"iteration {i}: no {_rel(run, calibration)} (PRM reliability bins); left out of the "
            "calibration plot."
        )


def read_metrics_csv(path: str | os.PathLike) -> dict[str, Curve]:
    """Read a Lightning ``CSVLogger`` ``metrics.csv`` into column → sorted ``(step, value)`` points.

    Rows are sparse (each logging call fills its own columns); empty and non-numeric cells are
    skipped. A step logged twice keeps its last value.

    Raises:
        ValueError: The file has no ``step`` column or a row has a non-integer step.
    """
    path = Path(path)
    columns: dict[str, dict[int, float]] = {}
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or "step" not in reader.fieldnames:
            raise ValueError(f"{path}: no 'step' column; expected a Lightning CSVLogger metrics.csv")
        for line, row in enumerate(reader, start=2):
            try:
                step = int(float(row["step"]))
            except (TypeError, ValueError):
                raise ValueError(f"{path}:{line}: step {row['step']!r} is not a number") from None
            for key, cell in row.items():
                if key in ("step", "epoch") or key is None or cell in (None, ""):
                    continue
                try:
                    columns.setdefault(key, {})[step] = float(cell)
                except ValueError:
                    continue
    return {key: sorted(points.items()) for key, points in columns.items()}


def _merge_curves(parts: Sequence[dict[str, Curve]]) -> dict[str, Curve]:
    """Merge the metrics of several CSVLogger versions (a resumed stage); later files win per step."""
    merged: dict[str, dict[int, float]] = {}
    for part in parts:
        for key, points in part.items():
            merged.setdefault(key, {}).update(points)
    return {key: sorted(points.items()) for key, points in merged.items()}


def _read_sweep(path: Path) -> list[dict[str, Any]]:
    rows = _read_json(path)
    if not isinstance(rows, list):
        raise ValueError(f"{path}: expected a list of {{'n', 'success_rate', 'ci'}} objects")
    for k, row in enumerate(rows):
        if not isinstance(row, dict) or not isinstance(row.get("n"), int):
            raise ValueError(f"{path}: item {k} needs an integer 'n'")
        if not isinstance(row.get("success_rate"), int | float):
            raise ValueError(f"{path}: item {k} needs a number under 'success_rate'")
    return sorted(rows, key=lambda row: row["n"])


def _read_calibration(path: Path) -> dict[str, Any]:
    data = _read_json(path)
    bins = data.get("bins") if isinstance(data, dict) else None
    if not isinstance(bins, list):
        raise ValueError(f"{path}: expected an object with a 'bins' list")
    for k, b in enumerate(bins):
        for key in ("mean_prediction", "mean_target"):
            if not isinstance(b, dict) or not isinstance(b.get(key), int | float):
                raise ValueError(f"{path}: bins[{k}] needs a number under {key!r}")
    return data


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}:{err.lineno}: not valid JSON ({err.msg})") from None


def _natural_key(path: Path) -> list[Any]:
    """Sort ``version_2`` before ``version_10``."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(path))]


def _rel(run: RunData, path: Path) -> str:
    return str(path.relative_to(run.run_dir))


# ---------------------------------------------------------------------------------------------- plots


def _figure(width: float = 7.0, height: float = 4.5, rows: int = 1):
    """A standalone Agg figure (no pyplot global state) and its axes."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, 1, sharex=True, squeeze=False)[:, 0]
    return fig, list(axes)


def _save_png(fig: Any, path: Path) -> None:
    """Save atomically (temporary file in the same directory, then rename)."""
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".png", dir=path.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, format="png")
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def _color(i: int) -> str:
    return f"C{i % 10}"


def _errorbar(ax: Any, points: list[tuple[float, float, Any]], fmt: str, color: str, label: str) -> None:
    """``(x, success rate, CI)`` points in percent, the CI as asymmetric error bars (none where absent)."""
    xs, ys = [x for x, _, _ in points], [100 * r for _, r, _ in points]
    low = [100 * max(0.0, r - ci[0]) if _is_ci(ci) else 0.0 for _, r, ci in points]
    high = [100 * max(0.0, ci[1] - r) if _is_ci(ci) else 0.0 for _, r, ci in points]
    ax.errorbar(xs, ys, yerr=[low, high], fmt=fmt, color=color, label=label, capsize=4, linewidth=1.8)


def _is_ci(ci: Any) -> bool:
    return isinstance(ci, list | tuple) and len(ci) == 2 and all(isinstance(v, int | float) for v in ci)


def _percent_axis(ax: Any, label: str) -> None:
    ax.set_ylabel(label)
    ax.set_ylim(-3, 103)
    ax.grid(alpha=0.3)


def _plot_success(run: RunData) -> Any:
    fig, (ax,) = _figure()
    its = run.iterations
    policy = [(it["iteration"], it["policy_success_rate"], it.get("policy_ci")) for it in its]
    _errorbar(ax, policy, "o-", "C0", "policy π_i alone")
    bon = [it for it in its if isinstance(it.get("bon_success_rate"), int | float)]
    if bon:
        ns = sorted({it.get("bon_n") for it in bon if it.get("bon_n")})
        label = f"Best-of-N with PRM Q_i (N = {ns[0]})" if len(ns) == 1 else "Best-of-N with PRM Q_i"
        points = [(it["iteration"] + 0.06, it["bon_success_rate"], it.get("bon_ci")) for it in bon]
        _errorbar(ax, points, "s--", "C1", label)
    ax.set_xticks([x for x, _, _ in policy], [f"π_{x}" for x, _, _ in policy])
    ax.set_xlabel("iteration (policy π_i; π_0 = SFT)")
    _percent_axis(ax, "success rate on held-out games (%)")
    ax.set_title(f"{run.name}: success per iteration ({run.method}), 95% Wilson CIs")
    ax.legend(loc="best")
    return fig


def dpo_step_offsets(curves: dict[int, dict[str, Curve]]) -> dict[int, int]:
    """Where each iteration's DPO steps start on the cumulative axis: iteration order, each one after
    the last step (of any column) of the previous one. Iterations without points are left out.

    Example: last steps 9, 4 and 7 in iterations 1, 2 and 3 give ``{1: 0, 2: 10, 3: 15}``.
    """
    offsets, offset = {}, 0
    for i in sorted(curves):
        steps = [step for points in curves[i].values() for step, _ in points]
        if steps:
            offsets[i] = offset
            offset += max(steps) + 1
    return offsets


def _plot_dpo(run: RunData) -> Any:
    """Held-out success (top) and PRM score (bottom) against the cumulative DPO step: the reward-hacking
    view (a PRM score that climbs while success stalls or falls)."""
    from matplotlib.lines import Line2D

    fig, (top, bottom) = _figure(height=6.0, rows=2)
    styles = {"dpo/prm_score": "-", "val/prm_score": "o:", "monitor/prm_score": "s--"}
    for i, offset in dpo_step_offsets(run.curves).items():
        curve, color = run.curves[i], _color(i)
        if points := curve.get("eval/success_rate"):
            xs, ys = [offset + s for s, _ in points], [100 * v for _, v in points]
            top.plot(xs, ys, "o-", color=color, label=f"iteration {i}")
        for column, style in styles.items():
            if points := curve.get(column):
                xs, ys = [offset + s for s, _ in points], [v for _, v in points]
                bottom.plot(xs, ys, style, color=color, markersize=4)
        for ax in (top, bottom):
            ax.axvline(offset, color="grey", linewidth=0.8, linestyle=":")
        top.text(offset, 0.97, f" iter {i}", transform=top.get_xaxis_transform(), va="top", color=color)
    _percent_axis(top, "held-out success (%)")
    top.set_title(f"{run.name}: online DPO — success and PRM score", fontsize=10)
    if top.get_legend_handles_labels()[0]:
        top.legend(loc="best", fontsize=8)
    else:
        message = "eval/success_rate not logged (no evaluation callback)"
        top.text(0.5, 0.5, message, ha="center", transform=top.transAxes, color="grey")
    bottom.set_ylabel("mean PRM score Q(s, a)")
    bottom.set_xlabel("online-DPO optimizer step (cumulative)")
    bottom.grid(alpha=0.3)
    handles = [
        Line2D([], [], color="grey", linestyle="-", label="dpo/prm_score (policy's training samples)"),
        Line2D([], [], color="grey", linestyle=":", marker="o", label="val/prm_score (held-out states)"),
        Line2D(
            [], [], color="grey", linestyle="--", marker="s", label="monitor/prm_score (monitor's states)"
        ),
    ]
    bottom.legend(handles=handles, loc="best", fontsize=8)
    return fig


def _plot_bon(run: RunData) -> Any:
    fig, (ax,) = _figure()
    sweeps = [(i, rows) for i, rows in sorted(run.bon_sweeps.items()) if rows]
    ns = sorted({row["n"] for _, rows in sweeps for row in rows})
    for k, (i, rows) in enumerate(sweeps):
        shift = 2 ** (0.04 * (k - (len(sweeps) - 1) / 2))  # side by side, so the error bars stay apart
        points = [(row["n"] * shift, row["success_rate"], row.get("ci")) for row in rows]
        _errorbar(ax, points, "o-", _color(i), f"π_{i} + PRM Q_{i}")
    if ns:
        ax.set_xscale("log", base=2)
        ax.set_xticks(ns, [str(n) for n in ns])
        ax.legend(loc="best")
    ax.set_xlabel("N (candidate actions scored by the PRM per step; log scale)")
    _percent_axis(ax, "success rate on held-out games (%)")
    ax.set_title(f"{run.name}: Best-of-N success vs N, 95% Wilson CIs")
    return fig


def _plot_calibration(run: RunData) -> Any:
    fig, (ax,) = _figure(width=5.8, height=5.4)
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfect calibration")
    for i, cal in sorted(run.calibrations.items()):
        bins = sorted(cal["bins"], key=lambda b: b["mean_prediction"])
        ece = cal.get("ece")
        label = f"Q_{i} (ECE {ece:.3f})" if isinstance(ece, int | float) else f"Q_{i}"
        xs, ys = [b["mean_prediction"] for b in bins], [b["mean_target"] for b in bins]
        ax.plot(xs, ys, "o-", color=_color(i), label=label)
    ax.set(xlim=(0, 1), ylim=(0, 1), aspect="equal", title=f"{run.name}: PRM reliability (held-out)")
    ax.set_xlabel("mean predicted Q in the bin (0–1)")
    ax.set_ylabel("mean target Q in the bin (0–1)")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    return fig


# ---------------------------------------------------------------------------------------------- markdown


def _num(value: Any, digits: int = 3) -> str:
    return f"{value:.{digits}f}" if isinstance(value, int | float) and not isinstance(value, bool) else "—"


def _rate(rate: Any, ci: Any) -> str:
    if not isinstance(rate, int | float):
        return "—"
    return f"{rate:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]" if _is_ci(ci) else f"{rate:.3f}"


def _stages(seconds: Any) -> str:
    if not isinstance(seconds, dict) or not seconds:
        return "—"
    parts = [f"{stage} {_num(s, 1)}" for stage, s in seconds.items()]
    total = sum(s for s in seconds.values() if isinstance(s, int | float))
    return ", ".join(parts) + f" (total {total:.1f})"


def _markdown(run: RunData, drawn: set[str]) -> str:
    lines = [
        f"# Run report: {run.name}",
        "",
        f"Method: **{run.method}** · policies π_0..π_{run.iterations[-1]['iteration']} · run directory "
        f"`{run.run_dir}`. Success rates are fractions of held-out games won, with 95% Wilson intervals.",
        "",
        "## Per iteration",
        "",
        "| iteration | policy success [95% CI] | Best-of-N success [95% CI] | N | mean actions "
        "| PRM pair acc | PRM ECE | stage seconds |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for it in run.iterations:
        n = it.get("bon_n")
        row = [
            f"π_{it['iteration']}",
            _rate(it["policy_success_rate"], it.get("policy_ci")),
            _rate(it.get("bon_success_rate"), it.get("bon_ci")),
            str(n) if isinstance(n, int) else "—",
            _num(it.get("mean_actions"), 2),
            _num(it.get("prm_pair_acc")),
            _num(it.get("prm_ece")),
            _stages(it.get("stage_seconds")),
        ]
        lines.append("| " + " | ".join(row) + " |")
    lines += _task_type_table(run)
    captions = {
        "success": "Success per iteration: the policy alone and Best-of-N with the iteration's PRM",
        "dpo": "Online DPO: held-out success and PRM score per step (reward-hacking view)",
        "bon": "Best-of-N success vs N",
        "calibration": "PRM calibration (reliability diagram; the diagonal is perfect calibration)",
    }
    lines += ["", "## Plots"]
    for kind, caption in captions.items():
        lines += ["", f"### {caption}", ""]
        if kind in drawn:
            lines.append(f"![{caption}]({PLOT_FILES[kind]})")
        else:
            lines.append("_Not drawn: the run directory has no data for it (see Notes)._")
    if run.notes:
        lines += ["", "## Notes", "", *(f"- {note}" for note in run.notes)]
    return "\n".join(lines) + "\n"


def _task_type_table(run: RunData) -> list[str]:
    types = sorted({t for it in run.iterations for t in (it.get("per_task_type") or {})})
    if not types:
        return []
    header = "| task type | " + " | ".join(f"π_{it['iteration']}" for it in run.iterations) + " |"
    lines = ["", "## Policy success per task type", "", header, "|---" * (len(run.iterations) + 1) + "|"]
    for t in types:
        cells = []
        for it in run.iterations:
            block = (it.get("per_task_type") or {}).get(t)
            if isinstance(block, dict) and isinstance(block.get("success_rate"), int | float):
                cells.append(f"{block['success_rate']:.3f} (n={block.get('n', '?')})")
            else:
                cells.append("—")
        lines.append(f"| {t} | " + " | ".join(cells) + " |")
    return lines
