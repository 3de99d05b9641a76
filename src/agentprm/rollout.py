"""Batched episodes: B environments stepped together, one policy call per turn, Trajectory records out.

:func:`play` is the one episode loop used by rollouts, evaluation and demonstrations. A *chooser*
receives the states of the episodes still running (with their slot indices) and returns one
:class:`~agentprm.sampling.Sample` for each; the environment receives the samples' commands. An
episode whose engine failed is recorded with its ``failure`` and counted, never dropped.

:func:`expert_demonstrations` replays the search expert's stored actions of the built-in games
through the real engine and returns them as trajectories (cached on disk).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import random
import re
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

import torch
from lightning.pytorch import LightningModule

from agentprm.backbone import Dtype
from agentprm.cache import cache_root
from agentprm.envs.base import BatchEnv, EnvFactory, EnvStep
from agentprm.prompts import Renderer, ResponseFormat
from agentprm.records import State, Step, Trajectory, Turn, atomic_write_text, read_jsonl, write_jsonl
from agentprm.sampling import (
    HFSamplerFactory,
    Sample,
    Sampler,
    SamplerFactory,
    SamplingMode,
    draw_key,
    require_candidate_scores,
)

__all__ = [
    "Chooser",
    "RolloutModule",
    "expert_demonstrations",
    "play",
    "read_shards",
    "replaying",
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
    start: Sequence[tuple[object, Sequence[Step]]] | None = None,
) -> list[Trajectory]:
    """Play one episode per game id, all stepped together; one Trajectory per episode, in order.

    Args:
        env: The batched environment (its ``max_steps`` bounds every episode).
        game_ids: The games, one episode each (repeats allowed).
        choose: Maps the running episodes' states and slot indices to one sample each.
        policy_id: Recorded in every trajectory.
        seed: Recorded in every trajectory (the chooser owns the randomness).
        rollout_indices: Per-episode rollout index (default 0).
        start: Per episode, a snapshot of the environment (``env.restore``) and the steps that led
            to it: the episodes continue from there instead of starting with a reset, and their
            trajectories begin with those steps.
    """
    if start is not None:
        if len(start) != len(game_ids):
            raise ValueError(f"{len(start)} start snapshots for {len(game_ids)} episodes")
        current = env.restore([snapshot for snapshot, _ in start])
        steps: list[list[Step]] = [list(prefix) for _, prefix in start]
    else:
        current = env.reset(list(game_ids))
        steps = [[] for _ in game_ids]
    histories: list[list[Turn]] = [[Turn(s.observation, s.command) for s in done] for done in steps]
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
    """A chooser that plays fixed command lists (slot → commands), e.g. stored demonstrations;
    ``look`` once a list runs out."""
    render = renderer or Renderer(response_format="action")

    def sample(command: str) -> Sample:
        return Sample(render.response("", command), command, "", (), 0.0)

    plans = {slot: [sample(c) for c in plan] for slot, plan in actions.items()}
    return replaying(plans, lambda states, slots: [sample("look") for _ in states])


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
    every = load_set(name)
    splits = sorted({g.split for g in every})
    if split not in splits:
        raise ValueError(f"split {split!r} is not a split of {data!r}: choose from {', '.join(splits)}")
    games = [g for g in every if g.split == split and g.expert_actions]
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


def replaying(plans: dict[int, Sequence[Sample]], then: Chooser) -> Chooser:
    """A chooser that plays planned samples (slot → samples, turn by turn), then hands the slot to ``then``.

    A slot at turn ``t < len(plans[slot])`` plays ``plans[slot][t]`` (no policy call); the others
    go to ``then`` together, in one call per turn.
    """

    def choose(states: list[State], slots: list[int]) -> list[Sample]:
        out: list[Sample | None] = [None] * len(states)
        fresh = []
        for j, (state, slot) in enumerate(zip(states, slots, strict=True)):
            plan = plans[slot]
            if state.turn < len(plan):
                out[j] = plan[state.turn]
            else:
                fresh.append(j)
        if fresh:
            picked = then([states[j] for j in fresh], [slots[j] for j in fresh])
            for j, sample in zip(fresh, picked, strict=True):
                out[j] = sample
        return out  # type: ignore[return-value]

    return choose


def recorded(step: Step) -> Sample:
    """The sample a recorded step played (to replay it)."""
    return Sample(step.response, step.command, step.reason, (), step.logprob)


def branch_points(roots: Sequence[Trajectory], rng: random.Random) -> list[tuple[Trajectory, int]]:
    """One (root, t) per usable root: t drawn uniformly from its turns."""
    return [(root, rng.randrange(len(root.steps))) for root in roots if root.failure is None and root.steps]


_SAMPLER_ARGS = ("mode", "temperature", "top_p", "max_new_tokens")
"""The module arguments of the default sampler (recorded through the sampler's identity)."""


class RolloutModule(LightningModule):
    """Rolls a policy out on batches of episodes (``predict_step``) and writes Trajectory shards.

    Each predict batch is one :class:`~agentprm.data.EpisodeBatch`: B episodes stepped together,
    one policy call per turn. Its trajectories go to ``<output_dir>/batch-<k>.rank<r>.jsonl``,
    written atomically; a batch whose shard exists is skipped, so a killed run loses at most its
    unfinished batches and the same command resumes it. ``manifest.json`` (policy, games, seeds,
    counts, failures, wall time) is written at the end. An episode whose engine raised (a full
    disk, a crashed planner) is recorded with its ``failure`` and skipped by every target; rerun
    with ``retry_failed`` to play the batches that hold such episodes again.

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
        branches: Branched rollouts (0: off). For each episode of a batch, a turn t is drawn
            uniformly from its turns and ``branches`` more episodes replay its first t commands,
            then let the policy act again from turn t to the end. The state s_t then has
            ``branches + 1`` on-policy actions with their outcomes: Monte-Carlo Q̂(s_t, ·) for
            different actions at one state, the contrast a PRM needs to rank actions, which
            independent episodes rarely give past the first turn. Branches are written with
            ``branch_turn = t``; the manifest's success rate counts the episodes from the start.
        branch_actions: The action a branch takes at turn t: ``sample`` (the policy's sample, as
            on any turn: on-policy, but a peaked policy repeats its favourite) or ``distinct``
            (``admissible`` mode: drawn from the policy without replacement, never the episode's
            own action, so a state gets ``branches + 1`` different actions while they last; the
            later turns are the policy's again).
        retry_failed: On a rerun, play again each finished batch whose shard holds a failed
            episode and replace its shard (the batch keeps its seed). Off: finished batches are
            kept as they are.
        reference_turns: Label the episodes with the search expert's values (paper §4.2 with the
            expert as the reference policy, :mod:`agentprm.reference`): V^μ and Q^μ of the taken
            command at every turn, and Q^μ of every admissible command at this many turns per
            episode, drawn uniformly (−1: every turn; 0: no labels). Written to
            ``<output_dir>/reference/batch-<k>.rank<r>.jsonl``, one line per trajectory, for the
            PRM's ``target: reference``.
        reference_max_steps: The budget the expert must win within (the evaluation's).
        gamma: The discount of the reference values.
        overwrite: ``output_dir`` holds results made with other settings (its ``settings.json``
            differs): delete them and start again. Off, such a rerun stops before any work.
        sampler: The sampler, by ``class_path`` (a :class:`~agentprm.sampling.SamplerFactory`);
            when given it replaces ``mode``, ``temperature``, ``top_p`` and ``max_new_tokens``
            (None: :class:`~agentprm.sampling.HFSamplerFactory` of those).
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
        branches: int = 0,
        branch_actions: Literal["sample", "distinct"] = "sample",
        retry_failed: bool = False,
        reference_turns: int = 0,
        reference_max_steps: int = 30,
        gamma: float = 0.95,
        overwrite: bool = False,
        sampler: SamplerFactory | None = None,
    ) -> None:
        super().__init__()
        self.sampler_factory = sampler or HFSamplerFactory(mode, temperature, top_p, max_new_tokens)
        if branch_actions not in ("sample", "distinct"):
            raise ValueError(f"model.branch_actions must be 'sample' or 'distinct', found {branch_actions!r}")
        if branch_actions == "distinct" and self.sampler_factory.mode != "admissible":
            raise ValueError(
                "model.branch_actions=distinct needs model.mode=admissible (it draws among the commands)"
            )
        if branches < 0:
            raise ValueError(f"model.branches must be >= 0, found {branches}")
        if branches and greedy:
            raise ValueError("model.branches needs sampled actions: a greedy branch repeats its episode")
        from agentprm.errors import check_model_path, check_writable

        check_model_path("model.model", model)
        check_writable("model.output_dir", output_dir)
        self.save_hyperparameters(ignore=["sampler"])
        from agentprm.backbone import load_causal_lm, load_tokenizer

        self.model = load_causal_lm(model, dtype=dtype)
        self.model.eval()
        self.tokenizer = load_tokenizer(model)
        self.renderer = Renderer(template, history_window, response_format)
        self.output_dir = Path(output_dir)
        self._envs: dict[tuple[EnvFactory, int], BatchEnv] = {}
        self._values = None
        self._start, self._skipped = 0.0, 0

    def _env(self, factory: EnvFactory, max_steps: int) -> BatchEnv:
        """The environment of a batch: one per (factory, budget), kept for the next batches."""
        if (factory, max_steps) not in self._envs:
            env = factory.make(max_steps)
            if self.hparams.reference_turns and not callable(getattr(env, "expert", None)):
                raise ValueError(
                    f"model.reference_turns={self.hparams.reference_turns} needs an environment with a "
                    f"search expert (ALFWorld's); {factory!r} makes {type(env).__name__}, which has none: "
                    "set model.reference_turns=0"
                )
            self._envs[(factory, max_steps)] = env
        return self._envs[(factory, max_steps)]

    def transfer_batch_to_device(self, batch, device, dataloader_idx: int):
        return batch  # an EpisodeBatch names games; nothing to move

    # Settings that do not change what a run writes: left out of its settings.json.
    _NOT_CONTENT = ("output_dir", "retry_failed", "overwrite", "dtype", *_SAMPLER_ARGS)
    RESULTS = ("batch-*.jsonl", "manifest.json", "reference", "results.jsonl", "summary.json")

    def run_settings(self) -> dict:
        """What determines this run's output: the module's settings, the model's identity and the
        episodes (the data module's settings)."""
        from agentprm.provenance import model_identity

        h = self.hparams
        settings = {k: v for k, v in h.items() if k not in self._NOT_CONTENT}
        settings["model"] = model_identity(h.model)
        settings["sampler"] = self.sampler_factory.identity()
        data = getattr(self.trainer, "datamodule", None) if self._trainer else None
        settings["episodes"] = episode_settings(data)
        return settings

    def on_predict_start(self) -> None:
        from lightning.pytorch.utilities import rank_zero_info

        from agentprm.provenance import check_settings

        self._start, self._skipped = time.time(), 0
        data = getattr(self.trainer, "datamodule", None)
        if self.hparams.reference_turns and isinstance(getattr(data, "env", None), EnvFactory):
            self._env(data.env, data.hparams.max_steps)  # has it an expert? (before anything is written)
        if self.hparams.branches and self.hparams.branch_actions == "distinct":
            require_candidate_scores(self.sampler(0), "model.branch_actions=distinct")
        resumed = check_settings(
            self.output_dir,
            self.run_settings(),
            overwrite=self.hparams.overwrite,
            results=self.RESULTS,
            write=self.global_rank == 0,
        )
        self.trainer.strategy.barrier()
        if resumed:
            rank_zero_info(f"{self.output_dir}: resuming a run with the same settings (settings.json)")

    def sampler(self, batch_index: int) -> Sampler:
        """The policy's sampler for one batch, seeded by the batch index (same on resume and any rank)."""
        seed = self.hparams.seed * 1_000_003 + batch_index
        return self.sampler_factory.build(self.model, self.tokenizer, self.renderer, seed)

    def chooser(
        self, batch_index: int, sampler: Sampler | None = None, episodes: Sequence[str] | None = None
    ) -> Chooser:
        """How actions are picked: one sample of the policy per state (greedy when configured).

        With ``episodes`` (one name per slot, e.g. ``game|rollout index``) and ``admissible`` mode,
        each draw uses common random numbers keyed by (seed, episode, turn): see
        :meth:`agentprm.sampling.HFSampler.sample`.
        """
        sampler, greedy = sampler or self.sampler(batch_index), self.hparams.greedy

        def choose(states: list[State], slots: list[int]) -> list[Sample]:
            keys = self.draw_keys(states, slots, episodes)
            return [s[0] for s in sampler.sample(states, 1, greedy=greedy, keys=keys)]

        return choose

    def draw_keys(
        self, states: Sequence[State], slots: Sequence[int], episodes: Sequence[str] | None
    ) -> list[int] | None:
        """One seed per state from (seed, episode name, turn); None outside admissible mode."""
        if episodes is None or self.sampler_factory.mode != "admissible":
            return None
        return [
            draw_key(self.hparams.seed, episodes[slot], state.turn)
            for state, slot in zip(states, slots, strict=True)
        ]

    def _distinct_actions(
        self, sampler: Sampler, points: Sequence[tuple[Trajectory, int]], k: int
    ) -> list[list[Sample]]:
        """``k`` actions per branch point, drawn without replacement from the policy's distribution
        over the commands other than the episode's own (repeated once they run out)."""
        sampler = require_candidate_scores(sampler, "model.branch_actions=distinct")
        states = [root.state_at(t) for root, t in points]
        out = []
        for state, (root, t), (responses, suffixes, scores) in zip(
            states, points, sampler.candidate_logprobs(states), strict=True
        ):
            probs = torch.softmax(scores.double() / sampler.temperature, dim=0)
            if root.steps[t].command in state.admissible_commands:
                probs[state.admissible_commands.index(root.steps[t].command)] = 0.0
            if probs.sum() <= 0:  # the episode's action was the only one
                probs = torch.ones_like(probs)
            others = int((probs > 0).sum())
            picks = torch.multinomial(probs, min(k, others), replacement=False, generator=sampler.generator)
            picks = picks.tolist()
            while len(picks) < k:
                picks.append(picks[len(picks) % others])
            out.append(
                [
                    Sample(
                        responses[i], state.admissible_commands[i], "", tuple(suffixes[i]), float(scores[i])
                    )
                    for i in picks
                ]
            )
        return out

    def _finished(self, index: int) -> bool:
        """Whether batch ``index`` has a shard to keep (with ``retry_failed``: one without failures)."""
        shards = _shards(self.output_dir, index)
        labelled = all((self.output_dir / "reference" / p.name).is_file() for p in shards)
        if shards and self.hparams.reference_turns and not labelled:  # played before labels were asked
            return False
        if not shards or not self.hparams.retry_failed:
            return bool(shards)
        return not any(t.failure is not None for p in shards for t in read_jsonl(p))

    def predict_step(self, batch, batch_idx: int = 0) -> dict:
        if self._finished(batch.index):
            self._skipped += 1
            return {"batch": batch.index, "skipped": True}
        h = self.hparams
        env, sampler = self._env(batch.env, batch.max_steps), self.sampler(batch.index)
        policy_id = h.policy_id or h.model
        names = [f"{g}|{r}" for g, r in batch.episodes]
        trajectories = play(
            env,
            [g for g, _ in batch.episodes],
            self.chooser(batch.index, sampler, names),
            policy_id=policy_id,
            seed=h.seed,
            rollout_indices=[r for _, r in batch.episodes],
        )
        if h.branches:
            points = branch_points(trajectories, random.Random(h.seed * 1_000_003 + batch.index))
            prefixes = [[recorded(step) for step in root.steps[:t]] for root, t in points]
            if h.branch_actions == "distinct":
                actions = self._distinct_actions(sampler, points, h.branches)
                plans = [[*p, a] for p, acts in zip(prefixes, actions, strict=True) for a in acts]
            else:
                plans = [p for p in prefixes for _ in range(h.branches)]
            slots = [point for point in points for _ in range(h.branches)]
            names = [
                f"{root.game_id}|{root.rollout_index}|b{k % h.branches}" for k, (root, _) in enumerate(slots)
            ]
            start = None
            if getattr(env, "engine", None) == "graph":  # ALFWorld's graph: continue from a snapshot
                at = [
                    env.snapshot_after(root.game_id, [s.command for s in root.steps[:t]])
                    for root, t in points
                ]
                start = [(at[k // h.branches], root.steps[:t]) for k, (root, t) in enumerate(slots)]
            branched = play(
                env,
                [root.game_id for root, _ in slots],
                replaying(dict(enumerate(plans)), self.chooser(batch.index, sampler, names)),
                policy_id=policy_id,
                seed=h.seed,
                rollout_indices=[root.rollout_index for root, _ in slots],
                start=start,
            )
            trajectories += [
                dataclasses.replace(b, branch_turn=t) for b, (_, t) in zip(branched, slots, strict=True)
            ]
        shard = self.output_dir / f"batch-{batch.index:05d}.rank{self.global_rank}.jsonl"
        if h.reference_turns:  # labels first: a finished shard always has its labels
            write_jsonl(
                self.output_dir / "reference" / shard.name, self._labels(env, trajectories, batch.index)
            )
        write_jsonl(shard, trajectories)
        for old in _shards(self.output_dir, batch.index):  # a retried batch's shard from another rank
            if old != shard:
                old.unlink()
        return {"batch": batch.index, "won": sum(t.won for t in trajectories), "episodes": len(trajectories)}

    def _labels(self, env: BatchEnv, trajectories: Sequence[Trajectory], batch_index: int) -> list:
        """The search expert's values along each usable trajectory (``reference_turns``)."""
        from agentprm.reference import ExpertValues, label_trajectory, labelled_turns

        h = self.hparams
        if self._values is None:
            self._values = ExpertValues(max_steps=h.reference_max_steps, gamma=h.gamma, env=env)
        seed = h.seed * 1_000_003 + batch_index
        return [
            label_trajectory(self._values, t, labelled_turns(t, h.reference_turns, seed))
            for t in trajectories
            if t.failure is None and t.steps
        ]

    def on_predict_end(self) -> None:
        from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

        if self._skipped:
            rank_zero_info(f"{self.output_dir}: {self._skipped} finished batch(es) kept from an earlier run")
        self.trainer.strategy.barrier()
        if self.global_rank == 0:
            manifest = write_manifest(
                self.output_dir,
                self.hparams,
                time.time() - self._start,
                self.trainer.datamodule,
                self.sampler_factory,
            )
            if manifest["failures"]:
                rank_zero_warn(
                    f"{self.output_dir}: {manifest['failures']} of {manifest['episodes']} episode(s) failed "
                    f"in the engine (games {', '.join(manifest['failed_games'][:3])}"
                    f"{', …' if len(manifest['failed_games']) > 3 else ''}); their reasons are in "
                    "manifest.json (failure_reasons); retry_failed=true plays those batches again"
                )
            if manifest["empty_commands"] or manifest["inadmissible_commands"]:
                rank_zero_info(
                    f"{self.output_dir}: {manifest['empty_commands']} response(s) without a command and "
                    f"{manifest['inadmissible_commands']} inadmissible command(s) of "
                    f"{manifest['steps']} steps"
                )


def episode_settings(datamodule) -> dict | None:
    """What decides a data module's episodes (its :meth:`settings`, else its arguments)."""
    if datamodule is None:
        return None
    if callable(getattr(datamodule, "settings", None)):
        return datamodule.settings()
    return dict(datamodule.hparams) if getattr(datamodule, "hparams", None) else None


def failure_reasons(trajectories: Sequence[Trajectory], limit: int = 10) -> dict[str, int]:
    """The ``limit`` most frequent failure messages with their counts.

    Temporary names (``tmp`` and 8 random characters, as :mod:`tempfile` makes them) are folded to
    ``tmpXXXXXXXX``, so one cause that hit many episodes counts once.
    """
    reasons = Counter(
        re.sub(r"\btmp[a-z0-9_]{8}\b", "tmpXXXXXXXX", t.failure) for t in trajectories if t.failure
    )
    return dict(reasons.most_common(limit))


def write_manifest(output_dir: Path, hparams, wall_time: float, datamodule, sampler=None) -> dict:
    """Summarise every shard of a rollout directory into ``manifest.json``."""
    from agentprm.records import atomic_write_json

    everything = read_shards(output_dir)
    previous = output_dir / "manifest.json"  # a resumed run: the time of the earlier invocations too
    if previous.is_file():
        with contextlib.suppress(ValueError, OSError, KeyError, TypeError):
            old = json.loads(previous.read_text())
            wall_time += float(old["wall_time_s"]) if old.get("episodes") else 0.0
    trajectories = [t for t in everything if t.branch_turn is None]
    steps = [s for t in everything for s in t.steps]
    branches = [t for t in everything if t.branch_turn is not None]
    per_type = Counter(t.task_type for t in trajectories)
    won_type = Counter(t.task_type for t in trajectories if t.won)
    manifest = {
        "policy": hparams.get("policy_id") or hparams.get("model"),
        "model": hparams.get("model"),
        "sampler": repr(sampler) if sampler is not None else None,
        "mode": getattr(sampler, "mode", hparams.get("mode")),
        "temperature": getattr(sampler, "temperature", hparams.get("temperature")),
        "greedy": hparams.get("greedy"),
        "seed": hparams.get("seed"),
        "env": repr(datamodule.env) if hasattr(datamodule, "env") else None,
        "split": getattr(datamodule, "hparams", {}).get("split"),
        "games": sorted({t.game_id for t in trajectories}),
        "rollouts_per_game": getattr(datamodule, "hparams", {}).get("rollouts_per_game"),
        "episodes": len(trajectories),
        "expected_episodes": getattr(datamodule, "num_episodes", None),
        "won": sum(t.won for t in trajectories),
        "success_rate": sum(t.won for t in trajectories) / max(1, len(trajectories)),
        "success_rate_per_task_type": {k: won_type[k] / n for k, n in sorted(per_type.items())},
        "mean_actions": sum(t.num_actions for t in trajectories) / max(1, len(trajectories)),
        "branch_episodes": len(branches),
        "branch_success_rate": sum(t.won for t in branches) / len(branches) if branches else None,
        "failures": sum(t.failure is not None for t in everything),
        "failure_reasons": failure_reasons(everything),
        "failed_games": sorted({t.game_id for t in everything if t.failure is not None}),
        "steps": len(steps),
        "empty_commands": sum(not s.command for s in steps),
        "inadmissible_commands": sum(s.command not in s.admissible_commands for s in steps if s.command),
        "shards": sorted(p.name for p in output_dir.glob("batch-*.jsonl")),
        "wall_time_s": round(wall_time, 2),
    }
    atomic_write_json(output_dir / "manifest.json", manifest)
    return manifest
