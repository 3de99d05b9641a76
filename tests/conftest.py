"""Shared fixtures: the built-in games are materialised once per session into a temporary cache."""

from __future__ import annotations

import os

# Imported before any test: Lightning's log handler then writes to the session's stderr, not to the
# captured stream of whichever test first imports it (closed when that test ends).
import lightning.pytorch  # noqa: F401
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session", autouse=True)
def _agentprm_cache(tmp_path_factory: pytest.TempPathFactory):
    """Keep every test's materialised games out of the user's ~/.cache."""
    if "AGENTPRM_CACHE" in os.environ:
        yield os.environ["AGENTPRM_CACHE"]
        return
    path = tmp_path_factory.mktemp("agentprm-cache")
    os.environ["AGENTPRM_CACHE"] = str(path)
    yield str(path)
    os.environ.pop("AGENTPRM_CACHE", None)


@pytest.fixture(scope="session")
def small_games():
    from agentprm.envs.gamesets import load_set

    return load_set("small")


@pytest.fixture(scope="session")
def small_root(_agentprm_cache):
    from agentprm.envs.gamesets import builtin_root

    return builtin_root("small")


@pytest.fixture(scope="session")
def one_per_task_type(small_games):
    """The first training game of each of the six task types."""
    from agentprm.envs.games import TASK_TYPES

    return [next(g for g in small_games if g.split == "train" and g.task_type == t) for t in TASK_TYPES]


@pytest.fixture(scope="session")
def scripted_rollouts(tmp_path_factory, small_root, small_games):
    """A rollout directory with a clear PRM signal on 12 training games, played in the real engine:
    the planner's walkthrough (won), a 'look' detour then the walkthrough (won later), and an
    'inventory' loop (lost)."""
    from agentprm.envs.alfworld import AlfWorldEnv
    from agentprm.records import write_jsonl
    from agentprm.rollout import play, scripted

    out = tmp_path_factory.mktemp("rollouts")
    games = [g for g in small_games if g.split == "train"][:12]
    env = AlfWorldEnv(str(small_root), max_steps=10)
    ids = [g.game_id for g in games]
    plans = [
        {i: g.walkthrough for i, g in enumerate(games)},
        {i: ["look", *g.walkthrough] for i, g in enumerate(games)},
        {i: ["inventory"] * 10 for i in range(len(games))},
    ]
    trajectories = [t for k, p in enumerate(plans) for t in play(env, ids, scripted(p), policy_id=f"p{k}")]
    write_jsonl(out / "rollouts.jsonl", trajectories)
    return out
