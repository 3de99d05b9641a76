"""A game's state graph over TextWorld's PDDL engine: each (state, command) transition computed once.

TextWorld's ``PddlEnv`` spends almost all of a step generating text (the command of every
applicable action and the feedback, derived from the grammar with deep-copied contexts: about 3 ms
of a 3.2 ms step on a small game), and every reset translates the PDDL problem twice (about 60 ms).
Both depend only on the engine's state. :class:`GameGraph` loads a game once, keeps its state
as a node of a graph keyed by the engine's facts, and memoises every transition it has taken:

- a reset is the root node (no re-translation, no re-grounding);
- a step that was taken before from the same engine state is a dictionary lookup;
- a new step restores the engine to the node's state (the translated task reloaded into the
  planner library, the node's operator path applied, no text generated), applies the command
  there and derives its feedback and the new node's commands with TextWorld's own grammar, exactly
  as ``PddlEnv.step`` does;
- a snapshot of an episode is its node: copying it costs nothing and continuing from it costs only
  the steps after it.

Nodes are keyed by everything TextWorld's text generation reads of the state (the facts and the
variables' reference counts), so the outputs equal the plain engine's: ``tests/test_alfworld_env.py``
checks identical (command, feedback, admissible commands) traces on every built-in game.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

__all__ = ["GameGraph", "Node"]

NOTHING_HAPPENS = "Nothing happens."


@dataclass
class Node:
    """One engine state of a game.

    Attributes:
        index: Position in the graph's node list.
        admissible: The admissible commands (sorted, distinct), as the plain engine lists them.
        won: Whether the goal holds.
        commands: The command of each applicable action, in the planner's order (with repeats).
        actions: The applicable actions (TextWorld ``Action`` objects), aligned with ``commands``.
        path: (node index, action index) of each step from the root to this node.
        edges: command → (feedback, next node index) of the transitions taken so far.
    """

    index: int
    admissible: tuple[str, ...]
    won: bool
    commands: list[str]
    actions: list
    path: tuple[tuple[int, int], ...]
    edges: dict[str, tuple[str, int]] = field(default_factory=dict)


class GameGraph:
    """One loaded game and the graph of its engine states reached so far.

    Args:
        data: The content of a ``game.tw-pddl`` file (domain, grammar, problem).

    Attributes:
        intro: The text shown at a reset (the room and the task).
        nodes: Every state reached so far; ``nodes[0]`` is the initial state.
        misses: Transitions computed by the engine (each at most once).
        hits: Transitions answered from the graph.
    """

    def __init__(self, data: dict) -> None:
        import textworld
        from alfworld.agents.environment.alfred_tw_env import AlfredDemangler
        from textworld.envs.pddl import PddlEnv

        env = AlfredDemangler(shuffle=False)(PddlEnv(textworld.EnvInfos(admissible_commands=True, won=True)))
        env.load(data)
        self._env = env.unwrapped
        self._state = self._env._pddl_state
        self._sas = self._state.sas.encode("utf-8")
        self._initial = self._python_state()
        self._names = {k: info.name for k, info in self._env._entity_infos.items()}
        self.nodes: list[Node] = []
        self._index: dict[tuple, int] = {}
        self._at = 0  # the node the engine is in now
        # (template, variable mapping) → derived command template: an action's command text
        # depends on its template and the entities it names, not on the rest of the state
        self._templates: dict[tuple, str] = {}
        self.hits = self.misses = 0
        self.intro = self._derive("#intro#", {}, {})
        self._node(())

    # -- the engine ---------------------------------------------------------------------------
    def _python_state(self) -> tuple:
        s = self._state
        return (
            {sig: set(props) for sig, props in s._facts.items()},
            dict(s._vars_by_name),
            {t: set(v) for t, v in s._vars_by_type.items()},
            copy.copy(s._var_counts),
        )

    def _key(self) -> tuple:
        s = self._state
        return frozenset(s.facts), frozenset(s._var_counts.items())

    def _derive(self, rule: str, variables: dict, mapping: dict) -> str:
        context = {
            "state": self._state,
            "facts": list(self._state.facts),
            "variables": variables,
            "mapping": mapping,
            "entity_infos": self._env._entity_infos,
        }
        return self._env._logic.grammar.derive(rule, context)

    def _apply(self, action) -> None:
        self._state.all_applicable_actions()  # the planner's operator table of this state
        self._state.apply(action)

    def _go_to(self, index: int) -> None:
        """Bring the engine to node ``index``: reload the task and apply the node's path."""
        if self._at == index:
            return
        facts, by_name, by_type, counts = self._initial
        s = self._state
        s.downward_lib.load_sas(self._sas)
        s._facts.clear()
        s._facts.update({sig: set(props) for sig, props in facts.items()})
        s._vars_by_name = dict(by_name)
        s._vars_by_type.clear()
        s._vars_by_type.update({t: set(v) for t, v in by_type.items()})
        s._var_counts = copy.copy(counts)
        for node, action in self.nodes[index].path:
            self._apply(self.nodes[node].actions[action])
        self._at = index

    def _node(self, path: tuple[tuple[int, int], ...]) -> int:
        """The node of the engine's current state (created with its commands when new)."""
        key = self._key()
        if key in self._index:
            return self._index[key]
        env, commands = self._env, []
        actions = self._state.all_applicable_actions()
        for action in actions:  # as PddlEnv._gather_infos derives them, each distinct one once
            key = (action.command_template, tuple((ph.name, var.name) for ph, var in action.mapping.items()))
            template = self._templates.get(key)
            if template is None:
                variables = {ph.name: env._entity_infos[var.name] for ph, var in action.mapping.items()}
                template = self._derive(action.command_template, variables, action.mapping)
                self._templates[key] = template
            action.command_template = template
            commands.append(action.format_command(self._names))
        won = bool(self._state.check_goal())
        node = Node(len(self.nodes), tuple(sorted(set(commands))), won, commands, actions, path)
        self.nodes.append(node)
        self._index[key] = node.index
        return node.index

    # -- transitions --------------------------------------------------------------------------
    def step(self, index: int, command: str) -> tuple[str, int]:
        """(feedback, next node) of ``command`` at node ``index`` (computed once per pair)."""
        node = self.nodes[index]
        command = command.strip()
        if command in node.edges:
            self.hits += 1
            return node.edges[command]
        self.misses += 1
        if command not in node.commands:
            result = (NOTHING_HAPPENS, index)
        else:
            self._go_to(index)
            position = node.commands.index(command)
            action = node.actions[position]
            self._apply(action)
            variables = {ph.name: self._env._entity_infos[var.name] for ph, var in action.mapping.items()}
            feedback = self._derive(action.feedback_rule, variables, action.mapping)
            self._at = self._node((*node.path, (index, position)))
            result = (feedback, self._at)
        node.edges[command] = result
        return result
