"""The ``agentprm`` console script.

``agentprm fit|validate|test|predict --config …`` run one stage through Lightning's CLI (the stage's
LightningModule and DataModule are named by ``class_path`` in the config); ``agentprm games …``
lists and generates the built-in ALFWorld-format games. ``main(args)`` takes an argument list so
tests call it in-process.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

__all__ = ["main"]

_LIGHTNING_VERBS = ("fit", "validate", "test", "predict")
_USAGE = """usage: agentprm <command> [options]

Train LLM agents with process reward models (AgentPRM, InversePRM) on ALFWorld.

stage commands (Lightning CLI; see `agentprm fit --help`):
  fit        train a stage: SFT, PRM or online DPO        agentprm fit --config configs/<stage>/<x>.yaml
  validate   run a stage's validation loop
  test       evaluate a policy (success rate, Best-of-N)
  predict    roll a policy out and write trajectories

the whole loop:
  iterate    SFT → (rollouts → PRM → online DPO → eval) × K, resumable
             agentprm iterate --config configs/quickstart.yaml

other commands:
  games      list or generate the built-in ALFWorld-format games   (agentprm games --help)
  report     plots and a Markdown summary of a run directory     agentprm report runs/<name>
  compare    paired difference in success between two evaluations of the same games and seeds
             agentprm compare runs/q/iter_0/eval/policy runs/q/iter_1/eval/policy
  probe      how a PRM (and a policy) rank the expert's action on held-out demonstrations
             agentprm probe --prm runs/quickstart/iter_1/prm/model \\
                            --policy runs/quickstart/iter_0/policy/model

Run `agentprm <command> --help` for the options of a command. An expected error (bad input, a
missing path, a rerun over other settings) prints one line; --debug (or AGENTPRM_DEBUG=1) on any
command shows its traceback.
"""


def main(args: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the exit status."""
    from agentprm.errors import DEBUG_ENV, report_errors

    argv = list(sys.argv[1:] if args is None else args)
    debug = "--debug" in argv  # any command: tracebacks of expected errors too
    argv = [a for a in argv if a != "--debug"]
    if not argv or argv[0] in ("-h", "--help"):
        print(_USAGE, end="")
        return 0
    command, before = argv[0], os.environ.get(DEBUG_ENV)
    if debug:  # for this command (and the stages it runs in-process) only
        os.environ[DEBUG_ENV] = "1"
    try:
        return report_errors(f"agentprm {command}", lambda: _dispatch(command, argv))
    finally:
        if debug and before is None:
            os.environ.pop(DEBUG_ENV, None)
        elif debug:
            os.environ[DEBUG_ENV] = before


def _dispatch(command: str, argv: list[str]) -> int:
    rest = argv[1:]
    if command == "games":
        return _games(rest)
    if command == "report":
        return _report(rest)
    if command == "probe":
        return _probe(rest)
    if command == "compare":
        from agentprm.compare import main as compare_main

        return compare_main(rest)
    if command == "iterate":
        from agentprm.iterate import main as iterate_main

        return iterate_main(rest)
    if command in _LIGHTNING_VERBS:
        from agentprm.runner import run_lightning

        return run_lightning(argv)
    print(f"agentprm: unknown command {command!r}\n\n{_USAGE}", file=sys.stderr, end="")
    return 2


def _games(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="agentprm games", description="The built-in ALFWorld-format games.")
    sub = parser.add_subparsers(dest="action", required=True)
    ls = sub.add_parser("list", help="print one line per game: split, task type, game id (tab-separated)")
    ls.add_argument("--set", default="small", help="small | standard | a .json.gz set file (default: small)")
    ls.add_argument("--split", default=None, help="only this split")
    gen = sub.add_parser(
        "generate",
        help="generate more games into a directory (an ALFWorld data root)",
        description="Generate planner-verified games and write them as <output>/json_2.1.1/<split>/… "
        "folders plus <output>/games.json.gz; use the folder as `data: <output>` in an env config.",
    )
    gen.add_argument("--output", required=True, help="directory to create (must not exist)")
    gen.add_argument("--size", choices=("small", "standard"), default="small")
    gen.add_argument("--train", type=int, default=60, help="number of training games")
    gen.add_argument("--valid-seen", type=int, default=0, help="held-out games from training layouts")
    gen.add_argument("--valid-unseen", type=int, default=12, help="held-out games from held-out layouts")
    gen.add_argument("--seed", type=int, default=1, help="seed (the shipped sets use 0)")
    gen.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="parallel processes")
    gen.add_argument("--timeout", type=float, default=120.0, help="seconds per attempt before it is dropped")
    gen.add_argument("--quiet", action="store_true", help="no progress bar")
    ns = parser.parse_args(argv)
    if ns.action == "list":
        return _games_list(ns.set, ns.split)
    return _games_generate(ns)


def _games_list(name: str, split: str | None) -> int:
    from agentprm.envs.gamesets import load_set

    games = load_set(name)
    splits = sorted({g.split for g in games})
    if split is not None and split not in splits:
        raise ValueError(f"--split {split!r} is not a split of the set {name!r}: one of {', '.join(splits)}")
    for game in games:
        if split is None or game.split == split:
            print(f"{game.split}\t{game.task_type}\t{game.game_id}")
    return 0


def _games_generate(ns: argparse.Namespace) -> int:
    from pathlib import Path

    from agentprm.envs.gamesets import generate_set, materialize, save_set
    from agentprm.errors import check_range

    counts = {"train": ns.train, "valid_seen": ns.valid_seen, "valid_unseen": ns.valid_unseen}
    for split, value in counts.items():
        check_range("--" + split.replace("_", "-"), value, 0)
    check_range("--workers", ns.workers, 1)
    check_range("--timeout", ns.timeout, 0)
    if not any(counts.values()):
        raise ValueError("--train, --valid-seen and --valid-unseen are all 0: nothing to generate")
    out = Path(ns.output)
    if out.exists():
        print(f"agentprm games generate: {out} already exists; choose a new directory", file=sys.stderr)
        return 2
    counts = {k: v for k, v in counts.items() if v > 0}
    games = generate_set(
        counts, ns.size, seed=ns.seed, workers=ns.workers, timeout=ns.timeout, progress=not ns.quiet
    )
    materialize(games, out)
    save_set(out / "games.json.gz", out.name, games)
    demos = sum(g.expert_actions is not None for g in games)
    print(f"wrote {len(games)} games to {out} ({demos} with search-expert demonstrations)")
    return 0


def _report(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="agentprm report",
        description="Write plots (PNG) and report.md into <run_dir>/report/ from a run directory of "
        "`agentprm iterate`; prints the path of report.md.",
    )
    parser.add_argument("run_dir", help="the run directory, e.g. runs/quickstart")
    ns = parser.parse_args(argv)
    from agentprm.report import write_report

    print(write_report(ns.run_dir))
    return 0


def _probe(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="agentprm probe",
        description="Score every admissible command at the states of the search expert's "
        "demonstrations of a held-out split with a PRM (and a policy) and report how often the "
        "expert's command ranks first, its mean rank, and, where the policy's top command is not the "
        "expert's, how often the PRM prefers the expert's. Prints JSON.",
    )
    parser.add_argument(
        "--prm", required=True, help="a PRM directory (`agentprm fit -c configs/prm/…`) or `oracle`"
    )
    parser.add_argument("--policy", help="a policy directory, scored over the admissible commands")
    parser.add_argument("--data", default="builtin:small", help="the built-in game set")
    parser.add_argument("--split", default="valid_unseen", help="its split (default valid_unseen)")
    parser.add_argument("--max-states", type=int, default=400, help="the first N states (default 400)")
    parser.add_argument(
        "--states",
        help="also rank against the search expert's Q at the states of these episodes (a rollout or "
        "evaluation directory, e.g. π0 on held-out games): the `oracle` block of the output",
    )
    parser.add_argument(
        "--template", help="the policy's prompt template (default: the PRM's; `compact` with the oracle)"
    )
    parser.add_argument("--history-window", type=int, help="the policy's history window (default: the PRM's)")
    parser.add_argument("--output", help="also write the JSON to this file")
    ns = parser.parse_args(argv)
    if ns.max_states < 1:
        parser.error(f"--max-states must be >= 1, found {ns.max_states}")
    if ns.history_window is not None and ns.history_window < 0:
        parser.error(f"--history-window must be >= 0, found {ns.history_window}")
    from agentprm.evaluation import action_ranking, oracle_agreement
    from agentprm.records import atomic_write_json
    from agentprm.rollout import expert_demonstrations
    from agentprm.scorers import load_scorer

    prm = load_scorer(ns.prm)
    policy = None
    if ns.policy:
        from agentprm.backbone import load_causal_lm, load_tokenizer
        from agentprm.prompts import Renderer
        from agentprm.sampling import HFSampler

        # The policy reads states with the PRM's renderer settings unless told otherwise.
        model, tokenizer = load_causal_lm(ns.policy).eval(), load_tokenizer(ns.policy)
        base = prm.renderer
        template = ns.template or (base.template if hasattr(prm, "lm") else "compact")
        window = ns.history_window if ns.history_window is not None else base.history_window
        renderer = Renderer(template, window, base.response_format)
        policy = HFSampler(model, tokenizer, renderer, "admissible")
    demos = expert_demonstrations(ns.data, ns.split, progress=False)
    result = action_ranking(prm, demos, policy, max_states=ns.max_states)
    if ns.states:
        from agentprm.data import policy_states, spread
        from agentprm.reference import ExpertValues
        from agentprm.rollout import read_shards

        states = spread(policy_states(read_shards(ns.states)), ns.max_states)
        if not states:
            raise ValueError(f"--states {ns.states}: no batch-*.jsonl episodes there")
        values = prm.values if hasattr(prm, "values") else ExpertValues(ns.data)
        result["oracle"] = {"states_from": ns.states, **oracle_agreement(prm, states, values, policy)}
    result = {"prm": ns.prm, "policy": ns.policy, "data": ns.data, "split": ns.split, **result}
    text = json.dumps(result, indent=2)
    if ns.output:
        atomic_write_json(ns.output, result)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
