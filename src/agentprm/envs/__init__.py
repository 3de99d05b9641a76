"""Environments: the batched protocol (:mod:`~agentprm.envs.base`), ALFWorld over its real engine
(:mod:`~agentprm.envs.alfworld`) and the built-in game generator (:mod:`~agentprm.envs.games`)."""

from __future__ import annotations

from agentprm.envs.base import EnvFactory

__all__ = ["env_factory"]


def env_factory(
    data: str | None, env: EnvFactory | None, data_key: str = "data.data", env_key: str = "data.env"
) -> EnvFactory:
    """The factory a stage plays: ``env`` when given, else ALFWorld on ``data`` (the shorthand every
    shipped config uses: ``data: builtin:small`` means ``AlfWorldEnvFactory(data=builtin:small)``;
    neither: ``builtin:small``). Both at once is an error naming the two keys."""
    if data is not None and env is not None:
        raise ValueError(
            f"{data_key} ({data!r}) and {env_key} are both given: give one ({data_key}: ALFWorld games by "
            f"their root; {env_key}: any environment by class_path)"
        )
    if env is not None:
        if not isinstance(env, EnvFactory):
            raise TypeError(f"{env_key} must be an EnvFactory, found {type(env).__name__}")
        return env
    from agentprm.envs.alfworld import AlfWorldEnvFactory

    return AlfWorldEnvFactory(data or "builtin:small")
