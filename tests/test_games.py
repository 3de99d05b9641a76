"""The built-in game sets and their generator, through the real alfworld engine."""

from __future__ import annotations

import json
import re
from collections import Counter

import pytest

from agentprm.envs.alfworld import AlfWorldEnv
from agentprm.envs.games import TASK_TYPES, GameSpec, _problem, _Room, _verify, game_data, generate_game
from agentprm.envs.gamesets import BUILTIN_SETS, builtin_root, generate_set, load_set, materialize, save_set


def _receptacles(problem: str) -> int:
    return len(re.findall(r"^  \S+ - receptacle$", problem, flags=re.MULTILINE))


def _play(env: AlfWorldEnv, games: list[GameSpec], plans: list[tuple[str, ...]]):
    """Play each game's plan in one batch; return the final EnvSteps."""
    steps = env.reset([g.game_id for g in games])
    for t in range(max(len(p) for p in plans)):
        steps = env.step([p[t] if t < len(p) else None for p in plans])
    return steps


@pytest.mark.parametrize(
    ("name", "train", "held_out"), [("small", 200, 40), ("standard", 120, 60)], ids=["small", "standard"]
)
def test_builtin_sets_have_the_promised_sizes_and_balance(name, train, held_out):
    games = load_set(name)
    by_split = Counter(g.split for g in games)
    assert by_split["train"] >= train
    assert by_split["valid_unseen"] >= held_out
    for split in by_split:
        per_type = Counter(g.task_type for g in games if g.split == split)
        assert set(per_type) == set(TASK_TYPES), split
        assert max(per_type.values()) - min(per_type.values()) <= 1, (split, per_type)
    assert len({g.game_id for g in games}) == len(games)
    # held-out layouts are never used for training
    train_scenes = {g.scene for g in games if g.split == "train"}
    assert not train_scenes & {g.scene for g in games if g.split == "valid_unseen"}


def test_small_rooms_have_four_to_seven_receptacles(small_games):
    counts = [_receptacles(g.problem) for g in small_games]
    assert min(counts) >= 4 and max(counts) <= 7, Counter(counts)


def test_standard_rooms_use_the_full_layouts():
    games = load_set("standard")
    assert sum(_receptacles(g.problem) for g in games) / len(games) > 10


def test_nearly_every_builtin_game_has_an_expert_demonstration():
    for name in BUILTIN_SETS:
        games = load_set(name)
        with_demo = sum(g.expert_actions is not None for g in games)
        assert with_demo / len(games) >= 0.95, (name, with_demo, len(games))


def test_generation_is_deterministic_and_reproduces_the_shipped_games(small_games):
    shipped = [small_games[0], next(g for g in small_games if g.split == "valid_unseen")]
    for game in shipped:
        meta = game.traj_data["agentprm"]
        again = generate_game(meta["split"], meta["index"], meta["size"], meta["seed"], meta["attempt"])
        assert again == game


def test_parallel_generation_gives_the_same_games_as_serial(tmp_path):
    counts = {"train": 3, "valid_unseen": 2}
    serial = generate_set(counts, "small", seed=5, workers=1, progress=False)
    parallel = generate_set(counts, "small", seed=5, workers=2, progress=False)
    assert serial == parallel
    assert [g.split for g in serial] == ["train"] * 3 + ["valid_unseen"] * 2
    assert [g.task_type for g in serial] == [*TASK_TYPES[:3], *TASK_TYPES[:2]]


def test_every_game_is_verified_by_the_planner(one_per_task_type):
    for game in one_per_task_type:
        assert game.walkthrough and _verify(game_data(game), max_plan=40) == game.walkthrough


def test_a_goal_already_true_at_the_start_is_rejected():
    # The mug already sits in the cabinet: the pick-and-place goal holds before any action.
    room = _Room(
        receptacles={"Cabinet|1": "loc|1|1|0|0", "CounterTop|1": "loc|2|2|0|0"},
        objects=[("Mug|1|1", "Cabinet|1")],
        agent_location="loc|0|0|0|0",
        obj="Mug",
        recep="Cabinet",
        toggle="",
    )
    spec = GameSpec(
        "train/x/trial_0", "train", "pick_and_place_simple", 1, "put a mug in cabinet", "", {}, (), None
    )
    data = game_data(spec) | {"pddl_problem": _problem("pick_and_place_simple", room)}
    assert _verify(data, max_plan=40) is None
    moved = _Room(**{**room.__dict__, "objects": [("Mug|1|1", "CounterTop|1")]})
    data = game_data(spec) | {"pddl_problem": _problem("pick_and_place_simple", moved)}
    assert _verify(data, max_plan=40) is not None


def test_one_game_of_each_task_type_is_won_by_its_walkthrough(small_root, one_per_task_type):
    env = AlfWorldEnv(str(small_root), max_steps=50)
    final = _play(env, one_per_task_type, [g.walkthrough for g in one_per_task_type])
    assert [s.task_type for s in final] == list(TASK_TYPES)
    assert all(s.won and s.done and s.failure is None for s in final), final


def test_one_game_of_each_task_type_is_won_by_the_search_expert(small_root, one_per_task_type):
    env = AlfWorldEnv(str(small_root), max_steps=60)
    final = _play(env, one_per_task_type, [g.expert_actions for g in one_per_task_type])
    assert all(s.won for s in final), final
    # The expert searches: it takes at least as many actions as the omniscient planner.
    assert all(len(g.expert_actions) >= len(g.walkthrough) for g in one_per_task_type)


def test_materialized_folders_are_alfworld_data(small_root, small_games):
    game = small_games[0]
    folder = small_root / "json_2.1.1" / game.game_id
    assert sorted(p.name for p in folder.iterdir()) == [
        "game.tw-pddl",
        "initial_state.pddl",
        "traj_data.json",
    ]
    data = json.loads((folder / "game.tw-pddl").read_text())
    assert data["solvable"] is True and game.task_desc in data["grammar"]
    assert json.loads((folder / "traj_data.json").read_text())["task_type"] == game.task_type
    assert not [p for p in small_root.parent.iterdir() if p.name.startswith(".")]  # no temp dirs left
    assert builtin_root("small") == small_root  # materialised once


def test_save_and_load_round_trip(tmp_path, one_per_task_type):
    save_set(tmp_path / "mine.json.gz", "mine", one_per_task_type)
    assert load_set(str(tmp_path / "mine.json.gz")) == one_per_task_type
    root = materialize(one_per_task_type, tmp_path / "root")
    assert len(AlfWorldEnv(str(root)).game_ids("train")) == 6


def test_unknown_set_names_the_choices():
    with pytest.raises(FileNotFoundError, match="built-in sets are small, standard"):
        load_set("nope")


def test_shipped_sets_stay_small():
    from importlib import resources

    folder = resources.files("agentprm") / "data" / "games"
    total = sum((folder / f"{n}.json.gz").stat().st_size for n in BUILTIN_SETS)
    assert total < 5 * 2**20


@pytest.mark.slow
@pytest.mark.parametrize("name", BUILTIN_SETS)
def test_every_builtin_game_is_won_by_walkthrough_and_expert(name):
    games = load_set(name)
    env = AlfWorldEnv(str(builtin_root(name)), max_steps=80)
    for i in range(0, len(games), 16):
        batch = games[i : i + 16]
        assert all(s.won for s in _play(env, batch, [g.walkthrough for g in batch]))
        demos = [g for g in batch if g.expert_actions]
        assert all(s.won for s in _play(env, demos, [g.expert_actions for g in demos]))


def test_an_attempt_past_its_time_limit_is_killed_and_retried(monkeypatch):
    import time

    import agentprm.envs.gamesets as gamesets

    def stuck(split, index, size, seed, attempt):  # runs in the forked worker: a planner that never returns
        time.sleep(60)

    monkeypatch.setattr(gamesets, "generate_game", stuck)
    start = time.monotonic()
    with pytest.raises(RuntimeError, match="no valid game for train #0 after 2 attempts"):
        generate_set({"train": 1}, "small", timeout=0.5, max_attempts=2, progress=False)
    assert time.monotonic() - start < 20  # both stuck attempts were killed, not waited for
