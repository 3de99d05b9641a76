"""A search expert that acts only on what it has observed.

The planner's walkthrough is omniscient: it walks straight to an object hidden in a closed drawer,
which no policy can learn from observations. This expert instead sweeps the receptacles in the
order of the admissible ``go to`` commands, opens closed ones, remembers what it has seen, and
then carries out the task (take, clean / heat / cool / use the lamp, place). Its episodes are the
demonstrations for SFT (π0) and the expert positives of InversePRM.

It reads only the observation text and the admissible commands, exactly what a policy gets.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

__all__ = ["SearchExpert", "object_type_of"]

_SEEN_RE = re.compile(r"you see (.*?)(?:\.|$)", re.IGNORECASE | re.DOTALL)
_ITEM_RE = re.compile(r"\b(?:a|an)\s+([a-z]+ \d+)")

# The appliance each transforming task type uses, and its command verb.
_TRANSFORM = {
    "pick_clean_then_place_in_recep": ("clean", "sinkbasin"),
    "pick_heat_then_place_in_recep": ("heat", "microwave"),
    "pick_cool_then_place_in_recep": ("cool", "fridge"),
}


def object_type_of(name: str) -> str:
    """``"apple 2"`` → ``"apple"``."""
    return name.rsplit(" ", 1)[0]


@dataclass
class SearchExpert:
    """Observation-only expert for the six ALFWorld task types.

    Args:
        task_type: one of the six ALFWorld task types.
        obj: target object type (any case), e.g. ``"Apple"``.
        recep: goal receptacle type, e.g. ``"Fridge"`` (empty for ``look_at_obj_in_light``).
        toggle: lamp type for ``look_at_obj_in_light`` (``"DeskLamp"`` / ``"FloorLamp"``).
    """

    task_type: str
    obj: str
    recep: str = ""
    toggle: str = ""
    _location: str | None = None
    _holding: str | None = None
    _transformed: bool = False
    _visited: list[str] = field(default_factory=list)
    _seen: dict[str, str] = field(default_factory=dict)  # object name -> receptacle where seen
    _placed: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.obj, self.recep, self.toggle = self.obj.lower(), self.recep.lower(), self.toggle.lower()

    @property
    def needed(self) -> int:
        return 2 if self.task_type == "pick_two_obj_and_place" else 1

    def act(self, observation: str, admissible: list[str] | tuple[str, ...]) -> str:
        """Observe the last feedback and return the next command (always an admissible one)."""
        self._observe(observation)
        adm = list(admissible)
        command = self._decide(adm)
        self._track(command)
        return command

    # -- memory -------------------------------------------------------------------------------
    def _observe(self, observation: str) -> None:
        if self._location is None:
            return
        for match in _SEEN_RE.finditer(observation.lower()):
            for name in _ITEM_RE.findall(match.group(1)):
                if name not in self._placed:
                    self._seen[name] = self._location

    def _track(self, command: str) -> None:
        if command.startswith("go to "):
            self._location = command[len("go to ") :]
            if self._location not in self._visited:
                self._visited.append(self._location)
        elif command.startswith("take "):
            self._holding = command[len("take ") :].split(" from ")[0]
            self._seen.pop(self._holding, None)
        elif command.startswith(("move ", "put ")):
            self._placed.add(self._holding or "")
            self._holding, self._transformed = None, False

    # -- policy -------------------------------------------------------------------------------
    def _decide(self, adm: list[str]) -> str:
        if self._holding is not None:
            return self._with_object(adm)
        known = [
            n for n, loc in self._seen.items() if object_type_of(n) == self.obj and n not in self._placed
        ]
        for name in known:
            take = f"take {name} from {self._seen[name]}"
            if take in adm:
                return take
        if known:
            return self._go(self._seen[known[0]], adm)
        return self._explore(adm)

    def _with_object(self, adm: list[str]) -> str:
        held = self._holding
        if self.task_type == "look_at_obj_in_light":
            lamps = [n for n in self._seen if object_type_of(n) == self.toggle]
            for lamp in lamps:
                if f"use {lamp}" in adm:
                    return f"use {lamp}"
            return self._go(self._seen[lamps[0]], adm) if lamps else self._explore(adm)
        if self.task_type in _TRANSFORM and not self._transformed:
            verb, appliance = _TRANSFORM[self.task_type]
            for cmd in adm:
                if cmd.startswith(f"{verb} {held} with {appliance}"):
                    self._transformed = True
                    return cmd
            return self._go(self._first_of_type(appliance, adm), adm)
        target = self._first_of_type(self.recep, adm)
        for cmd in adm:
            if cmd in (f"move {held} to {target}", f"put {held} in/on {target}"):
                return cmd
        return self._go(target, adm)

    def _go(self, receptacle: str | None, adm: list[str]) -> str:
        if receptacle is not None and self._location != receptacle and f"go to {receptacle}" in adm:
            return f"go to {receptacle}"
        if receptacle is not None and f"open {receptacle}" in adm:
            return f"open {receptacle}"
        return self._explore(adm)

    def _first_of_type(self, rtype: str, adm: list[str]) -> str | None:
        names = sorted({c[len("go to ") :] for c in adm if c.startswith("go to ")} | {self._location or ""})
        return next((n for n in names if n and object_type_of(n) == rtype), None)

    def _explore(self, adm: list[str]) -> str:
        here = self._location
        if here is not None and f"open {here}" in adm:
            return f"open {here}"
        for cmd in adm:
            if cmd.startswith("go to ") and cmd[len("go to ") :] not in self._visited:
                return cmd
        # Everything visited once: sweep again (objects may have been missed), oldest first.
        if self._visited:
            oldest = self._visited.pop(0)
            if f"go to {oldest}" in adm:
                return f"go to {oldest}"
        return "look" if "look" in adm else adm[0]
