"""ALFWorld-format games: sampling a room and a task, writing the PDDL problem, verification.

Games are written from what the installed ``alfworld`` package ships: the FloorPlan receptacle
layouts, the object lists of each scene, the PDDL domain, the grammar and the goal library. Each
game is checked with the planner (solvable; goal not already true at the start), its plan stored as
``walkthrough``, and the observation-only :class:`~agentprm.envs.expert.SearchExpert` is replayed in
the real engine; its actions are stored when it wins. Sets of games (generation in parallel,
storage, materialisation as ALFWorld data folders) live in :mod:`agentprm.envs.gamesets`.

The games are synthetic: success rates on them are not comparable to the ALFWorld splits.
"""

from __future__ import annotations

import functools
import json
import random
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Literal

from agentprm.envs.expert import SearchExpert

TASK_TYPES = (
    "pick_and_place_simple",
    "look_at_obj_in_light",
    "pick_clean_then_place_in_recep",
    "pick_heat_then_place_in_recep",
    "pick_cool_then_place_in_recep",
    "pick_two_obj_and_place",
)
"""The six ALFWorld task types, in ALFWorld's order (task ids 1-6)."""

__all__ = [
    "TASK_TYPES",
    "GameSpec",
    "game_data",
    "generate_game",
    "logic_files",
    "play_expert",
]

Size = Literal["small", "standard"]

# The appliance a transforming task needs in the room.
_APPLIANCE = {
    "pick_clean_then_place_in_recep": "SinkBasin",
    "pick_heat_then_place_in_recep": "Microwave",
    "pick_cool_then_place_in_recep": "Fridge",
}
_ABILITY = {
    "pick_clean_then_place_in_recep": "Cleanable",
    "pick_heat_then_place_in_recep": "Heatable",
    "pick_cool_then_place_in_recep": "Coolable",
}
_LAMP_HOLDERS = ("Desk", "SideTable", "Dresser", "Shelf", "CoffeeTable", "TVStand", "DiningTable")
_MANGLE = (("-", "_minus_"), ("#", "-"), ("|", "_bar_"), ("+", "_plus_"), (".", "_dot_"), (",", "_comma_"))


@dataclass(frozen=True)
class GameSpec:
    """One built-in game, as stored in the package.

    Attributes:
        game_id: ``<split>/<task_type>-<Obj>-<MRecep>-<Recep>-<scene>/trial_<n>`` (the folder under
            ``json_2.1.1``).
        split: ``train``, ``valid_seen`` or ``valid_unseen``.
        task_type: one of :data:`TASK_TYPES`.
        scene: the FloorPlan number the layout comes from.
        task_desc: the goal sentence written into the grammar.
        problem: the PDDL problem (``initial_state.pddl``).
        traj_data: the ``traj_data.json`` content.
        walkthrough: the planner's plan (omniscient; for verification, not imitation).
        expert_actions: the search expert's winning actions, or None when it did not win.
    """

    game_id: str
    split: str
    task_type: str
    scene: int
    task_desc: str
    problem: str
    traj_data: dict
    walkthrough: tuple[str, ...]
    expert_actions: tuple[str, ...] | None


# --------------------------------------------------------------------------------------------
# Scene content from the alfworld package
# --------------------------------------------------------------------------------------------
def _constants():
    import alfworld.gen.constants as constants

    return constants


def _scene_receptacles(scene: int) -> dict[str, list]:
    from alfworld.gen import layouts

    path = resources.files(layouts) / f"FloorPlan{scene}-openable.json"
    return json.loads(path.read_text())


def _scene_objects(scene: int) -> list[str]:
    from alfworld.gen import layouts

    return json.loads((resources.files(layouts) / f"FloorPlan{scene}-objects.json").read_text())


def _rtype(receptacle_id: str) -> str:
    parts = receptacle_id.split("|")
    return parts[-1] if parts[-1].endswith("Basin") else parts[0]


def _scenes_for(task_type: str, split: str) -> list[int]:
    c = _constants()
    pool = c.TEST_SCENE_NUMBERS if split == "valid_unseen" else c.TRAIN_SCENE_NUMBERS
    kinds = c.GOALS_VALID[task_type]
    return sorted(s for s in pool if any(s in c.SCENE_TYPE[k] for k in kinds))


def _pickupable(otype: str) -> bool:
    c = _constants()
    return (
        otype in c.OBJECTS_SET
        and otype not in c.VAL_RECEPTACLE_OBJECTS.keys() - c.MOVABLE_RECEPTACLES_SET
        and otype not in c.VAL_ACTION_OBJECTS["Toggleable"]
        and "Sliced" not in otype
        and any(otype in objs for objs in c.VAL_RECEPTACLE_OBJECTS.values())
    )


# --------------------------------------------------------------------------------------------
# Sampling one room and task
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Room:
    receptacles: dict[str, str]  # receptacle id -> location id
    objects: list[tuple[str, str]]  # (object id, receptacle id)
    agent_location: str
    obj: str
    recep: str
    toggle: str


def _fits(otype: str, rid: str) -> bool:
    return otype in _constants().VAL_RECEPTACLE_OBJECTS.get(_rtype(rid), ())


def _sample_room(rng: random.Random, task_type: str, scene: int, size: Size) -> _Room | None:
    c = _constants()
    layout = _scene_receptacles(scene)
    rids = sorted(layout)
    if size == "small" and len(rids) < 4:
        return None  # small rooms hold 4-7 receptacles
    present = sorted({o for o in _scene_objects(scene) if _pickupable(o)})
    ability = _ABILITY.get(task_type)
    candidates = [o for o in present if ability is None or o in c.VAL_ACTION_OBJECTS[ability]]
    if task_type == "look_at_obj_in_light":
        candidates = [o for o in candidates if o not in c.MOVABLE_RECEPTACLES_SET]
    rng.shuffle(candidates)
    appliance = _APPLIANCE.get(task_type)
    for obj in candidates:
        holders = [r for r in rids if _fits(obj, r) and _rtype(r) != appliance]
        goals = sorted({_rtype(r) for r in holders}) if task_type != "look_at_obj_in_light" else [""]
        if appliance and not any(_rtype(r) == appliance for r in rids):
            return None
        if not goals or not holders:
            continue
        recep = rng.choice(goals)
        room = _build_room(rng, task_type, scene, size, obj, recep, layout, present)
        if room is not None:
            return room
    return None


def _build_room(rng, task_type, scene, size, obj, recep, layout, present) -> _Room | None:
    rids = sorted(layout)
    appliance = _APPLIANCE.get(task_type)
    toggle = ""
    required: list[str] = []
    if appliance:
        required.append(rng.choice([r for r in rids if _rtype(r) == appliance]))
    if recep:
        required.append(rng.choice([r for r in rids if _rtype(r) == recep and r not in required]))
    if task_type == "look_at_obj_in_light":
        lamp_holders = [r for r in rids if _rtype(r) in _LAMP_HOLDERS]
        if not lamp_holders:
            return None
        toggle = rng.choice(["DeskLamp", "FloorLamp"])
        required.append(rng.choice(lamp_holders))
    sources = [r for r in rids if _fits(obj, r) and _rtype(r) != recep and _rtype(r) != appliance]
    if not sources:
        return None
    required.append(rng.choice(sources))
    required = list(dict.fromkeys(required))
    if size == "small":
        extra = [r for r in rids if r not in required]
        n_total = min(len(rids), max(len(required), rng.randint(4, 7)))
        chosen = required + rng.sample(extra, n_total - len(required))
    else:
        chosen = rids
    chosen_sources = [r for r in chosen if r in sources]
    objects: list[tuple[str, str]] = []
    n_targets = 2 if task_type == "pick_two_obj_and_place" else 1
    n_targets += rng.randint(0, 1)
    for _ in range(n_targets):
        objects.append((obj, rng.choice(chosen_sources)))
    if toggle:
        objects.append((toggle, required[-2] if len(required) > 1 else required[0]))
    n_other = rng.randint(2, 4) if size == "small" else rng.randint(8, 14)
    others = [o for o in present if o != obj]
    for _ in range(n_other):
        if not others:
            break
        otype = rng.choice(others)
        spots = [r for r in chosen if _fits(otype, r)]
        if spots:
            objects.append((otype, rng.choice(spots)))
    counts: dict[str, int] = {}
    ids = []
    for otype, rid in objects:
        counts[otype] = counts.get(otype, 0) + 1
        ids.append((f"{otype}|{scene}|{counts[otype]}", rid))
    locations = {r: "loc|{:g}|{:g}|{:g}|{:g}".format(*layout[r]) for r in chosen}
    agent = f"loc|{rng.uniform(-2, 2):g}|{rng.uniform(-2, 2):g}|0|0"
    return _Room(dict(sorted(locations.items())), ids, agent, obj, recep, toggle)


def _mangle(text: str) -> str:
    for a, b in _MANGLE:
        text = text.replace(a, b)
    return text


def _problem(task_type: str, room: _Room) -> str:
    c = _constants()
    import alfworld.gen.goal_library as glib

    rtypes = sorted(set(c.RECEPTACLES) - set(c.MOVABLE_RECEPTACLES))
    otypes = sorted(set(c.OBJECTS_SET) - set(rtypes))
    locs = sorted(set(room.receptacles.values()) | {room.agent_location})
    decl = ["agent1 # agent"] + [f"{t}Type # otype" for t in otypes] + [f"{t}Type # rtype" for t in rtypes]
    decl += [f"{o} # object" for o, _ in room.objects] + [f"{r} # receptacle" for r in room.receptacles]
    decl += [f"{loc} # location" for loc in locs]
    init = [f"(receptacleType {r} {_rtype(r)}Type)" for r in room.receptacles]
    init += [f"(objectType {o} {o.split('|')[0]}Type)" for o, _ in room.objects]
    present = sorted({o.split("|")[0] for o, _ in room.objects})
    for rt in sorted({_rtype(r) for r in room.receptacles}):
        init += [
            f"(canContain {rt}Type {ot}Type)" for ot in present if ot in c.VAL_RECEPTACLE_OBJECTS.get(rt, ())
        ]
    abilities = (("cleanable", "Cleanable"), ("heatable", "Heatable"), ("coolable", "Coolable"))
    abilities += (("toggleable", "Toggleable"), ("sliceable", "Sliceable"))
    for o, rid in room.objects:
        otype = o.split("|")[0]
        if otype not in c.VAL_ACTION_OBJECTS["Toggleable"]:
            init.append(f"(pickupable {o})")
        if otype in c.MOVABLE_RECEPTACLES_SET:
            init.append(f"(isReceptacleObject {o})")
        init += [f"({p} {o})" for p, k in abilities if otype in c.VAL_ACTION_OBJECTS[k]]
        init += [f"(inReceptacle {o} {rid})", f"(objectAtLocation {o} {room.receptacles[rid]})"]
    init += [f"(openable {r})" for r in room.receptacles if _rtype(r) in c.OPENABLE_CLASS_SET]
    init += [f"(atLocation agent1 {room.agent_location})"]
    init += [f"(receptacleAtLocation {r} {loc})" for r, loc in room.receptacles.items()]
    goal = glib.gdict[task_type]["pddl"].format(obj=room.obj, recep=room.recep, toggle=room.toggle, mrecep="")
    text = "(define (problem plan_custom)\n(:domain alfred)\n(:objects\n  " + "\n  ".join(decl)
    text += "\n  )\n(:init\n  " + "\n  ".join(init) + "\n  )\n" + goal
    return _mangle(text)


def _task_desc(rng: random.Random, task_type: str, room: _Room) -> str:
    import alfworld.gen.goal_library as glib

    template = rng.choice(glib.gdict[task_type]["templates"])
    return template.format(
        obj=room.obj.lower(), recep=room.recep.lower(), toggle=room.toggle.lower(), mrecep=""
    )


# --------------------------------------------------------------------------------------------
# Assembly, verification
# --------------------------------------------------------------------------------------------
@functools.cache
def logic_files() -> tuple[str, str]:
    """The installed PDDL domain and grammar texts."""
    from alfworld.info import ALFRED_PDDL_PATH, ALFRED_TWL2_PATH

    return Path(ALFRED_PDDL_PATH).read_text(), Path(ALFRED_TWL2_PATH).read_text()


def game_data(spec: GameSpec) -> dict:
    """The ``game.tw-pddl`` content of a game, assembled from the installed domain and grammar."""
    domain, grammar = logic_files()
    return {
        "pddl_domain": domain,
        "grammar": grammar.replace("UNKNOWN GOAL", spec.task_desc),
        "pddl_problem": spec.problem,
        "solvable": True,
        "walkthrough": list(spec.walkthrough),
    }


def _start(data: dict, *, plan: bool):
    import textworld
    from alfworld.agents.environment.alfred_tw_env import AlfredDemangler
    from textworld.envs.pddl import PddlEnv

    infos = textworld.EnvInfos(admissible_commands=True, won=True, policy_commands=plan)
    env = AlfredDemangler(shuffle=False)(PddlEnv(infos))
    env.load(data)
    return env


def _verify(data: dict, max_plan: int) -> tuple[str, ...] | None:
    """The planner's winning plan, or None when unsolvable / already won / too long."""
    state = _start(data, plan=True).reset()
    plan = tuple(state.get("policy_commands") or ())
    if state["won"] or not plan or len(plan) > max_plan:
        return None
    env = _start(data, plan=False)
    state = env.reset()
    for command in plan:
        state, _, _ = env.step(command)
    return plan if state["won"] else None


def play_expert(data: dict, traj_data: dict, max_steps: int = 60) -> tuple[str, ...] | None:
    """Replay the search expert in the real engine; its actions when it wins, else None."""
    params = traj_data["pddl_params"]
    expert = SearchExpert(
        traj_data["task_type"], params["object_target"], params["parent_target"], params["toggle_target"]
    )
    env = _start(data, plan=False)
    state = env.reset()
    actions: list[str] = []
    for _ in range(max_steps):
        command = expert.act(state.feedback, state["admissible_commands"])
        actions.append(command)
        state, _, _ = env.step(command)
        if state["won"]:
            return tuple(actions)
    return None


def generate_game(split: str, index: int, size: Size, seed: int = 0, attempt: int = 0) -> GameSpec | None:
    """Generate and verify game ``index`` of a split; None when this attempt gives no valid game.

    The task type is ``TASK_TYPES[index % 6]``, so any prefix of a split is balanced; the game
    depends only on the arguments (a string-seeded RNG), so games can be made in any order and in
    parallel. A failed attempt (unsolvable room, goal already true, plan too long) is retried by
    the caller with ``attempt + 1``.
    """
    task_type = TASK_TYPES[index % len(TASK_TYPES)]
    rng = random.Random(f"agentprm/{size}/{split}/{index}/{seed}/{attempt}")
    scene = rng.choice(_scenes_for(task_type, split))
    room = _sample_room(rng, task_type, scene, size)
    if room is None:
        return None
    trial = f"trial_s{seed}_{index:05d}_{attempt}"
    traj = {
        "task_id": trial,
        "task_type": task_type,
        "pddl_params": {
            "object_target": room.obj,
            "parent_target": room.recep,
            "mrecep_target": "",
            "toggle_target": room.toggle,
            "object_sliced": False,
        },
        "scene": {"floor_plan": f"FloorPlan{scene}"},
        "agentprm": {"size": size, "split": split, "index": index, "seed": seed, "attempt": attempt},
        "turk_annotations": {"anns": []},
    }
    folder = f"{task_type}-{room.obj}-None-{room.recep or 'None'}-{scene}"
    spec = GameSpec(
        game_id=f"{split}/{folder}/{trial}",
        split=split,
        task_type=task_type,
        scene=scene,
        task_desc=_task_desc(rng, task_type, room),
        problem=_problem(task_type, room),
        traj_data=traj,
        walkthrough=(),
        expert_actions=None,
    )
    plan = _verify(game_data(spec), max_plan=40)
    if plan is None:
        return None
    data = game_data(spec) | {"walkthrough": list(plan)}
    expert = play_expert(data, traj)
    return GameSpec(**{**asdict(spec), "walkthrough": plan, "expert_actions": expert})
