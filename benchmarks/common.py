"""Shared helpers of the CPU benchmarks: timing statistics, peak memory, the run header, Markdown tables.

Every benchmark module exposes ``run(quick: bool) -> list[dict]``; each dict is a *row* made by
:func:`row`: one metric of our implementation against a baseline measured in the same process and
the same run, with the median and min–max of the repeated measurements and the ratio
(always "how many times better ours is": a higher-is-better metric is ours/baseline, a
lower-is-better one baseline/ours).
"""

from __future__ import annotations

import datetime
import gc
import importlib.metadata
import os
import platform
import re
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

THREADS = 2
"""Intra-op threads every benchmark uses (the build machines have 2 cores); ``$BENCH_THREADS`` overrides."""

ROW_KEYS = (
    "benchmark", "case", "metric", "unit", "higher_is_better", "ours", "baseline", "baseline_name",
    "ratio", "goal", "met", "notes",
)  # fmt: skip
"""The keys of every row, in table order."""


def setup(threads: int | None = None) -> None:
    """Fix the thread count, stay offline, and silence progress bars (call before building models).

    Args:
        threads: Intra-op threads; None: ``$BENCH_THREADS`` or :data:`THREADS`.
    """
    import torch

    torch.set_num_threads(threads or int(os.environ.get("BENCH_THREADS", THREADS)))
    for key, value in {
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
        "DISABLE_MLFLOW_INTEGRATION": "TRUE",
    }.items():
        os.environ.setdefault(key, value)


# --------------------------------------------------------------------------------------------
# Statistics and rows
# --------------------------------------------------------------------------------------------
def stats(values: Sequence[float]) -> dict[str, float]:
    """Median, min, max and count of repeated measurements."""
    if not values:
        raise ValueError("no measurements")
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def time_calls(fn: Callable[[], Any], repeats: int = 5, warmup: int = 1) -> list[float]:
    """Wall-clock seconds of ``repeats`` calls of ``fn`` after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def row(
    benchmark: str,
    case: str,
    metric: str,
    unit: str,
    ours: Sequence[float],
    baseline: Sequence[float] | None,
    baseline_name: str,
    *,
    higher_is_better: bool = True,
    goal: float | None = None,
    notes: str = "",
) -> dict[str, Any]:
    """One result row: statistics of ours and of the baseline, their ratio (of medians) and the goal check.

    Args:
        benchmark: The benchmark's name (``PRM training``).
        case: The configuration (sizes) measured.
        metric: What is measured (``tokens/s``).
        unit: Its unit.
        ours: Our repeated measurements.
        baseline: The baseline's, from the same run; None when it was not measured.
        baseline_name: What the baseline is.
        higher_is_better: Whether a larger value is better (throughput) or worse (time, memory).
        goal: The ratio the issue asks for, if any.
        notes: Anything a reader needs to interpret the row.
    """
    ours_s = stats(ours)
    base_s = stats(baseline) if baseline else None
    ratio = None
    if base_s is not None and ours_s["median"] > 0 and base_s["median"] > 0:
        ratio = ours_s["median"] / base_s["median"]
        ratio = ratio if higher_is_better else 1.0 / ratio
    return {
        "benchmark": benchmark, "case": case, "metric": metric, "unit": unit,
        "higher_is_better": higher_is_better, "ours": ours_s, "baseline": base_s,
        "baseline_name": baseline_name, "ratio": ratio, "goal": goal,
        "met": None if goal is None or ratio is None else ratio >= goal, "notes": notes,
    }  # fmt: skip


def check_rows(rows: Sequence[dict[str, Any]]) -> None:
    """Raise ``ValueError`` unless every row has exactly the keys of :data:`ROW_KEYS` and sane values."""
    for r in rows:
        if tuple(r) != ROW_KEYS:
            raise ValueError(f"row keys {tuple(r)} differ from {ROW_KEYS}")
        for side in ("ours", "baseline"):
            s = r[side]
            if s is not None and not (s["min"] <= s["median"] <= s["max"] and s["n"] >= 1):
                raise ValueError(f"bad {side} statistics in {r['benchmark']} / {r['case']}: {s}")


class StepProfiler:
    """torch.profiler around one step, started and stopped from a trainer's callbacks; prints the table.

    ``start(True)`` begins profiling (``start(False)`` does nothing); ``stop(title)`` ends it and
    prints the operators sorted by their own CPU time.
    """

    def __init__(self, rows: int = 15) -> None:
        self.rows, self.prof = rows, None

    def start(self, enabled: bool) -> None:
        if enabled:
            import torch

            self.prof = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU])
            self.prof.__enter__()

    def stop(self, title: str) -> None:
        if self.prof is None:
            return
        self.prof.__exit__(None, None, None)
        print(f"\n### profile of one step: {title}")
        print(self.prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=self.rows))
        self.prof = None


# --------------------------------------------------------------------------------------------
# Memory
# --------------------------------------------------------------------------------------------
def _status_kib(field: str) -> int:
    match = re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M)
    return int(match.group(1)) if match else 0


def _malloc_trim() -> None:
    """Give freed heap memory back to the system (glibc), so an earlier benchmark's garbage is not counted."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class PeakRSS:
    """Peak resident memory of this process inside a ``with`` block (Linux ``VmHWM``, reset on entry).

    On entry the kernel's high-water mark is reset (``/proc/self/clear_refs``), so the peak is that
    of the block alone, even after earlier benchmarks in the same process. ``peak_mib`` is the
    process's peak RSS during the block (model, optimiser state and activations included) and
    ``delta_mib`` its increase over the RSS at entry.
    """

    def __enter__(self) -> PeakRSS:
        gc.collect()
        _malloc_trim()
        try:
            Path("/proc/self/clear_refs").write_text("5")
            self.resettable = True
        except OSError:  # not Linux, or not allowed: the peak is then the whole process's
            self.resettable = False
        self.start_mib = _status_kib("VmRSS") / 1024
        return self

    def __exit__(self, *exc) -> None:
        self.peak_mib = max(_status_kib("VmHWM"), _status_kib("VmRSS")) / 1024
        self.delta_mib = self.peak_mib - self.start_mib


def _cpu_jiffies() -> tuple[int, int]:
    """(total, idle + iowait) CPU time of the machine since boot, in clock ticks (``/proc/stat``)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return sum(fields[:8]), fields[3] + fields[4]


class CpuLoad:
    """Cores kept busy by *other* processes during a ``with`` block: machine CPU time minus this process's.

    With 2 cores and 2 torch threads, any other busy process makes timings slower and far noisier
    (a descheduled thread holds up every parallel operator), so each benchmark records it.
    ``others_cores`` is NaN where ``/proc/stat`` cannot be read.
    """

    def __enter__(self) -> CpuLoad:
        self.start = time.perf_counter()
        self.own = sum(os.times()[:2])
        try:
            self.jiffies = _cpu_jiffies()
        except (OSError, ValueError, IndexError):
            self.jiffies = None
        return self

    def __exit__(self, *exc) -> None:
        wall = max(1e-9, time.perf_counter() - self.start)
        own = sum(os.times()[:2]) - self.own
        self.others_cores = float("nan")
        if self.jiffies is not None:
            total, idle = _cpu_jiffies()
            busy = ((total - self.jiffies[0]) - (idle - self.jiffies[1])) / os.sysconf("SC_CLK_TCK")
            self.others_cores = max(0.0, busy - own) / wall


def others_busy(seconds: float = 1.0) -> float:
    """Cores kept busy by other processes over ``seconds`` while this one sleeps."""
    with CpuLoad() as load:
        time.sleep(seconds)
    return load.others_cores


# --------------------------------------------------------------------------------------------
# Header and table
# --------------------------------------------------------------------------------------------
def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    match = re.search(r"^model name\s*:\s*(.+)$", text, re.M)
    return match.group(1).strip() if match else platform.machine()


def header() -> dict[str, Any]:
    """Device, versions, thread count and machine load (1/5/15-minute load averages) right now."""
    import torch

    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "device": f"CPU: {_cpu_model()} ({os.cpu_count()} logical cores), no GPU",
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": _version("transformers"),
        "lightning": _version("lightning"),
        "trl": _version("trl"),
        "loadavg": tuple(round(x, 2) for x in os.getloadavg()),
        "others_busy_cores": round(others_busy(), 2),
    }


def _fmt(x: float) -> str:
    if x >= 100:
        return f"{x:,.0f}"
    if x >= 10:
        return f"{x:.1f}"
    return f"{x:.3g}"


def _cell(s: dict[str, float] | None) -> str:
    if s is None:
        return "–"
    if s["n"] == 1:
        return _fmt(s["median"])
    return f"{_fmt(s['median'])} ({_fmt(s['min'])}–{_fmt(s['max'])})"


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    """The rows as a Markdown table: median (min–max) of ours and of the baseline, ratio, goal."""
    lines = [
        "| benchmark | case | metric | ours: median (min–max) | baseline | baseline: median (min–max) "
        "| ratio (×, >1 = ours better) | goal | met |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ratio = "–" if r["ratio"] is None else f"{r['ratio']:.2f}"
        goal = "–" if r["goal"] is None else f"≥ {r['goal']:g}"
        met = "–" if r["met"] is None else ("yes" if r["met"] else "**no**")
        metric = f"{r['metric']} [{r['unit']}]" if r["unit"] else r["metric"]
        lines.append(
            f"| {r['benchmark']} | {r['case']} | {metric} | {_cell(r['ours'])} | {r['baseline_name']} "
            f"| {_cell(r['baseline'])} | {ratio} | {goal} | {met} |"
        )
    return "\n".join(lines)


def notes_list(rows: Sequence[dict[str, Any]]) -> str:
    """The rows' notes as a Markdown bullet list (empty notes skipped)."""
    out = [f"- {r['benchmark']}, {r['case']}, {r['metric']}: {r['notes']}" for r in rows if r["notes"]]
    return "\n".join(out)


def print_rows(rows: Sequence[dict[str, Any]]) -> None:
    """Print the rows' table and their notes (what each benchmark's ``main`` shows)."""
    print(markdown_table(rows))
    print(notes_list(rows))


def cli(run: Callable[[bool], list[dict[str, Any]]], doc: str) -> None:
    """``main`` of a benchmark whose only option is ``--quick``: parse, run, print."""
    import argparse

    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
    print_rows(run(parser.parse_args().quick))


def trainer_sizes(quick: bool) -> tuple[Path, int, int, int, int, int]:
    """The model and sizes the trainer comparisons (PRM training, DPO step) share.

    Returns ``(model_dir, batch, rounds, warmup, steps, turns)``: a random Llama, pairs per step,
    alternating rounds of both sides, warm-up and timed steps per round, and turns per game of the
    states the pairs come from.
    """
    if quick:
        return bench_model(hidden=32, layers=1, heads=2, intermediate=64), 2, 1, 1, 2, 4
    return bench_model(hidden=256, layers=4, heads=4, intermediate=704), 8, 2, 1, 3, 12


def want_trl(trl: bool | None) -> bool:
    """Whether to measure TRL: as asked, or (None) when it is importable (the ``bench`` extra)."""
    import importlib.util

    return importlib.util.find_spec("trl") is not None if trl is None else trl


# --------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------
def merge_rounds(results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """A trainer benchmark's rounds together: every timed step's time, tokens and tokens/s; the
    largest memory of the rounds (``delta``, ``peak`` in MiB)."""
    times = [t for r in results for t in r["times"]]
    tokens = [n for r in results for n in r["tokens"]]
    return {
        "times": times,
        "tokens": tokens,
        "rate": [n / t for n, t in zip(tokens, times, strict=True)],
        "delta": max(r["mem"].delta_mib for r in results),
        "peak": max(r["mem"].peak_mib for r in results),
    }


def bench_model(hidden: int = 256, layers: int = 4, heads: int = 4, intermediate: int = 704) -> Path:
    """A random Llama with the project's tiny tokenizer, built by ``build_tiny_model`` once and cached.

    Lives under ``$AGENTPRM_CACHE/benchmarks/``; the build is deterministic (seed 0), so a cached
    directory is the same model.
    """
    from agentprm.backbone import build_tiny_model
    from agentprm.cache import cache_root

    out = cache_root() / "benchmarks" / f"llama-h{hidden}-l{layers}-a{heads}-i{intermediate}"
    if not (out / "config.json").is_file():
        build_tiny_model(
            out, hidden_size=hidden, num_layers=layers, num_heads=heads, num_kv_heads=heads,
            intermediate_size=intermediate, max_position_embeddings=2048,
        )  # fmt: skip
    return out


def random_states(n_turns: int, n_games: int = 4, seed: int = 0, data: str = "builtin:small") -> list:
    """States of real built-in games after random admissible actions (history of up to ``n_turns``).

    One :class:`~agentprm.records.State` per (game, turn), from ``agentprm.rollout.play`` with a
    seeded uniformly random chooser: realistic observation and history text for the tokenizer.
    """
    import random

    from agentprm.envs.alfworld import AlfWorldEnv
    from agentprm.rollout import play
    from agentprm.sampling import Sample

    rng = random.Random(seed)
    seen: list = []

    def choose(states, slots):
        seen.extend(states)
        return [
            Sample(f"ACTION: {c}", c, "", (), 0.0)
            for c in (rng.choice(s.admissible_commands) for s in states)
        ]

    env = AlfWorldEnv(data, max_steps=n_turns)
    play(env, env.game_ids("train")[:n_games], choose, policy_id="random", seed=seed)
    return seen
