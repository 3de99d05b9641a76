"""The game graph (envs/engine.py) against TextWorld's plain PDDL engine: identical traces, snapshots."""

from __future__ import annotations

import random

import pytest

from agentprm.envs.alfworld import AlfWorldEnv


def _walk(env: AlfWorldEnv, game_ids: list[str], episodes: int, seed: int) -> list[tuple]:
    """(command, observation, admissible, won) of random episodes; one command in ten is invalid."""
    rng = random.Random(seed)
    trace = []
    for _ in range(episodes):
        steps = env.reset(game_ids)
        trace += [(None, s.observation, s.admissible_commands, s.won) for s in steps]
        while not all(s.done for s in steps):
            commands = [
                None if s.done else "jump around" if rng.random() < 0.1 else rng.choice(s.admissible_commands)
                for s in steps
            ]
            steps = env.step(commands)
            trace += [
                (c, s.observation, s.admissible_commands, s.won)
                for c, s in zip(commands, steps, strict=True)
                if c is not None
            ]
    return trace


def _same_as_plain(root, game_ids: list[str], episodes: int = 3, max_steps: int = 25) -> int:
    plain = _walk(AlfWorldEnv(str(root), max_steps, engine="plain"), game_ids, episodes, seed=1)
    graph = _walk(AlfWorldEnv(str(root), max_steps, engine="graph"), game_ids, episodes, seed=1)
    assert graph == plain
    return len(plain)


def test_graph_engine_gives_the_plain_engines_traces(small_root, small_games):
    games = [g.game_id for g in small_games if g.split == "valid_unseen"][::8]  # all six task types
    assert _same_as_plain(small_root, games) > 400


def test_graph_engine_gives_the_plain_engines_traces_on_standard_games():
    from agentprm.envs.gamesets import builtin_root

    root = builtin_root("standard")
    games = AlfWorldEnv(str(root)).game_ids("valid_unseen")[::20]
    assert _same_as_plain(root, games, episodes=2) > 100


@pytest.mark.slow
@pytest.mark.parametrize("game_set", ["small", "standard"])
def test_graph_engine_gives_the_plain_engines_traces_on_every_built_in_game(game_set):
    from agentprm.envs.gamesets import builtin_root

    root = builtin_root(game_set)
    env = AlfWorldEnv(str(root))
    games = [g for split in ("train", "valid_seen", "valid_unseen") for g in env.game_ids(split)]
    for start in range(0, len(games), 16):
        _same_as_plain(root, games[start : start + 16], episodes=1, max_steps=15)


def test_a_restored_snapshot_continues_exactly_as_a_replay(small_root, one_per_task_type):
    env = AlfWorldEnv(str(small_root), max_steps=30)
    games = [g.game_id for g in one_per_task_type]
    rng = random.Random(0)
    steps = env.reset(games)
    prefix = []
    for _ in range(5):
        commands = [rng.choice(s.admissible_commands) for s in steps]
        prefix.append(commands)
        steps = env.step(commands)
    snapshots = [env.snapshot(i) for i in range(len(games))]
    suffix = [[rng.choice(s.admissible_commands) for s in steps]]
    for _ in range(6):
        steps = env.step(suffix[-1])
        suffix.append([rng.choice(s.admissible_commands) if s.admissible_commands else None for s in steps])
    continued = steps

    restored = env.restore(snapshots)
    assert [s.turn for s in restored] == [5] * len(games)
    for commands in suffix[:-1]:
        restored = env.step(commands)
    assert restored == continued

    plain = AlfWorldEnv(str(small_root), max_steps=30, engine="plain")
    replayed = plain.reset(games)
    for commands in prefix + suffix[:-1]:
        replayed = plain.step(commands)
    assert replayed == continued


def test_a_transition_is_computed_once(small_root, one_per_task_type):
    env = AlfWorldEnv(str(small_root), max_steps=30)
    game = one_per_task_type[2]
    env.reset([game.game_id])
    for command in game.walkthrough:
        first = env.step([command])
    graph = env.graph(game.game_id)
    misses = graph.misses
    env.reset([game.game_id])
    for command in game.walkthrough:
        again = env.step([command])
    assert again == first and again[0].won
    assert graph.misses == misses and graph.hits >= len(game.walkthrough)


def test_plain_engine_has_no_snapshots(small_root, one_per_task_type):
    env = AlfWorldEnv(str(small_root), engine="plain")
    env.reset([one_per_task_type[0].game_id])
    with pytest.raises(ValueError, match="engine='graph'"):
        env.snapshot(0)
    with pytest.raises(ValueError, match="engine must be"):
        AlfWorldEnv(str(small_root), engine="fast")
