"""AlfWorldEnv on the real alfworld engine: batching, failures, data errors, wording, text cache."""

from __future__ import annotations

import time

import pytest

from agentprm.envs import textgen_cache
from agentprm.envs.alfworld import AlfWorldEnv, DataError, random_walk, task_type_of, translate_command
from agentprm.envs.base import BatchEnv


@pytest.fixture
def env(small_root):
    e = AlfWorldEnv(str(small_root), max_steps=30)
    yield e
    e.close()


def test_is_a_batch_env(env):
    assert isinstance(env, BatchEnv)


def test_reset_exposes_observation_task_and_admissible_commands(env, one_per_task_type):
    steps = env.reset([g.game_id for g in one_per_task_type])
    for step, game in zip(steps, one_per_task_type, strict=True):
        assert step.game_id == game.game_id and step.task_type == game.task_type
        assert step.task.rstrip(".") == game.task_desc
        assert step.observation.startswith("You are in the middle of a room.")
        assert "Welcome to TextWorld" not in step.observation
        assert any(c.startswith("go to ") for c in step.admissible_commands)
        assert (step.turn, step.won, step.done, step.failure) == (0, False, False, None)


def test_game_ids_are_sorted_split_relative_paths(env, small_games):
    ids = env.game_ids("valid_unseen")
    assert ids == sorted(ids)
    assert set(ids) == {g.game_id for g in small_games if g.split == "valid_unseen"}
    assert all(task_type_of(i) == i.split("/")[1].split("-")[0] for i in ids)


def test_invalid_and_empty_commands_get_nothing_happens(env, one_per_task_type):
    env.reset([one_per_task_type[0].game_id] * 2)
    steps = env.step(["", "fly to the moon"])
    assert [s.observation for s in steps] == ["Nothing happens.", "Nothing happens."]
    assert [s.turn for s in steps] == [1, 1]  # an invalid action still spends a step


def test_step_budget_ends_the_episode(small_root, one_per_task_type):
    env = AlfWorldEnv(str(small_root), max_steps=3)
    env.reset([one_per_task_type[0].game_id])
    for _ in range(3):
        (step,) = env.step(["look"])
    assert step.done and not step.won and step.turn == 3 and step.admissible_commands == ()
    assert env.step(["look"])[0] == step  # finished slots ignore further commands


def test_the_same_game_twice_in_a_batch_runs_two_independent_episodes(env, one_per_task_type):
    game = one_per_task_type[0]
    env.reset([game.game_id, game.game_id])
    plan = game.walkthrough
    for t, command in enumerate(plan):
        steps = env.step([command, "look" if t < len(plan) - 1 else None])
    assert steps[0].won and not steps[1].won
    # None for a running slot is the empty command: it spends a step and changes nothing
    assert steps[1].turn == len(plan) and steps[1].observation == "Nothing happens."


def test_an_engine_error_fails_only_its_episode(env, one_per_task_type):
    games = one_per_task_type[:3]
    env.reset([g.game_id for g in games])

    def broken(command):
        raise RuntimeError("engine exploded")

    env._slots[1].step = broken  # inject a fault into the middle episode's engine
    plans = [g.walkthrough for g in games]
    for t in range(max(map(len, plans))):
        steps = env.step([p[t] if t < len(p) else None for p in plans])
    assert steps[1].done and not steps[1].won and steps[1].turn == 1
    assert steps[1].failure == "RuntimeError: engine exploded"
    assert steps[0].won and steps[2].won and steps[0].failure is None


def test_wrong_number_of_commands_is_an_error(env, one_per_task_type):
    env.reset([one_per_task_type[0].game_id])
    with pytest.raises(ValueError, match="2 commands for 1 episodes"):
        env.step(["look", "look"])


def test_missing_data_directory_says_how_to_get_data(tmp_path):
    env = AlfWorldEnv(str(tmp_path / "nowhere"))
    with pytest.raises(DataError, match="alfworld-download") as err:
        env.game_ids("valid_unseen")
    assert "builtin:small" in str(err.value) and "nowhere" in str(err.value)


def test_empty_data_directory_says_how_to_get_data(tmp_path):
    (tmp_path / "json_2.1.1" / "train").mkdir(parents=True)
    with pytest.raises(DataError, match=r"holds no game\.tw-pddl files.*alfworld-download"):
        AlfWorldEnv(str(tmp_path)).game_ids("train")


def test_unknown_split_is_named(env):
    with pytest.raises(ValueError, match="unknown split 'test'; expected one of train, valid_seen"):
        env.game_ids("test")


def test_unsolvable_game_file_is_rejected_with_its_path(tmp_path, small_root, one_per_task_type):
    import json
    import shutil

    game = one_per_task_type[0]
    shutil.copytree(small_root / "json_2.1.1" / game.game_id, tmp_path / "json_2.1.1" / game.game_id)
    path = tmp_path / "json_2.1.1" / game.game_id / "game.tw-pddl"
    path.write_text(json.dumps(json.loads(path.read_text()) | {"solvable": False}))
    with pytest.raises(DataError, match="not marked solvable") as err:
        AlfWorldEnv(str(tmp_path)).reset([game.game_id])
    assert str(path) in str(err.value)


def test_alfworld_data_env_var_selects_the_real_data_root(monkeypatch, small_root):
    monkeypatch.setenv("ALFWORLD_DATA", str(small_root))
    assert AlfWorldEnv("alfworld").root == small_root


@pytest.mark.parametrize(
    ("command", "admissible", "expected"),
    [
        ("put mug 1 in/on cabinet 1", ["move mug 1 to cabinet 1"], "move mug 1 to cabinet 1"),
        ("put mug 1 in cabinet 1", ["move mug 1 to cabinet 1"], "move mug 1 to cabinet 1"),
        ("put mug 1 on countertop 2", ["move mug 1 to countertop 2"], "move mug 1 to countertop 2"),
        ("move mug 1 to cabinet 1", ["put mug 1 in/on cabinet 1"], "put mug 1 in/on cabinet 1"),
        ("move mug 1 to cabinet 1", ["move mug 1 to cabinet 1"], "move mug 1 to cabinet 1"),
        ("put mug 1 in/on cabinet 1", ["put mug 1 in/on cabinet 1"], "put mug 1 in/on cabinet 1"),
        ("put mug 1 in cabinet 2", ["move mug 1 to cabinet 1"], "put mug 1 in cabinet 2"),
        ("go to cabinet 1", ["look"], "go to cabinet 1"),
    ],
)
def test_put_and_move_wordings_are_translated(command, admissible, expected):
    assert translate_command(command, admissible) == expected


def test_old_put_wording_wins_a_real_game(env, one_per_task_type):
    game = one_per_task_type[0]  # pick_and_place_simple
    plan = [
        c.replace("move ", "put ", 1).replace(" to ", " in/on ", 1) if c.startswith("move ") else c
        for c in game.walkthrough
    ]
    assert plan != list(game.walkthrough)
    env.reset([game.game_id])
    for command in plan:
        (step,) = env.step([command])
    assert step.won


def _timed_walk(root, game_ids, n_steps: int) -> tuple[list[tuple], float]:
    env = AlfWorldEnv(str(root), max_steps=25, text_cache=False, cache_games=0, engine="plain")
    start = time.perf_counter()
    trace = random_walk(env, game_ids, n_steps, seed=0)
    return trace, time.perf_counter() - start


def test_text_generation_cache_changes_nothing_but_speed(small_root, small_games):
    games = [g.game_id for g in small_games if g.split == "valid_unseen"][:6]
    textgen_cache.disable()
    try:
        plain, t_plain = _timed_walk(small_root, games, 520)
        textgen_cache.enable()
        cached, t_cached = _timed_walk(small_root, games, 520)
    finally:
        textgen_cache.enable()
    assert len(plain) >= 500
    assert cached == plain
    print(f"\n520 random steps: {t_plain:.1f}s without the text cache, {t_cached:.1f}s with it")
