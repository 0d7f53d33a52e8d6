"""Earlier agents' work as input embeddings of an agent's prompt: the vLLM judger's two layouts (engine.py,
JUDGER_LAYOUTS; stock engines decode from `{"prompt_embeds": [T, d]}`) and the bridged thoughts of heterogeneous
agents (bridge.py).

- `replay_embeds` (layout `kv`): the memory's own sequence, then the judger's whole prompt. For a memory kept whole
  and in order this is exactly what the KV hand-off holds, position for position.
- `judger_embeds` (layout `reference`): the work spliced in right after the judger's user-turn header, found from
  the model's own chat template (the reference's fast path).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from models import ModelWrapper

SENTINEL = "LATENTMASSPLICESENTINEL"


def split_user_turn(model: ModelWrapper, messages: list[dict]) -> tuple[str, str]:
    """Split a rendered conversation right after the header of its last user turn: (prefix, rest).

    The split point comes from the model's own chat template: the conversation is rendered once more with a
    sentinel as the user message, and the prefix is everything before the sentinel. No template string is assumed.
    """
    last_user = max(i for i, m in enumerate(messages) if m["role"] == "user")
    probe = [dict(m, content=SENTINEL) if i == last_user else m for i, m in enumerate(messages)]
    rendered_probe = model.render_chat(probe)
    at = rendered_probe.find(SENTINEL)
    full = model.render_chat(messages)
    if at < 0 or not full.startswith(rendered_probe[:at]):
        raise ValueError(f"cannot find the user turn in the chat template of {model.name}")
    return full[:at], full[at:]



@dataclass
class Segment:
    """One earlier agent's contribution to the judger's prompt embeddings, for one row.

    ids:      the agent's prompt tokens, left padding removed ([] when only its thoughts are kept)
    thoughts: [k, d] the aligned latent vectors the agent was fed (realign(h) in the model's dtype), or None
    """

    ids: list[int]
    thoughts: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.ids) + (0 if self.thoughts is None else int(self.thoughts.shape[0]))

    def latent_only(self) -> "Segment":
        return Segment([], self.thoughts)


def token_ids(model: ModelWrapper, text: str) -> list[int]:
    """Tokens of a rendered text, as ModelWrapper.encode makes them (special tokens come from the template)."""
    return model.tokenizer(text, add_special_tokens=False)["input_ids"]


@torch.no_grad()
def embed_ids(model: ModelWrapper, ids: Sequence[int]) -> torch.Tensor:
    """[T, d] effective input embeddings of token ids (the embedding module is called, so scaling such as
    Gemma's sqrt(d) is included), in the model's dtype, on its input device."""
    embed = model.model.get_input_embeddings()
    return embed(torch.as_tensor(list(ids), dtype=torch.long, device=embed.weight.device))


@torch.no_grad()
def rollout_segments(model: ModelWrapper, input_ids: torch.Tensor, mask: torch.Tensor,
                     hidden: Sequence[torch.Tensor]) -> list[Segment]:
    """Per row of one latent_rollout: its prompt tokens without left padding and the thoughts that were fed.

    hidden: latent_rollout(..., keep_hidden=True)'s per-step [B, d] states; the fed vector of a step is
    realign(h) cast to the model's dtype (latent_rollout's default thought_fn), recomputed here bit for bit.
    """
    thoughts = (torch.stack([model.realign(h).to(model.model.dtype) for h in hidden], dim=1)
                if len(hidden) else None)  # [B, k, d]
    out = []
    for row in range(input_ids.shape[0]):
        ids = input_ids[row][mask[row].bool()].tolist()
        out.append(Segment(ids, None if thoughts is None else thoughts[row]))
    return out


def segment_embeds(model: ModelWrapper, segments: Sequence[Segment], like: torch.Tensor) -> list[torch.Tensor]:
    """Each segment in order: embed(its prompt tokens), then its fed vectors (cast to `like`'s dtype and device)."""
    parts = []
    for seg in segments:
        if seg.ids:
            parts.append(embed_ids(model, seg.ids))
        if seg.thoughts is not None and seg.thoughts.shape[0]:
            parts.append(seg.thoughts.to(device=like.device, dtype=like.dtype))
    return parts


@torch.no_grad()
def replay_embeds(model: ModelWrapper, segments: Sequence[Segment], prompt: str) -> torch.Tensor:
    """The `kv` layout for one row: [T, d] = the segments in the memory's order (segment_embeds), then
    embed(the final agent's rendered prompt, suffix included). No padding: the row's positions are the hand-off's
    real positions, in order, so a prefill from position 0 rebuilds the same keys and values."""
    prompt_embeds = embed_ids(model, token_ids(model, prompt))
    return torch.cat(segment_embeds(model, segments, prompt_embeds) + [prompt_embeds], dim=0)


@torch.no_grad()
def judger_embeds(model: ModelWrapper, messages: list[dict], segments: Sequence[Segment],
                  suffix: str = "") -> torch.Tensor:
    """The `reference` layout for one row: the judger's prompt as input embeddings [T, d] (no padding).

    embed(prompt up to and including the last user-turn header) + the segments in order (segment_embeds) +
    embed(the rest of the prompt, then `suffix`: the think token under --think). The split point comes from the
    chat template (split_user_turn). Without segments: the embeddings of the whole rendered prompt and suffix.
    """
    if not segments:
        return embed_ids(model, token_ids(model, model.render_chat(messages) + suffix))
    prefix, rest = split_user_turn(model, messages)
    first = embed_ids(model, token_ids(model, prefix))
    return torch.cat([first, *segment_embeds(model, segments, first), embed_ids(model, token_ids(model, rest + suffix))],
                     dim=0)
