"""The one renderer every stage uses (state → prompt text and chat messages) and the response parser.

Rollouts, targets, SFT, PRM training, DPO and evaluation all go through :class:`Renderer`, so the
same :class:`~agentprm.records.State` gives the same prompt text everywhere. The PRM scores the
pair (state, full response) as a two-message conversation; the environment only ever sees the
command that :func:`parse_response` extracts and :func:`normalize_command` normalizes.

Built-in templates (package data ``agentprm/templates/*.j2``):

- ``paper``: the structure of the ALFWorld prompt of Choudhury 2025 (arXiv:2502.10325): role,
  task, (observation, action) history, reminder of the task, current observation, candidate
  actions, instructions and the ``REASON: … / ACTION: …`` answer format.
- ``compact``: one short line per item, for tiny models with a word-level tokenizer.

A user's own Jinja2 file receives the same variables (:data:`TEMPLATE_VARIABLES`) and the
``oneline`` filter (collapses all whitespace, newlines included, to single spaces).
"""

from __future__ import annotations

import importlib.resources
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import jinja2
import jinja2.meta

from agentprm.records import State

BUILTIN_TEMPLATES: tuple[str, ...] = ("paper", "compact")
"""Names of the templates shipped with the package."""

TEMPLATE_VARIABLES: dict[str, str] = {
    "task": "str: the task sentence",
    "observation": "str: the current observation",
    "admissible_commands": "list[str]: the candidate commands, in the environment's order",
    "history": "list[dict]: {'observation', 'command'} of the turns inside the window, oldest first",
    "earlier_commands": "list[str]: commands of the turns older than the window, oldest first",
    "omitted_turns": "int: how many turns are older than the window (len(earlier_commands))",
    "turn": "int: the index of the current turn",
    "response_format": "str: 'reason_action' or 'action', the answer format to ask for",
}
"""The variables every template receives, with their meaning."""

ResponseFormat = Literal["reason_action", "action"]

_MARKER_REASON = "REASON:"
_MARKER_ACTION = "ACTION:"


def _oneline(text: str) -> str:
    """Collapse every run of whitespace (newlines included) to one space and strip."""
    return " ".join(str(text).split())


class Renderer:
    """Renders states into prompts and (reason, command) pairs into responses.

    The constructor's signature is a config schema (LightningCLI / jsonargparse).

    Args:
        template: ``"paper"``, ``"compact"``, or the path of a Jinja2 template file (``.j2``) that
            uses the variables of :data:`TEMPLATE_VARIABLES`.
        history_window: Keep the last ``k`` turns of the history in full; older turns appear only
            through their commands (``earlier_commands``) and their count (``omitted_turns``).
            None keeps every turn.
        response_format: ``"reason_action"`` (``REASON: …`` then ``ACTION: …``, the paper's) or
            ``"action"`` (``ACTION: …`` only, for tiny models that give no reasoning).

    Attributes:
        truncations: How many renders omitted at least one turn since the last reset.
        omitted_turns_total: How many turns those renders omitted, summed.

    Raises:
        ValueError: On an unknown template name or a missing file (listing the valid choices), a
            Jinja2 syntax error (naming the file and line), a variable the template uses that is
            not provided, a negative window or an unknown response format.
    """

    def __init__(
        self,
        template: str = "compact",
        history_window: int | None = None,
        response_format: ResponseFormat = "reason_action",
    ) -> None:
        if history_window is not None and (isinstance(history_window, bool) or history_window < 0):
            raise ValueError(f"history_window must be None or an integer >= 0, found {history_window!r}")
        if response_format not in ("reason_action", "action"):
            raise ValueError(
                f"response_format must be 'reason_action' or 'action', found {response_format!r}"
            )
        self.template = template
        self.history_window = history_window
        self.response_format: ResponseFormat = response_format
        self._template = _load_template(template)
        self.truncations = 0
        self.omitted_turns_total = 0

    def __repr__(self) -> str:
        return (
            f"Renderer(template={self.template!r}, history_window={self.history_window!r}, "
            f"response_format={self.response_format!r})"
        )

    def reset_counters(self) -> None:
        """Set :attr:`truncations` and :attr:`omitted_turns_total` back to zero."""
        self.truncations = 0
        self.omitted_turns_total = 0

    def context(self, state: State) -> dict[str, Any]:
        """The template variables for ``state`` (see :data:`TEMPLATE_VARIABLES`); counts nothing."""
        history = state.history
        cut = 0 if self.history_window is None else max(0, len(history) - self.history_window)
        return {
            "task": state.task,
            "observation": state.observation,
            "admissible_commands": list(state.admissible_commands),
            "history": [{"observation": t.observation, "command": t.command} for t in history[cut:]],
            "earlier_commands": [t.command for t in history[:cut]],
            "omitted_turns": cut,
            "turn": state.turn,
            "response_format": self.response_format,
        }

    def prompt(self, state: State) -> str:
        """The user-message text for ``state``; updates the truncation counters.

        The same state renders byte-identically on every call and in every process.
        """
        context = self.context(state)
        if context["omitted_turns"]:
            self.truncations += 1
            self.omitted_turns_total += context["omitted_turns"]
        return self._template.render(context)

    def messages(self, state: State) -> list[dict[str, str]]:
        """The chat messages a policy is prompted with: ``[{"role": "user", "content": prompt}]``."""
        return [{"role": "user", "content": self.prompt(state)}]

    def conversation(self, state: State, response: str) -> list[dict[str, str]]:
        """The (state, response) pair a PRM scores: the user message then the assistant response."""
        return [*self.messages(state), {"role": "assistant", "content": response}]

    def response(self, reason: str, command: str) -> str:
        """The response text for a reason and a command, in :attr:`response_format`.

        ``reason_action`` gives ``"REASON: {reason}\\nACTION: {command}"`` (newlines inside the
        reason are kept); ``action`` gives ``"ACTION: {command}"`` and ignores the reason.
        """
        if self.response_format == "action":
            return f"{_MARKER_ACTION} {command}"
        return f"{_MARKER_REASON} {reason}\n{_MARKER_ACTION} {command}"


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=False,
        autoescape=False,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["oneline"] = _oneline
    return env


def _load_template(template: str) -> jinja2.Template:
    """Compile a built-in template by name or a user's template file by path."""
    if template in BUILTIN_TEMPLATES:
        source = (importlib.resources.files("agentprm") / "templates" / f"{template}.j2").read_text("utf-8")
        origin = f"<built-in template {template!r}>"
    else:
        path = Path(template).expanduser()
        if not path.is_file():
            choices = ", ".join(repr(n) for n in BUILTIN_TEMPLATES)
            raise ValueError(
                f"template {template!r} is neither a built-in template nor an existing file; "
                f"valid choices: {choices}, or the path of a Jinja2 template file (.j2)"
            )
        source = path.read_text(encoding="utf-8")
        origin = str(path)
    env = _environment()
    try:
        ast = env.parse(source)
    except jinja2.TemplateSyntaxError as err:
        raise ValueError(f"{origin}:{err.lineno}: Jinja2 syntax error: {err.message}") from err
    provided = set(TEMPLATE_VARIABLES) | set(env.globals)
    unknown = sorted(jinja2.meta.find_undeclared_variables(ast) - provided)
    if unknown:
        raise ValueError(
            f"{origin}: template uses undefined variable(s) {', '.join(unknown)}; "
            f"available: {', '.join(TEMPLATE_VARIABLES)}"
        )
    return env.from_string(source)


@dataclass(frozen=True)
class ParsedResponse:
    """What a response means to the environment.

    Attributes:
        reason: The free-text rationale (may be empty).
        command: The normalized command to send (empty when the response has no ``ACTION:``; the
            environment answers an empty command with "Nothing happens.").
    """

    reason: str
    command: str


def parse_response(text: str) -> ParsedResponse:
    """Split a response into its reason and its normalized command.

    Rules (markers are case-sensitive):

    - command: the first line after the first ``ACTION:``, skipping whitespace and newlines right
      after the marker (so ``"ACTION:\\ngo to desk 1"`` works), then :func:`normalize_command`;
      anything after that line is ignored. No ``ACTION:`` gives ``""``.
    - reason: the text between ``REASON:`` and the first ``ACTION:``, stripped; with an
      ``ACTION:`` but no ``REASON:`` before it, the text before ``ACTION:``; with no ``ACTION:``
      at all, the whole text, stripped.

    Args:
        text: The raw response.

    Returns:
        The parsed reason and command.
    """
    action_at = text.find(_MARKER_ACTION)
    if action_at < 0:
        return ParsedResponse(reason=text.strip(), command="")
    before = text[:action_at]
    reason_at = before.find(_MARKER_REASON)
    reason = before[reason_at + len(_MARKER_REASON) :] if reason_at >= 0 else before
    after = text[action_at + len(_MARKER_ACTION) :].lstrip()
    first_line = re.split(r"[\r\n]", after, maxsplit=1)[0]
    return ParsedResponse(reason=reason.strip(), command=normalize_command(first_line))


def normalize_command(text: str) -> str:
    """Normalize a command the way the environment's commands are written.

    Lowercase; turn every whitespace character into a space; delete every character outside
    ``[a-z0-9 /]`` (periods and quotes go, ``in/on`` survives); collapse runs of spaces; strip.

    Args:
        text: A command as a model wrote it, e.g. ``'Go to "Cabinet 1".'``.

    Returns:
        The normalized command, e.g. ``"go to cabinet 1"``.
    """
    text = re.sub(r"\s+", " ", text.lower())
    text = re.sub(r"[^a-z0-9 /]", "", text)
    return re.sub(r" +", " ", text).strip()
