"""Where agentprm keeps what it builds once: materialised games, demonstrations, the tiny model."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cache_root"]


def cache_root(override: str | os.PathLike | None = None) -> Path:
    """``override``, else ``$AGENTPRM_CACHE``, else ``~/.cache/agentprm``."""
    return Path(override or os.environ.get("AGENTPRM_CACHE", Path.home() / ".cache" / "agentprm"))
