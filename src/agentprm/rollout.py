"""Batched episodes: B environments stepped together, one policy call per turn, Trajectory records out.

:func:`play` is the one episode loop used by rollouts, evaluation and demonstrations. A *chooser*
receives the states of the episodes still running (with their slot indices) and returns one
:class:`~agentprm.sampling.Sample` for each; the environment receives the samples' commands. An
episode whose engine failed is recorded with its ``failure`` and counted, never dropped.

:func:`expert_demonstrations` replays the search expert's stored actions of the built-in games
through the real engine and returns them as trajectories (cached on disk).
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from lightning.pytorch import LightningModule

from agentprm.backbone import Dtype
from agentprm.cache import cache_root
from agentprm.envs.base import BatchEnv, EnvStep
from agentprm.prompts import Renderer, ResponseFormat
from agentprm.records import State, Step, Trajectory, Turn, atomic_write_text, read_jsonl, write_jsonl
from agentprm.sampling import HFSampler, Sample, SamplingMode

__all__ = [
    "Chooser",
    "RolloutModule",
    "expert_demonstrations",
    "play",
    "read_shards",
    "state_of",
    "write_manifest",
]

Chooser = Callable[[list[State], list[int]], Sequence[Sample]]
EXPERT_POLICY_ID = "search-expert"


def state_of(step: EnvStep, history: Sequence[Turn]) -> State:
    """The State an agent sees at an EnvStep, given the episode's history so far."""
    return State(
        task=step.task,
        observation=step.observation,
        admissible_commands=step.admissible_commands,
        history=tuple(history),
        game_id=step.game_id,
        turn=len(history),
    )


def play(
    env: BatchEnv,
    game_ids: Sequence[str],
    choose: Chooser,
    *,
    policy_id: str,
    seed: int = 0,
    rollout_indices: Sequence[int] | None = None,
) -> list[Trajectory]:
    """Play one episode per game id, all stepped together; one Trajectory per episode, in order.

    Args:
        env: The batched environment (its ``max_steps`` bounds every episode).
        game_ids: The games, one episode each (repeats allowed).
        choose: Maps the running episodes' states and slot indices to one sample each.
        policy_id: Recorded in every trajectory.
        seed: Recorded in every trajectory (the chooser owns the randomness).
        rollout_indices: Per-episode rollout index (default 0).
    """
    current = env.reset(list(game_ids))
    histories: list[list[Turn]] = [[] for _ in game_ids]
    steps: list[list[Step]] = [[] for _ in game_ids]
    while running := [i for i, s in enumerate(current) if not s.done]:
        states = [state_of(current[i], histories[i]) for i in running]
        samples = choose(states, running)
        if len(samples) != len(running):
            raise ValueError(f"the policy returned {len(samples)} samples for {len(running)} states")
        commands: list[str | None] = [None] * len(game_ids)
        for i, sample in zip(running, samples, strict=True):
            commands[i] = sample.command
        after = env.step(commands)
        for i, state, sample in zip(running, states, samples, strict=True):
            nxt = after[i]
            if nxt.failure is None:
                steps[i].append(_step(state, sample, nxt))
                histories[i].append(Turn(state.observation, sample.command))
        current = after
    indices = list(rollout_indices) if rollout_indices is not None else [0] * len(game_ids)
    return [
        Trajectory(
            game_id=s.game_id,
            task_type=s.task_type,
            task=s.task,
            steps=tuple(steps[i]),
            won=s.won,
            policy_id=policy_id,
            seed=seed,
            rollout_index=indices[i],
            failure=s.failure,
        )
        for i, s in enumerate(current)
    ]


def _step(state: State, sample: Sample, nxt: EnvStep) -> Step:
    return Step(
        observation=state.observation,
        admissible_commands=state.admissible_commands,
        response=sample.text,
        reason=sample.reason,
        command=sample.command,
        feedback=nxt.observation,
        reward=nxt.reward,
        logprob=sample.logprob,
    )


def scripted(actions: dict[int, Sequence[str]], renderer: Renderer | None = None) -> Chooser:
    """A chooser that plays fixed command lists (slot → commands), e.g. stored demonstrations."""
    render = renderer or Renderer(response_format="action")

    def choose(states: list[State], slots: list[int]) -> list[Sample]:
        out = []
        for state, slot in zip(states, slots, strict=True):
            plan = actions[slot]
            command = plan[state.turn] if state.turn < len(plan) else "look"
            out.append(Sample(render.response("", command), command, "", (), 0.0))
        return out

    return choose


def expert_demonstrations(
    data: str = "builtin:small",
    split: str = "train",
    *,
    batch_size: int = 16,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
    use_shipped: bool = True,
) -> list[Trajectory]:
    """The search expert's winning episodes on a built-in set's split, replayed in the real engine.

    Only won episodes are returned (the demonstrations for SFT and the InversePRM positives). The
    result is cached as JSONL under ``$AGENTPRM_CACHE/demos/`` keyed by the set's content; the
    package ships the small set's training demonstrations under that key (``use_shipped=False``
    replays them in the engine instead; a slow test checks both agree).
    """
    from tqdm import tqdm

    from agentprm.envs.alfworld import AlfWorldEnv
    from agentprm.envs.gamesets import load_set

    name = data.split(":", 1)[1] if data.startswith("builtin:") else data
    games = [g for g in load_set(name) if g.split == split and g.expert_actions]
    key = hashlib.sha256("\n".join(f"{g.game_id}|{g.expert_actions}" for g in games).encode()).hexdigest()
    base = cache_root(cache_dir)
    path = base / "demos" / f"{Path(name).name.split('.')[0]}-{split}-{key[:12]}.jsonl"
    if path.is_file():
        return read_jsonl(path)
    shipped = Path(__file__).parent / "data" / "demos" / f"{path.name}.gz"
    if use_shipped and shipped.is_file():  # the built-in set's demonstrations ship with the package
        import gzip

        atomic_write_text(path, gzip.decompress(shipped.read_bytes()).decode())
        return read_jsonl(path)
    env = AlfWorldEnv(data, max_steps=max(len(g.expert_actions) for g in games) + 1)
    out: list[Trajectory] = []
    for start in tqdm(range(0, len(games), batch_size), desc="expert demos", disable=not progress):
        batch = games[start : start + batch_size]
        plans = {i: g.expert_actions for i, g in enumerate(batch)}
        out += play(env, [g.game_id for g in batch], scripted(plans), policy_id=EXPERT_POLICY_ID)
    won = [t for t in out if t.won]
    write_jsonl(path, won)
    return won


# --------------------------------------------------------------------------------------------
# Lightning: `agentprm predict` rolls a policy out and writes trajectory shards
# --------------------------------------------------------------------------------------------
def _shards(output_dir: Path, index: int) -> list[Path]:
    return sorted(output_dir.glob(f"batch-{index:05d}.rank*.jsonl"))


def read_shards(output_dir: str | os.PathLike) -> list[Trajectory]:
    """Every trajectory of a rollout or evaluation directory's ``batch-*.jsonl`` shards."""
    return [t for p in sorted(Path(output_dir).glob("batch-*.jsonl")) for t in read_jsonl(p)]


class RolloutModule(LightningModule):
    """Rolls a policy out on batches of episodes (``predict_step``) and writes Trajectory shards.

    Each predict batch is one :class:`~agentprm.data.EpisodeBatch`: B episodes stepped together,
    one policy call per turn. Its trajectories go to ``<output_dir>/batch-<k>.rank<r>.jsonl``,
    written atomically; a batch whose shard exists is skipped, so a killed run loses at most its
    unfinished batches and the same command resumes it. ``manifest.json`` (policy, games, seeds,
    counts, failures, wall time) is written at the end.

    Args:
        model: Policy model directory or hub name (``tiny``: the untrained tiny model).
        dtype: Weight dtype.
        mode: Action selection, ``generate`` or ``admissible``.
        temperature: Sampling temperature.
        top_p: Nucleus threshold (``generate``).
        max_new_tokens: Response cap (``generate``).
        greedy: Take the most likely action instead of sampling.
        template: Prompt template.
        history_window: Turns of history kept in full.
        response_format: ``reason_action`` or ``action``.
        output_dir: Where shards and the manifest go.
        policy_id: Recorded in each trajectory (default: the model path).
        seed: Base seed; batch k samples with seed ``seed * 1_000_003 + k``.
    """

    def __init__(
        self,
        model: str = "tiny",
        dtype: Dtype = "float32",
        mode: SamplingMode = "admissible",
        temperature: float = 1.0,
        top_p: float = 1.0,
        max_new_tokens: int = 64,
        greedy: bool = False,
        template: str = "compact",
        history_window: int | None = 2,
        response_format: ResponseFormat = "action",
        output_dir: str = "runs/rollouts",
        policy_id: str | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        from agentprm.backbone import load_causal_lm, load_tokenizer

        self.model = load_causal_lm(model, dtype=dtype)
        self.model.eval()
        self.tokenizer = load_tokenizer(model)
        self.renderer = Renderer(template, history_window, response_format)
        self.output_dir = Path(output_dir)
        self._envs: dict[tuple[str, int], BatchEnv] = {}
        self._start = 0.0

    def _env(self, data: str, max_steps: int) -> BatchEnv:
        from agentprm.envs.alfworld import AlfWorldEnv

        if (data, max_steps) not in self._envs:
            self._envs[(data, max_steps)] = AlfWorldEnv(data, max_steps=max_steps)
        return self._envs[(data, max_steps)]

    def transfer_batch_to_device(self, batch, device, dataloader_idx: int):
        return batch  # an EpisodeBatch names games; nothing to move

    def on_predict_start(self) -> None:
        self._start = time.time()
        self.output_dir.mkdir(parents=True, exist_ok=True)

    def sampler(self, batch_index: int) -> HFSampler:
        """The policy's sampler for one batch, seeded by the batch index (same on resume and any rank)."""
        h = self.hparams
        seed = h.seed * 1_000_003 + batch_index
        return HFSampler(
            self.model, self.tokenizer, self.renderer, h.mode, h.temperature, h.top_p, h.max_new_tokens, seed
        )

    def chooser(self, batch_index: int) -> Chooser:
        """How actions are picked: one sample of the policy per state (greedy when configured)."""
        sampler, greedy = self.sampler(batch_index), self.hparams.greedy

        def choose(states: list[State], slots: list[int]) -> list[Sample]:
            return [s[0] for s in sampler.sample(states, 1, greedy=greedy)]

        return choose

    def predict_step(self, batch, batch_idx: int = 0) -> dict:
        if _shards(self.output_dir, batch.index):
            return {"batch": batch.index, "skipped": True}
        h = self.hparams
        trajectories = play(
            self._env(batch.data, batch.max_steps),
            [g for g, _ in batch.episodes],
            self.chooser(batch.index),
            policy_id=h.policy_id or h.model,
            seed=h.seed,
            rollout_indices=[r for _, r in batch.episodes],
        )
        write_jsonl(self.output_dir / f"batch-{batch.index:05d}.rank{self.global_rank}.jsonl", trajectories)
        return {"batch": batch.index, "won": sum(t.won for t in trajectories), "episodes": len(trajectories)}

    def on_predict_end(self) -> None:
        self.trainer.strategy.barrier()
        if self.global_rank == 0:
            write_manifest(self.output_dir, self.hparams, time.time() - self._start, self.trainer.datamodule)


def write_manifest(output_dir: Path, hparams, wall_time: float, datamodule) -> dict:
    """Summarise every shard of a rollout directory into ``manifest.json``."""
    from collections import Counter

    from agentprm.records import atomic_write_json

    trajectories = read_shards(output_dir)
    per_type = Counter(t.task_type for t in trajectories)
    won_type = Counter(t.task_type for t in trajectories if t.won)
    manifest = {
        "policy": hparams.get("policy_id") or hparams.get("model"),
        "model": hparams.get("model"),
        "mode": hparams.get("mode"),
        "temperature": hparams.get("temperature"),
        "greedy": hparams.get("greedy"),
        "seed": hparams.get("seed"),
        "data": getattr(datamodule, "hparams", {}).get("data"),
        "split": getattr(datamodule, "hparams", {}).get("split"),
        "games": sorted({t.game_id for t in trajectories}),
        "rollouts_per_game": getattr(datamodule, "hparams", {}).get("rollouts_per_game"),
        "episodes": len(trajectories),
        "expected_episodes": getattr(datamodule, "num_episodes", None),
        "won": sum(t.won for t in trajectories),
        "success_rate": sum(t.won for t in trajectories) / max(1, len(trajectories)),
        "success_rate_per_task_type": {k: won_type[k] / n for k, n in sorted(per_type.items())},
        "mean_actions": sum(t.num_actions for t in trajectories) / max(1, len(trajectories)),
        "failures": sum(t.failure is not None for t in trajectories),
        "failure_reasons": sorted({t.failure for t in trajectories if t.failure}),
        "shards": sorted(p.name for p in output_dir.glob("batch-*.jsonl")),
        "wall_time_s": round(wall_time, 2),
    }
    atomic_write_json(output_dir / "manifest.json", manifest)
    return manifest
