"""A memoising shim on TextWorld's PDDL text generation (speed only, same output).

Every engine step re-derives the command template of every applicable action, and each derivation
re-parses the same grammar strings with TatSu. This caches the two pure parsing functions:
``textworld.envs.pddl.textgen._parse_and_convert`` (keyed on the text and rule name, returning a
deep copy because callers attach context to the parsed symbols) and
``textworld.logic.Rule.parse_conjunctive_query``. ``tests/test_alfworld_env.py`` checks that 500+
random steps give identical (command, feedback) sequences with and without it.
"""

from __future__ import annotations

import copy
import functools

__all__ = ["disable", "enable", "is_enabled"]

_saved: dict = {}


def enable() -> None:
    """Install the caches (idempotent)."""
    if _saved:
        return
    from textworld.envs.pddl import textgen
    from textworld.logic import Rule

    parse = textgen._parse_and_convert
    parse_query = Rule.__dict__["parse_conjunctive_query"]

    @functools.lru_cache(maxsize=4096)
    def _parsed(text: str, rule_name: str):
        return parse(text, rule_name=rule_name)

    def cached_parse(text, rule_name, **kwargs):
        if kwargs.get("trace"):
            return parse(text, rule_name=rule_name, **kwargs)
        return copy.deepcopy(_parsed(text, rule_name))

    _saved.update(parse=parse, parse_query=parse_query)
    textgen._parse_and_convert = cached_parse
    Rule.parse_conjunctive_query = classmethod(functools.lru_cache(maxsize=4096)(parse_query.__func__))


def disable() -> None:
    """Restore TextWorld's original functions."""
    if not _saved:
        return
    from textworld.envs.pddl import textgen
    from textworld.logic import Rule

    textgen._parse_and_convert = _saved.pop("parse")
    Rule.parse_conjunctive_query = _saved.pop("parse_query")


def is_enabled() -> bool:
    return bool(_saved)
