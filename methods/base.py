"""What every method shares: settings, the trace format, prompt encoding and timing."""

from __future__ import annotations

import argparse
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from typing import Callable, Sequence

import torch

from flags import default, token_budget
from engine import Engine, HFEngine, Handoff
from models import Generation, ModelWrapper
from prompts import PromptBook
from sampling import stream_seed
from topology import make_plan


@dataclass(kw_only=True)
class MethodSettings:
    """What the methods read of the run's configuration. Every default is flags.py's (the one declaration);
    max_new_tokens has none here: its flag default (None) means "the task's budget", resolved by flags.token_budget.
    A run builds this from its configuration with from_config, the one mapping of flags to these fields."""
    topology: str = default("prompt")       # "sequential" | "hierarchical"
    max_new_tokens: int                     # the decoding budget of every agent that writes text
    temperature: float = default("temperature")  # 0 = greedy
    top_p: float | None = default("top_p")  # None: the model's generation config (else generate's default)
    top_k: int | None = default("top_k")    # None: the model's generation config (Qwen3: 20; else generate's 50)
    seed: int | None = default("seed")[0]   # None: unseeded draws
    think: bool = default("think")          # the reference's --think: "<think>" after latent_mas agents' prompts
    latent_steps: int = default("latent_steps")
    latent_only: bool = default("latent_only")  # keep only the last agent's latent steps as memory
    sequential_info_only: bool = default("sequential_info_only")  # keep only the last agent's positions
    hierarchy: str = default("hierarchy")   # hierarchical: "chain" (the reference's, published numbers) | "parallel"
    text_mas_context_length: int = default("text_mas_context_length")  # earlier outputs' tokens kept (-1: all)
    decode_latents: int = default("decode_latents")  # latent_mas: the top-K tokens of every latent step (0: off)

    @classmethod
    def from_config(cls, config: argparse.Namespace, task, **changes) -> MethodSettings:
        """From the run's configuration (flags.py's namespace; --prompt is the topology, a run of several seeds
        starts at its first) for `task` (data.Task: its budget when --max_new_tokens is not given); `changes`
        replace fields (a sweep's latent_steps, a seed of a multi-seed run)."""
        same_name = {f.name for f in fields(cls)} - {"topology", "max_new_tokens", "seed"}
        seed = config.seed[0] if isinstance(config.seed, (list, tuple)) else config.seed
        return cls(**{**{name: getattr(config, name) for name in same_name}, "topology": config.prompt,
                      "max_new_tokens": token_budget(config, task), "seed": seed, **changes})


@dataclass
class AgentTrace:
    name: str
    role: str
    input: str
    output: str = ""
    output_tokens: int = 0
    latent_steps: int = 0
    seconds: float = 0.0                    # this item's share of the agent's batched wall time
    latent_tokens: list | None = None       # --decode_latents: per latent step, ModelWrapper.decode_thoughts' dict
    cut_at_budget: bool = False             # its decoding stopped at max_new_tokens, not at EOS


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

    @property
    def cut_at_budget(self) -> bool:
        """The final text was cut at the token budget (no EOS)."""
        return bool(self.agents) and self.agents[-1].cut_at_budget

    @property
    def final_prompt(self) -> str:
        """The rendered prompt the final text continues."""
        return self.agents[-1].input if self.agents else ""


THINK_TOKEN = "<think>"  # what the reference's --think appends after the generation prompt


class Method:
    """A method turns a batch of task items into final texts with per-agent traces."""

    name = "method"
    uses_think_token = False  # --think applies to this method's agents (the reference: latent_mas only)

    def __init__(self, model: ModelWrapper, settings: MethodSettings, prompts: PromptBook,
                 engine: Engine | None = None) -> None:
        self.model = model
        self.settings = settings
        self.prompts = prompts
        # What every decode goes through (engine.py): the HF model by default, vLLM with --use_vllm.
        self.engine = engine if engine is not None else HFEngine(model)
        self.sampling = model.sampling_config(settings.temperature, settings.top_p, settings.top_k)
        # Which agents run, in which order, what each reads and keeps (topology.py); the API may set its own roles.
        self.plan = make_plan(settings.topology, settings.hierarchy, latent_only=settings.latent_only,
                              sequential_info_only=settings.sequential_info_only)
        self.kv_peak: dict | None = None        # Memory.usage() of the largest KV cache of the current batch
        self.progress: Callable[[str], None] | None = None  # run_method shows it beside the bar: agent, steps, time

    # --------------------------------------------------------------------------------------- KV accounting

    def reset_kv(self) -> None:
        """Start the KV accounting of a new batch (run_method calls it before every run_batch)."""
        self.kv_peak = None

    def track_kv(self, usage: dict | None) -> None:
        """Remember the largest KV cache (Memory.usage()) held while running the current batch."""
        if usage is not None and (self.kv_peak is None or usage["bytes"] > self.kv_peak["bytes"]):
            self.kv_peak = usage

    def prompt_lengths(self, prompts: list[str]) -> list[int]:
        return [len(ids) for ids in self.model.tokenizer(prompts, add_special_tokens=False)["input_ids"]]

    def kv_plan(self, items: list[dict], answer_kind: str) -> list[tuple[int, list[int]]]:
        """The KV caches one batch builds, before any work: (allocated positions = rows x padded length, real
        positions per item) per cache, decoding assumed to run to max_new_tokens. One agent decodes here."""
        lengths = self.prompt_lengths(self.render("single", items, answer_kind))
        grow = self.settings.max_new_tokens - 1  # the last sampled token is never fed back
        return [(len(items) * (max(lengths) + grow), [n + grow for n in lengths])]

    def estimate_kv(self, items: list[dict], answer_kind: str, batch_size: int) -> dict:
        """Worst-case peak KV cache of a run over `items` in batches of `batch_size`, from the rendered prompts'
        token counts and the model config (no forward pass). bytes_total: the largest cache of any batch, padding
        included; bytes_per_item: the most real positions one item needs (what it needs alone, without padding)."""
        per_position = self.model.kv_bytes_per_position()
        tokens_total = tokens_item = 0
        for start in range(0, len(items), batch_size):
            allocated, per_item = max(self.kv_plan(items[start:start + batch_size], answer_kind), key=lambda c: c[0])
            tokens_total, tokens_item = max(tokens_total, allocated), max(tokens_item, max(per_item))
        return {"bytes_total": tokens_total * per_position, "tokens_total": tokens_total,
                "bytes_per_item": tokens_item * per_position, "tokens_per_item": tokens_item,
                "bytes_per_position": per_position}

    def run_batch(self, items: list[dict], answer_kind: str) -> list[ItemOutput]:
        raise NotImplementedError

    @property
    def prompt_suffix(self) -> str:
        """Text after every agent's generation prompt: the think-opening token with --think, where it applies."""
        return THINK_TOKEN if self.settings.think and self.uses_think_token else ""

    def render(self, role: str, items: list[dict], answer_kind: str, contexts: list[str] | None = None,
               latent: bool = False) -> list[str]:
        contexts = contexts or [None] * len(items)
        return [self.model.render_chat(self.prompts.messages(role, item["question"], answer_kind, ctx, latent))
                + self.prompt_suffix for item, ctx in zip(items, contexts)]

    def streams(self, items: list[dict], roles: list[str]) -> list[int] | None:
        """One random stream per decoded row, rows in (role, item) order: keyed by (seed, item id, agent role), so
        an item's draws are the same at any batch size, after a resume and whichever methods share the process.
        Items without an id are keyed by their question."""
        if self.settings.seed is None:
            return None
        return [stream_seed(self.settings.seed, item.get("id", item["question"]), role)
                for role in roles for item in items]

    def report(self, roles: Sequence[str], work: str) -> Callable[[int, int], None] | None:
        """Announce an agent's work on the progress line; returns the on_step(done, total) callback of its rollout
        or decode, which adds how far it is and an estimate of the time it has left (at most twice a second)."""
        if self.progress is None:
            return None
        name, start, shown = "+".join(roles), time.perf_counter(), [0.0]
        self.progress(f"{name}: {work}")

        def on_step(done: int, total: int) -> None:
            now = time.perf_counter()
            if now - shown[0] >= 0.5 or done == total:
                shown[0] = now
                left = (now - start) / done * (total - done)
                self.progress(f"{name}: {work} {done}/{total}, ~{left:.0f}s left at most")
        return on_step

    def generate(self, prompts: list[str], streams: list[int] | None, handoff: Handoff | None = None,
                 roles: Sequence[str] = ()) -> Generation:
        """Decode rendered prompts (rows matching `streams`) of the agents `roles` on the engine, after the latent
        hand-off when given."""
        gen = self.engine.generate(prompts, max_new_tokens=self.settings.max_new_tokens, sampling=self.sampling,
                                   streams=streams, handoff=handoff, on_step=self.report(roles, "tokens"))
        self.track_kv(gen.kv)
        return gen


def kv_per_item(usage: dict, items: int) -> list[int]:
    """Bytes of each item's real positions in a cache whose rows are the items, or (agent, item) rows in
    agent-major order (row r belongs to item r % items)."""
    per_position = usage["bytes"] / max(usage["rows"] * usage["length"], 1)
    positions = [0] * items
    for row, n in enumerate(usage["row_positions"]):
        positions[row % items] += n
    return [round(n * per_position) for n in positions]


@contextmanager
def timed(rows: int, out: list):
    """Append this block's wall seconds divided by `rows` to `out` (GPU work is waited for first)."""
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    sync()
    start = time.perf_counter()
    yield
    sync()
    out.append((time.perf_counter() - start) / max(rows, 1))
