"""The base of the parts a config names by ``class_path`` (environments, samplers).

A plugin's constructor arguments are its settings: it keeps each under the argument's name, and
:meth:`Plugin.identity` reads them back. Runs record that identity in their settings and manifests,
so a rerun with another environment or sampler never reuses results made with the old one.
"""

from __future__ import annotations

import inspect

__all__ = ["Plugin"]


class Plugin:
    """Identity, equality and ``repr`` from the constructor's arguments (kept as attributes)."""

    def identity(self) -> dict:
        """``{"class_path": …, "init_args": …}``: what a run's settings record of this part (two
        parts with the same identity behave alike)."""
        cls = type(self)
        args = {
            name: getattr(self, name)
            for name in inspect.signature(cls.__init__).parameters
            if name not in ("self", "args", "kwargs") and hasattr(self, name)
        }
        return {"class_path": f"{cls.__module__}.{cls.__qualname__}", "init_args": args}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.identity()["init_args"].items())
        return f"{type(self).__qualname__}({args})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Plugin) and self.identity() == other.identity()

    def __hash__(self) -> int:
        return hash(repr(self))
