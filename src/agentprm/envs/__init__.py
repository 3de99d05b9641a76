"""Environments: the batched protocol (:mod:`~agentprm.envs.base`), ALFWorld over its real engine
(:mod:`~agentprm.envs.alfworld`) and the built-in game generator (:mod:`~agentprm.envs.games`)."""

from __future__ import annotations

from agentprm.envs.base import EnvFactory

__all__ = ["check_env", "env_factory"]


def env_factory(env: EnvFactory | None, data: str | None, key: str = "data.env") -> EnvFactory:
    """The factory a stage plays: ``env`` when given, else ALFWorld on ``data`` (the shorthand every
    shipped config uses: ``data: builtin:small`` means ``AlfWorldEnvFactory(data=builtin:small)``)."""
    if env is not None:
        if not isinstance(env, EnvFactory):
            raise TypeError(f"{key} must be an EnvFactory, found {type(env).__name__}")
        return env
    from agentprm.envs.alfworld import AlfWorldEnvFactory

    return AlfWorldEnvFactory(data or "builtin:small")


def check_env(data_key: str, data: str | None, env_key: str, env: EnvFactory | None) -> None:
    """A stage takes its games from ALFWorld ``data`` or from ``env``: both at once is an error."""
    if data is not None and env is not None:
        raise ValueError(
            f"{data_key} ({data!r}) and {env_key} are both given: give one ({data_key}: ALFWorld games by "
            f"their root; {env_key}: any environment by class_path)"
        )
