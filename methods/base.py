"""What every method shares: settings, the trace format, prompt encoding and timing."""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

from models import ModelWrapper, make_generator
from prompts import TOPOLOGIES, PromptBook


@dataclass
class MethodSettings:
    topology: str = "sequential"            # "sequential" | "hierarchical"
    max_new_tokens: int = 4096
    temperature: float = 0.6                # 0 = greedy
    top_p: float = 0.95
    seed: int | None = 42
    latent_steps: int = 0
    latent_only: bool = False               # keep only the last agent's latent steps as memory
    sequential_info_only: bool = False      # keep only the last agent's positions (prompt + latent) as memory
    chain_specialists: bool = False         # hierarchical: the reference's chain (each specialist sees the previous)
    text_mas_context_length: int = -1       # text_mas: keep at most this many tokens of earlier outputs (-1: all)


@dataclass
class AgentTrace:
    name: str
    role: str
    input: str
    output: str = ""
    output_tokens: int = 0
    latent_steps: int = 0
    seconds: float = 0.0                    # this item's share of the agent's batched wall time


@dataclass
class ItemOutput:
    final_text: str
    agents: list[AgentTrace] = field(default_factory=list)

    @property
    def output_tokens(self) -> int:
        return sum(a.output_tokens for a in self.agents)

    @property
    def judger_output_tokens(self) -> int:
        return self.agents[-1].output_tokens if self.agents else 0


class Method:
    """A method turns a batch of task items into final texts with per-agent traces."""

    name = "method"

    def __init__(self, model: ModelWrapper, settings: MethodSettings, prompts: PromptBook) -> None:
        self.model = model
        self.settings = settings
        self.prompts = prompts
        self.generator = make_generator(settings.seed)
        self.workers, self.final_role = TOPOLOGIES[settings.topology]

    def run_batch(self, items: list[dict], answer_kind: str) -> list[ItemOutput]:
        raise NotImplementedError

    def render(self, role: str, items: list[dict], answer_kind: str, contexts: list[str] | None = None,
               latent: bool = False) -> list[str]:
        contexts = contexts or [None] * len(items)
        return [self.model.render_chat(self.prompts.messages(role, item["question"], answer_kind, ctx, latent))
                for item, ctx in zip(items, contexts)]

    def generate(self, prompts: list[str], memory=None):
        ids, mask = self.model.encode(prompts)
        s = self.settings
        return self.model.generate(ids, mask, memory, max_new_tokens=s.max_new_tokens, temperature=s.temperature,
                                   top_p=s.top_p, generator=self.generator)


@contextmanager
def timed(rows: int, out: list):
    """Append this block's wall seconds divided by `rows` to `out` (GPU work is waited for first)."""
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    sync()
    start = time.perf_counter()
    yield
    sync()
    out.append((time.perf_counter() - start) / max(rows, 1))
