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
from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = ["SearchExpert", "object_type_of"]

_SEEN_RE = re.compile(r"you see (.*?)(?:\.|$)", re.IGNORECASE | re.DOTALL)
_ITEM_RE = re.compile(r"\b(?:a|an)\s+([a-z]+ \d+)")
_PLACE_RE = re.compile(r"(?:move|put) ([a-z]+ \d+) (?:to|in/on) ([a-z]+ \d+)")
_TRANSFORM_RE = re.compile(r"(?:clean|heat|cool) ([a-z]+ \d+) with [a-z]+ \d+")

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

    Its memory (where it is, what it holds, what it has seen where, what it has visited, cleaned /
    heated / cooled and placed) is updated only by :meth:`observe`, from a command and the feedback
    it got, and :meth:`decide` is a pure function of that memory: so an expert rebuilt from any
    episode's history (:meth:`from_history`, a learner's included) acts exactly as one that had
    taken those commands itself. From a learner's state it first undoes what blocks the task: it
    puts down an object of the wrong type, and takes back a target placed before its cleaning,
    heating or cooling.

    Args:
        task_type: one of the six ALFWorld task types.
        obj: target object type (any case), e.g. ``"Apple"``.
        recep: goal receptacle type, e.g. ``"Fridge"`` (empty for ``look_at_obj_in_light``).
        toggle: lamp type for ``look_at_obj_in_light`` (``"DeskLamp"`` / ``"FloorLamp"``).
        memory: How many of the latest observations it remembers objects from (None: all). A
            policy whose prompt shows the last k turns sees k + 1 observations, but every command
            (its ``done`` list): an expert with ``memory = k + 1`` knows exactly what that policy
            can know, so its values are targets the policy can learn. What it learns from its
            own commands (what it holds, put down, cleaned, where it went) it never forgets.
    """

    task_type: str
    obj: str
    recep: str = ""
    toggle: str = ""
    memory: int | None = None
    _location: str | None = None
    _holding: str | None = None
    _visited: list[str] = field(default_factory=list)
    _seen: dict[str, str] = field(default_factory=dict)  # object name -> receptacle where seen
    _placed: set[str] = field(default_factory=set)  # targets in the goal receptacle, done
    _transformed: set[str] = field(default_factory=set)  # objects cleaned / heated / cooled
    _last: str | None = None  # the command act() returned last (observed with the next feedback)
    _clock: int = 0  # observations so far
    _seen_at: dict[str, int | None] = field(default_factory=dict)  # when; None: from a command

    def __post_init__(self) -> None:
        self.obj, self.recep, self.toggle = self.obj.lower(), self.recep.lower(), self.toggle.lower()
        if self.memory is not None and self.memory < 1:
            raise ValueError(f"memory must be >= 1 observation (or None), found {self.memory}")

    @classmethod
    def from_history(
        cls,
        task_type: str,
        obj: str,
        recep: str,
        toggle: str,
        turns: Sequence[tuple[str, str]],
        observation: str,
        memory: int | None = None,
    ) -> SearchExpert:
        """The expert's memory after an episode's history: ``turns`` are (observation, command)
        pairs in order, ``observation`` the current one (the feedback of the last command)."""
        expert = cls(task_type, obj, recep, toggle, memory)
        feedbacks = [o for o, _ in turns[1:]] + [observation]
        expert.observe(None, turns[0][0] if turns else observation)
        for (_, command), feedback in zip(turns, feedbacks, strict=True):
            expert.observe(command, feedback)
        return expert

    def copy(self) -> SearchExpert:
        """An independent expert with the same memory."""
        return SearchExpert(
            self.task_type,
            self.obj,
            self.recep,
            self.toggle,
            self.memory,
            self._location,
            self._holding,
            list(self._visited),
            dict(self._seen),
            set(self._placed),
            set(self._transformed),
            self._last,
            self._clock,
            dict(self._seen_at),
        )

    @property
    def needed(self) -> int:
        return 2 if self.task_type == "pick_two_obj_and_place" else 1

    def act(self, observation: str, admissible: list[str] | tuple[str, ...]) -> str:
        """Observe the last command's feedback and return the next command (an admissible one)."""
        self.observe(self._last, observation)
        self._last = self.decide(admissible)
        return self._last

    # -- memory -------------------------------------------------------------------------------
    def observe(self, command: str | None, feedback: str) -> None:
        """Update the memory with a command just taken (None at the start) and its feedback."""
        self._clock += 1
        if command is not None and feedback.strip() != "Nothing happens.":
            self._track(command)
        if self._location is None:
            return
        for match in _SEEN_RE.finditer(feedback.lower()):
            for name in _ITEM_RE.findall(match.group(1)):
                if name not in self._placed:
                    self._seen[name] = self._location
                    self._seen_at[name] = self._clock

    def _track(self, command: str) -> None:
        if command.startswith("go to "):
            self._location = command[len("go to ") :]
            if self._location not in self._visited:
                self._visited.append(self._location)
        elif command.startswith("take "):
            self._holding = command[len("take ") :].split(" from ")[0]
            self._seen.pop(self._holding, None)
        elif (m := _PLACE_RE.fullmatch(command)) and m.group(1) == self._holding:
            held, where = m.group(1), m.group(2)
            if self._completes(held, where):
                self._placed.add(held)
            else:  # put down elsewhere (or too early): it lies there now
                self._seen[held] = where
                self._seen_at[held] = None
            self._holding = None
        elif (m := _TRANSFORM_RE.fullmatch(command)) and m.group(1) == self._holding:
            self._transformed.add(m.group(1))

    def _completes(self, held: str, where: str) -> bool:
        """Whether placing ``held`` at ``where`` counts towards the goal."""
        if object_type_of(held) != self.obj or object_type_of(where) != self.recep:
            return False
        return self.task_type not in _TRANSFORM or held in self._transformed

    # -- policy -------------------------------------------------------------------------------
    def decide(self, admissible: list[str] | tuple[str, ...]) -> str:
        """The next command (an admissible one) given the memory; changes nothing."""
        adm = list(admissible)
        if self._holding is not None:
            if object_type_of(self._holding) != self.obj:
                return self._put_down(adm)
            return self._with_object(adm)
        seen = self._remembered()
        known = [n for n in seen if object_type_of(n) == self.obj and n not in self._placed]
        for name in known:
            take = f"take {name} from {seen[name]}"
            if take in adm:
                return take
        if known:
            return self._go(seen[known[0]], adm)
        return self._explore(adm)

    def _remembered(self) -> dict[str, str]:
        """Where it remembers each object: all sightings, or those of its last ``memory`` observations."""
        if self.memory is None:
            return self._seen
        return {
            n: loc
            for n, loc in self._seen.items()
            if (at := self._seen_at.get(n)) is None or self._clock - at < self.memory
        }

    def _put_down(self, adm: list[str]) -> str:
        held = self._holding
        for cmd in adm:
            if cmd.startswith((f"move {held} to ", f"put {held} in/on ")):
                return cmd
        return self._explore(adm)

    def _with_object(self, adm: list[str]) -> str:
        held = self._holding
        if self.task_type == "look_at_obj_in_light":
            seen = self._remembered()
            lamps = [n for n in seen if object_type_of(n) == self.toggle]
            for lamp in lamps:
                if f"use {lamp}" in adm:
                    return f"use {lamp}"
            return self._go(seen[lamps[0]], adm) if lamps else self._explore(adm)
        if self.task_type in _TRANSFORM and held not in self._transformed:
            verb, appliance = _TRANSFORM[self.task_type]
            for cmd in adm:
                if cmd.startswith(f"{verb} {held} with {appliance}"):
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
