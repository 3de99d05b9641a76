"""DAgger probe: fine-tune a policy on (its own visited states, the oracle's best command) mixed
with as many of the search expert's demonstrations, then save it (supervised, no DPO).

    .venv/bin/python experiments/dagger_probe.py ROLLOUTS POLICY OUT LR EPOCHS [MEMORY]
    e.g. experiments/dagger_probe.py runs/exp/roll-s0 runs/exp/sft-s0/model runs/exp/dagger1/model 1e-3 2

Among commands tied at the best Q^mu, the one the policy prefers is the label. MEMORY limits the
expert's memory to the last N observations (the policy itself sees one).
"""

from __future__ import annotations

import random
import sys

import torch

from agentprm.backbone import load_causal_lm, load_tokenizer, save_hf
from agentprm.data import SFTExample, collate_sft, policy_states, sft_examples
from agentprm.prompts import Renderer
from agentprm.reference import ExpertValues
from agentprm.rollout import expert_demonstrations, read_shards
from agentprm.sampling import HFSampler, chat_ids, response_ids


def main(rollouts: str, policy: str, out: str, lr: float, epochs: int, memory: int | None) -> None:
    torch.manual_seed(0)
    model, tok = load_causal_lm(policy), load_tokenizer(policy)
    renderer = Renderer("compact", 1, "action")
    states = policy_states(read_shards(rollouts))
    values = ExpertValues("builtin:small", max_steps=30, memory=memory)
    sampler = HFSampler(model, tok, renderer, "admissible")
    labelled = []
    for i in range(0, len(states), 64):
        chunk = states[i : i + 64]
        for state, (_, _, logprobs) in zip(chunk, sampler.candidate_logprobs(chunk), strict=True):
            q = torch.tensor(values.q_values(state, state.admissible_commands))
            if q.max() <= 0:
                continue  # the expert cannot win from here within the budget
            best = [j for j in range(len(q)) if q[j] >= q.max() - 1e-9]
            j = max(best, key=lambda k: float(logprobs[k]))  # among ties, the one the policy prefers
            prompt = chat_ids(tok, renderer, state)
            response = renderer.response("", state.admissible_commands[j])
            ids = prompt + response_ids(tok, renderer, state, prompt, response)
            labelled.append(SFTExample(tuple(ids), len(prompt), state.game_id))
    expert = expert_demonstrations("builtin:small", "train", progress=False)
    demos, _ = sft_examples(expert, tok, renderer, 512)
    mix = labelled + random.Random(0).sample(demos, min(len(demos), len(labelled)))
    print("oracle-labelled states", len(labelled), "with demonstrations", len(mix))
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    for epoch in range(epochs):
        random.Random(epoch).shuffle(mix)
        total = 0.0
        for b in range(0, len(mix), 16):
            batch = collate_sft(mix[b : b + 16], tok.pad_token_id)
            loss = model(
                input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]
            ).loss
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            total += float(loss)
        print("epoch", epoch, "loss", total / (len(mix) / 16))
    save_hf(model, tok, out)


if __name__ == "__main__":
    a = sys.argv[1:]
    main(a[0], a[1], a[2], float(a[3]), int(a[4]), int(a[5]) if len(a) > 5 else None)
