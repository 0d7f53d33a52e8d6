"""The one decoding interface every method uses, with two implementations: the HF model (`HFEngine`, here) and
stock vLLM (`vllm_backend.VLLMEngine`). Methods build prompts and hand-offs and call `engine.generate`; they never
look at which engine decodes.

Both engines take the same inputs and give the same `models.Generation`:
- token prompts: rendered prompt texts, tokenized exactly as ModelWrapper.encode tokenizes them;
- prompt embeddings: one unpadded [T_i, d] tensor per row (`generate_embeds`);
- a latent hand-off (`Handoff`): what the final latent_mas agent reads. HF continues the KV memory itself; vLLM
  re-prefills it from embeddings in one of two layouts (`JUDGER_LAYOUTS`, chosen by `judger_layout`);
- the same merged sampling configuration (ModelWrapper.sampling_config), the same token budget and EOS ids, one
  random stream per row (Method.streams), token counts per row up to and including EOS, and per row whether it
  ended by EOS or was cut at the budget.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol, Sequence

import torch
from transformers import GenerationConfig

from errors import UsageError
from memory import Memory
from models import Generation, ModelWrapper
from splice import Segment
from topology import Plan

# How the vLLM judger's prompt embeddings lay out the memory (README, "vLLM"):
#   kv:        the memory's own sequence (each agent's prompt tokens and the thoughts it was fed, in the memory's
#              order, each row without its pads), then the judger's whole prompt: the same context as the KV hand-off
#   reference: the reference's fast path: the memory spliced in right after the judger's user-turn header
JUDGER_LAYOUTS = ("kv", "reference")


def replays_exactly(plan: Plan) -> bool:
    """Whether re-prefilling the memory's own sequence from position 0 gives the final agent the KV hand-off's
    context: only when the memory keeps every position in order, each continuing the one before (one agent per
    stage, nothing trimmed). Parallel specialists overlap their positions and the ablations leave gaps."""
    return plan.keep == "all" and all(len(stage) == 1 for stage in plan.thinking_stages)


def judger_layout(requested: str | None, exact: bool) -> str:
    """The layout the vLLM judger uses: the requested one, or by default `kv` where it is exact, else `reference`.
    Asking for `kv` where no re-prefill can equal the hand-off is a one-line error."""
    if requested not in (None, *JUDGER_LAYOUTS):
        raise UsageError(f"--vllm_judger_layout must be one of {', '.join(JUDGER_LAYOUTS)} (got {requested!r})")
    if requested == "kv" and not exact:
        raise UsageError("--vllm_judger_layout kv needs a memory kept whole and in order (sequential or "
                         "hierarchical chain, no --latent_only / --sequential_info_only); use reference")
    return requested or ("kv" if exact else "reference")


@dataclass
class Handoff:
    """What the final latent_mas agent reads, in the forms both engines need.

    memory:   the KV memory the final agent continues (HFEngine)
    segments: per row, the memory's contributions in order: each agent's prompt tokens (pads removed) and the
              aligned vectors it was fed (VLLMEngine re-prefills them)
    exact:    replays_exactly(plan): the segments in order, then the prompt, are the KV hand-off's context
    messages: per row, the final agent's chat messages (the `reference` layout splits them at the user turn)
    suffix:   text after the final prompt's generation header (the think token under --think)
    model:    the wrapper whose embeddings the segments' tokens take
    """

    memory: Memory
    segments: list[list[Segment]]
    exact: bool
    messages: list[list[dict]]
    suffix: str
    model: ModelWrapper


class Engine(Protocol):
    """What methods decode through. `describe()` goes to summary.json (backend, version, device, dtype)."""

    name: str

    def generate(self, prompts: list[str], *, max_new_tokens: int, sampling: GenerationConfig | None = None,
                 streams: Sequence[int] | None = None, handoff: Handoff | None = None,
                 on_step: Callable[[int, int], None] | None = None) -> Generation: ...

    def generate_embeds(self, embeds: list[torch.Tensor], *, max_new_tokens: int,
                        sampling: GenerationConfig | None = None, streams: Sequence[int] | None = None,
                        on_step: Callable[[int, int], None] | None = None) -> Generation: ...

    def describe(self) -> dict: ...


class HFEngine:
    """The engine interface on the HF model: `generate` continues the hand-off's KV memory (the method's own
    computation), `generate_embeds` decodes prompt embeddings by the same loop (ModelWrapper.generate_embeds)."""

    name = "hf"

    def __init__(self, model: ModelWrapper) -> None:
        self.model = model

    def generate(self, prompts: list[str], *, max_new_tokens: int, sampling: GenerationConfig | None = None,
                 streams: Sequence[int] | None = None, handoff: Handoff | None = None,
                 on_step: Callable[[int, int], None] | None = None) -> Generation:
        ids, mask = self.model.encode(prompts)
        return self.model.generate(ids, mask, None if handoff is None else handoff.memory,
                                   max_new_tokens=max_new_tokens, sampling=sampling, streams=streams, on_step=on_step)

    def generate_embeds(self, embeds: list[torch.Tensor], *, max_new_tokens: int,
                        sampling: GenerationConfig | None = None, streams: Sequence[int] | None = None,
                        on_step: Callable[[int, int], None] | None = None) -> Generation:
        return self.model.generate_embeds(embeds, max_new_tokens=max_new_tokens, sampling=sampling, streams=streams,
                                          on_step=on_step)

    def describe(self) -> dict:
        return {"backend": self.name, "version": None, "device": str(self.model.device),
                "dtype": str(self.model.model.dtype).removeprefix("torch.")}
