"""Batched ALFWorld over the real alfworld text engine (the only module that imports alfworld's engine).

One code path serves a user's real data and the built-in game sets: both are ALFWorld data roots
(``<root>/json_2.1.1/{train,valid_seen,valid_unseen}/<task>-…/trial_…/game.tw-pddl``), and every
episode runs in TextWorld's PDDL engine wrapped by alfworld's ``AlfredDemangler`` — the engine that
``AlfredTWEnv`` drives. Games are chosen by explicit id rather than by the gym wrapper's shuffled
cycle, so rollouts and evaluations name exactly the games they play.
"""

from __future__ import annotations

import functools
import os
import re
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from agentprm.envs.base import EnvFactory, EnvStep
from agentprm.envs.games import TASK_TYPES

__all__ = [
    "SPLITS",
    "TASK_TYPES",
    "AlfWorldEnv",
    "AlfWorldEnvFactory",
    "DataError",
    "Snapshot",
    "random_walk",
    "resolve_data_root",
    "task_type_of",
    "translate_command",
]

SPLITS = ("train", "valid_seen", "valid_unseen")
_TASK_RE = re.compile(r"Your task is to: (.*)")
_PUT_RE = re.compile(r"put (.+?) (?:in/on|in|on|into|onto) (.+)")
_MOVE_RE = re.compile(r"move (.+?) to (.+)")

_HOW_TO_GET_DATA = (
    "To use the real ALFWorld games, run `alfworld-download` (it fetches the json_2.1.1 data into "
    "$ALFWORLD_DATA, default ~/.cache/alfworld) or point `data` at a folder that holds json_2.1.1/. "
    "To play the built-in synthetic games instead, set `data: builtin:small` (or builtin:standard)."
)


class DataError(FileNotFoundError):
    """The game data is missing or malformed; the message says how to get it."""


def task_type_of(game_id: str) -> str:
    """The task type from the game folder name (``valid_unseen/pick_two_obj_and_place-…/trial_…``)."""
    folder = game_id.split("/")[-2] if "/" in game_id else game_id
    for prefix in TASK_TYPES:
        if folder.startswith(prefix):
            return prefix
    return folder.split("-")[0]


def translate_command(command: str, admissible: Sequence[str]) -> str:
    """Map between the two wordings of placing an object across ALFWorld data releases.

    Releases before alfworld 0.4 say ``put X in/on Y``; later ones say ``move X to Y``. The wording
    lives in each game file's grammar, so a policy trained on one release may meet the other. A
    command that is admissible as given is never changed; otherwise the other wording is used when
    it is admissible.
    """
    if command in admissible:
        return command
    if m := _PUT_RE.fullmatch(command):
        other = f"move {m.group(1)} to {m.group(2)}"
    elif m := _MOVE_RE.fullmatch(command):
        other = f"put {m.group(1)} in/on {m.group(2)}"
    else:
        return command
    return other if other in admissible else command


def resolve_data_root(data: str) -> Path:
    """``builtin:<set>`` → the materialised built-in set; ``alfworld`` → ``$ALFWORLD_DATA``; else a path."""
    if data.startswith("builtin:"):
        from agentprm.envs.gamesets import builtin_root

        return builtin_root(data.split(":", 1)[1])
    if data == "alfworld":
        return Path(os.path.expandvars(os.environ.get("ALFWORLD_DATA", "~/.cache/alfworld"))).expanduser()
    return Path(data).expanduser()


class AlfWorldEnv:
    """B ALFWorld episodes stepped together in this process.

    Args:
        data: ``builtin:small`` / ``builtin:standard`` (the built-in synthetic sets), ``alfworld``
            (the real data under ``$ALFWORLD_DATA``) or a path to a folder holding ``json_2.1.1/``.
        max_steps: Step budget per episode (30 for the paper protocol, 50 for ReAct's).
        text_cache: Memoise TextWorld's text-generation parser (same output, 3-4x faster steps).
        cache_games: How many loaded games to keep for repeated resets (loading parses the problem);
            None: 256 game graphs (a small game's graph holds about 2 MiB after a few episodes, and
            rollouts that cycle through every training game must find each one still loaded), 64
            plain engines.
        engine: ``graph`` (each game loaded once and every transition computed once,
            :class:`~agentprm.envs.engine.GameGraph`; episodes can be snapshotted and restored) or
            ``plain`` (TextWorld's ``PddlEnv`` stepped as it is: the reference the graph is tested
            against and benchmarked with).
    """

    def __init__(
        self,
        data: str = "builtin:small",
        max_steps: int = 30,
        text_cache: bool = True,
        cache_games: int | None = None,
        engine: Literal["graph", "plain"] = "graph",
    ) -> None:
        if max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {max_steps}")
        if engine not in ("graph", "plain"):
            raise ValueError(f"engine must be 'graph' or 'plain', got {engine!r}")
        self.data = data
        self.max_steps = max_steps
        self.engine = engine
        self.root = resolve_data_root(data)
        self._cache_games = cache_games if cache_games is not None else (256 if engine == "graph" else 64)
        self._loaded: OrderedDict[str, object] = OrderedDict()
        self._slots: list = []
        self._last: list[EnvStep] = []
        if text_cache:
            from agentprm.envs import textgen_cache

            textgen_cache.enable()

    # -- games --------------------------------------------------------------------------------
    def _split_dir(self, split: str) -> Path:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
        return self.root / "json_2.1.1" / split

    def game_ids(self, split: str) -> list[str]:
        """Sorted ids (``<split>/<folder>/<trial>``) of the solvable games of a split."""
        base = self._split_dir(split)
        if not base.is_dir():
            raise DataError(f"no ALFWorld split folder {base} (data={self.data!r}). {_HOW_TO_GET_DATA}")
        ids, missing = [], []
        for folder in sorted(p for p in base.glob("*/*") if p.is_dir()):
            if "movable" in folder.parent.name or "Sliced" in folder.parent.name:
                continue  # task types the text engine does not support, skipped as alfworld does
            if (folder / "game.tw-pddl").is_file():
                ids.append(f"{split}/{folder.parent.name}/{folder.name}")
            else:
                missing.append(folder)
        if missing and ids:
            from lightning.pytorch.utilities import rank_zero_warn

            rank_zero_warn(
                f"{base}: {len(missing)} game folder(s) without a game.tw-pddl are skipped "
                f"(first: {missing[0].relative_to(base)})"
            )
        if not ids:
            raise DataError(f"{base} holds no game.tw-pddl files (data={self.data!r}). {_HOW_TO_GET_DATA}")
        return ids

    def game_data(self, game_id: str) -> dict:
        """The content of a game's ``game.tw-pddl`` (checked to be marked solvable)."""
        import json

        path = self.root / "json_2.1.1" / game_id / "game.tw-pddl"
        try:
            text = path.read_text()
        except OSError as err:
            raise DataError(f"{path}: cannot read the game file ({err}). {_HOW_TO_GET_DATA}") from err
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise DataError(
                f"{path}: the game file is corrupt (invalid JSON: {err.msg} at line {err.lineno}, "
                f"column {err.colno}); regenerate or re-copy that game"
            ) from err
        if not data.get("solvable", False):
            raise DataError(f"{path}: game is not marked solvable (key 'solvable' must be true)")
        return data

    def expert(self, game_id: str):
        """A fresh :class:`~agentprm.envs.expert.SearchExpert` for the game, its task read from the
        game's ``traj_data.json`` (``task_type`` and ``pddl_params``, as in ALFWorld's data)."""
        import json

        from agentprm.envs.expert import SearchExpert

        path = self.root / "json_2.1.1" / game_id / "traj_data.json"
        try:
            traj = json.loads(path.read_text())
            params = traj["pddl_params"]
            return SearchExpert(
                traj["task_type"], params["object_target"], params["parent_target"], params["toggle_target"]
            )
        except (OSError, json.JSONDecodeError, KeyError) as err:
            raise DataError(
                f"{path}: cannot read the task (task_type, pddl_params.object_target/parent_target/"
                f"toggle_target): {err}"
            ) from err

    def graph(self, game_id: str):
        """The game's :class:`~agentprm.envs.engine.GameGraph` (loaded once, kept in an LRU cache)."""
        from agentprm.envs.engine import GameGraph

        if game_id in self._loaded:
            self._loaded.move_to_end(game_id)
            return self._loaded[game_id]
        self._loaded[game_id] = graph = GameGraph(self.game_data(game_id))
        while len(self._loaded) > max(1, self._cache_games):
            self._loaded.popitem(last=False)
        return graph

    def _plain(self, game_id: str):
        import textworld
        from alfworld.agents.environment.alfred_tw_env import AlfredDemangler
        from textworld.envs.pddl import PddlEnv

        env = AlfredDemangler(shuffle=False)(PddlEnv(textworld.EnvInfos(admissible_commands=True, won=True)))
        env.load(self.game_data(game_id))
        return _PlainSlot(env)

    # -- episodes -----------------------------------------------------------------------------
    def reset(self, game_ids: Sequence[str]) -> list[EnvStep]:
        self._slots, self._last = [], []
        for gid in game_ids:
            try:
                slot = _GraphSlot(self.graph(gid), 0) if self.engine == "graph" else self._plain(gid)
                step = _first_step(gid, *slot.reset())
            except DataError:
                raise
            except Exception as err:  # a broken game ends only its own episode
                slot = None
                step = EnvStep(gid, task_type_of(gid), "", "", (), 0, done=True, failure=_describe(err))
            self._slots.append(slot)
            self._last.append(step)
        return list(self._last)

    def step(self, commands: Sequence[str | None]) -> list[EnvStep]:
        if len(commands) != len(self._slots):
            raise ValueError(f"step got {len(commands)} commands for {len(self._slots)} episodes")
        for i, (slot, last, command) in enumerate(zip(self._slots, self._last, commands, strict=True)):
            if last.done:
                continue
            try:
                sent = translate_command(command or "", last.admissible_commands)
                self._last[i] = self._next_step(last, *slot.step(sent))
            except Exception as err:  # this episode fails; the others go on
                self._last[i] = replace(
                    last, turn=last.turn + 1, done=True, reward=0.0, failure=_describe(err)
                )
        return list(self._last)

    def _next_step(self, last: EnvStep, feedback: str, admissible: tuple[str, ...], won: bool) -> EnvStep:
        turn = last.turn + 1
        done = won or turn >= self.max_steps
        return replace(
            last,
            observation=feedback.strip(),
            admissible_commands=() if done else admissible,
            turn=turn,
            won=won,
            done=done,
            reward=1.0 if won else 0.0,
        )

    def snapshot_after(self, game_id: str, commands: Sequence[str]) -> Snapshot:
        """The snapshot of an episode of ``game_id`` after ``commands`` (``graph`` engine).

        The commands are played on the game's graph, not in a slot: transitions taken before cost a
        lookup each, and the running episodes are left alone.
        """
        if self.engine != "graph":
            raise ValueError("snapshots need engine='graph'")
        slot = _GraphSlot(self.graph(game_id), 0)
        step = _first_step(game_id, *slot.reset())
        for command in commands:
            if step.done:
                raise ValueError(
                    f"game {game_id}: commands go on after the episode ended at turn {step.turn}"
                )
            step = self._next_step(step, *slot.step(translate_command(command, step.admissible_commands)))
        return Snapshot(step, slot.graph, slot.node)

    def snapshot(self, slot: int) -> Snapshot:
        """A copy of episode ``slot`` as it is now, to continue from with :meth:`restore`.

        Costs nothing with the ``graph`` engine (the episode's node); the ``plain`` engine has no
        snapshots.
        """
        engine = self._slots[slot]
        if not isinstance(engine, _GraphSlot):
            raise ValueError("snapshots need engine='graph'")
        return Snapshot(self._last[slot], engine.graph, engine.node)

    def restore(self, snapshots: Sequence[Snapshot]) -> list[EnvStep]:
        """Start one episode per snapshot, each continuing exactly where its snapshot was taken
        (its turn count included), like :meth:`reset` starts them at the beginning."""
        if self.engine != "graph":
            raise ValueError("snapshots need engine='graph'")
        self._slots = [_GraphSlot(s.graph, s.node) for s in snapshots]
        self._last = [s.step for s in snapshots]
        return list(self._last)

    def close(self) -> None:
        self._loaded.clear()
        self._slots, self._last = [], []


@dataclass(frozen=True)
class Snapshot:
    """An episode's state: what it shows (``step``) and its engine state (a node of ``graph``)."""

    step: EnvStep
    graph: object
    node: int


def _first_step(game_id: str, text: str, admissible: tuple[str, ...]) -> EnvStep:
    """What a reset shows: the task line split off the room description."""
    task = m.group(1).strip() if (m := _TASK_RE.search(text)) else ""
    observation = "\n".join(text.split("\n\n")[1:]).strip() or text.strip()
    return EnvStep(game_id, task_type_of(game_id), task, observation, admissible, 0)


class _GraphSlot:
    """An episode as a position in its game's graph."""

    def __init__(self, graph, node: int) -> None:
        self.graph, self.node = graph, node

    def reset(self) -> tuple[str, tuple[str, ...]]:
        self.node = 0
        return self.graph.intro, self.graph.nodes[0].admissible

    def step(self, command: str) -> tuple[str, tuple[str, ...], bool]:
        feedback, self.node = self.graph.step(self.node, command)
        node = self.graph.nodes[self.node]
        return feedback, node.admissible, node.won


class _PlainSlot:
    """An episode in its own TextWorld ``PddlEnv`` (the reference engine)."""

    def __init__(self, env) -> None:
        self.env = env

    def reset(self) -> tuple[str, tuple[str, ...]]:
        state = self.env.reset()
        return state.feedback, tuple(state["admissible_commands"])

    def step(self, command: str) -> tuple[str, tuple[str, ...], bool]:
        state, _, _ = self.env.step(command)
        return state.feedback, tuple(state["admissible_commands"]), bool(state["won"])


def _grammar_texts() -> list[str]:
    """Feedback and command templates of the installed alfworld grammar, placeholders removed."""
    from alfworld.info import ALFRED_TWL2_PATH

    grammar = Path(ALFRED_TWL2_PATH).read_text(encoding="utf-8")
    texts = re.findall(r'"rhs":\s*"((?:[^"\\]|\\.)*)"', grammar)
    texts += re.findall(r'template :: "([^"]*)"', grammar)
    return [re.sub(r"\[?\{[^}]*\}\]?|#[^#\s]*#", " ", t).replace("\\n", "\n") for t in texts]


@functools.cache
def _vocabulary_corpus() -> tuple[str, ...]:
    import alfworld.gen.constants as constants
    import alfworld.gen.goal_library as goals

    from agentprm.envs.gamesets import BUILTIN_SETS, load_set

    names = {*constants.OBJECTS, *constants.RECEPTACLES, *constants.MOVABLE_RECEPTACLES}
    texts = [*_grammar_texts(), " ".join(sorted(n.lower() for n in names)), "Nothing happens."]
    texts += [re.sub(r"\{\w+\}", " ", t) for g in goals.gdict.values() for t in g["templates"]]
    for name in BUILTIN_SETS:
        try:
            games = load_set(name)
        except FileNotFoundError:  # a set not generated yet: the grammar and goal templates cover it
            continue
        texts += [t for g in games for t in (g.task_desc, *g.walkthrough, *(g.expert_actions or ()))]
    return tuple(texts)


def vocabulary_corpus() -> list[str]:
    """ALFWorld's words, gathered without playing a game: the installed alfworld grammar (feedback
    and command templates), the object and receptacle names of ``alfworld.gen.constants``
    (lowercased, as games print them), the goal templates of ``alfworld.gen.goal_library``, and the
    task descriptions, walkthroughs and expert actions of the built-in game sets (those generated)."""
    return list(_vocabulary_corpus())


class AlfWorldEnvFactory(EnvFactory):
    """ALFWorld games in the real alfworld engine: :class:`AlfWorldEnv` on one data root.

    ``data: builtin:small`` in a stage's config is the shorthand for this factory; give it by
    ``class_path`` to set the engine::

        env:
          class_path: agentprm.envs.alfworld.AlfWorldEnvFactory
          init_args: {data: builtin:small, engine: plain}

    Args:
        data: ``builtin:small`` / ``builtin:standard`` / ``alfworld`` (``$ALFWORLD_DATA``) / a data
            root holding ``json_2.1.1/``.
        engine: ``graph`` (transitions computed once; snapshots) or ``plain`` (TextWorld's engine as
            it is); see :class:`AlfWorldEnv`.
    """

    task_types = TASK_TYPES

    def __init__(self, data: str = "builtin:small", engine: Literal["graph", "plain"] = "graph") -> None:
        if engine not in ("graph", "plain"):
            raise ValueError(f"env.engine must be 'graph' or 'plain', found {engine!r}")
        self.data, self.engine = data, engine

    def game_ids(self, split: str) -> list[str]:
        return AlfWorldEnv(self.data, max_steps=1, text_cache=False, engine=self.engine).game_ids(split)

    def make(self, max_steps: int) -> AlfWorldEnv:
        return AlfWorldEnv(self.data, max_steps=max_steps, engine=self.engine)

    def vocabulary(self) -> list[str]:
        return vocabulary_corpus()


def random_walk(env: AlfWorldEnv, game_ids: Sequence[str], steps: int, seed: int = 0) -> list[tuple]:
    """A uniformly random agent's trace: (command, feedback, admissible commands) for ``steps`` steps.

    Episodes of ``game_ids`` are replayed (reset again when all are done) until the trace is long
    enough. Used to check that the text cache changes nothing and to measure engine speed.
    """
    import random

    rng = random.Random(seed)
    trace: list[tuple] = []
    while len(trace) < steps:
        state = env.reset(game_ids)
        while not all(s.done for s in state) and len(trace) < steps:
            commands = [None if s.done else rng.choice(s.admissible_commands) for s in state]
            state = env.step(commands)
            trace += [
                (c, s.observation, s.admissible_commands) for c, s in zip(commands, state, strict=True) if c
            ]
    return trace


def _describe(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}"
