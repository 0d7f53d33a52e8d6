"""Picking tokens: per-row random streams keyed by (seed, item id, agent), and the recorded sampling values.
The sampling configuration itself is built by ModelWrapper.sampling_config (it needs the model's generation config)
and applied through transformers' logits processors (ModelWrapper.logits_processors)."""

from __future__ import annotations

import hashlib
from typing import Sequence

import torch
from transformers import GenerationConfig


SAMPLING_FIELDS = ("do_sample", "temperature", "top_p", "top_k", "min_p", "typical_p", "repetition_penalty",
                   "no_repeat_ngram_size")


def sampling_values(config: GenerationConfig) -> dict:
    """The result-changing values of a merged sampling configuration (recorded in summary.json)."""
    return {k: getattr(config, k, None) for k in SAMPLING_FIELDS}


def pick_tokens(scores: torch.Tensor, do_sample: bool,
                generators: Sequence[torch.Generator] | None = None) -> torch.Tensor:
    """[B, V] processed scores -> [B] token ids: argmax when greedy; else one draw per row, row r from
    generators[r] (its own stream), or from torch's global generator when no streams are given."""
    if not do_sample:
        return scores.argmax(dim=-1)
    probs = torch.softmax(scores, dim=-1)
    if generators is None:
        return torch.multinomial(probs, 1).squeeze(-1)
    return torch.cat([torch.multinomial(probs[r], 1, generator=g) for r, g in enumerate(generators)])


def stream_seed(seed: int, *key: object) -> int:
    """A 63-bit seed for one random stream, from the run's seed and a key such as (item id, agent role): what an
    item draws never depends on its batch, the rows around it, a resume, or the other methods in the process."""
    digest = hashlib.sha256("\x1f".join(str(part) for part in (seed, *key)).encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1
