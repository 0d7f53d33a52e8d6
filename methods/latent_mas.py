"""LatentMAS: agents think in latent steps and hand their KV cache on; only the final agent writes text."""

from __future__ import annotations

from models import Memory, join_memories, keep_last, select_rows

from .base import AgentTrace, ItemOutput, Method, timed


class LatentMASMethod(Method):
    name = "latent_mas"

    def run_batch(self, items: list[dict], answer_kind: str) -> list[ItemOutput]:
        n = len(items)
        traces: list[list[AgentTrace]] = [[] for _ in range(n)]
        if self.settings.topology == "hierarchical" and not self.settings.chain_specialists:
            memory = self.parallel_specialists(items, answer_kind, traces)
        else:
            memory = None
            for role in self.workers:
                memory = self.think(role, items, answer_kind, memory, traces)
        # The judger always continues from the accumulated memory, latent_steps = 0 included.
        prompts = self.render(self.final_role, items, answer_kind, latent=memory is not None)
        seconds: list[float] = []
        with timed(n, seconds):
            gen = self.generate(prompts, memory)
        for trace, prompt, text, count in zip(traces, prompts, gen.texts, gen.num_tokens):
            trace.append(AgentTrace(self.final_role.title(), self.final_role, prompt, text, count, 0, seconds[0]))
        return [ItemOutput(text, trace) for text, trace in zip(gen.texts, traces)]

    def think(self, role: str, items: list[dict], answer_kind: str, memory: Memory | None,
              traces: list[list[AgentTrace]]) -> Memory | None:
        """One agent of a chain: prompt + latent steps appended to the memory, then the ablation trims."""
        steps = self.settings.latent_steps
        prompts = self.render(role, items, answer_kind, latent=memory is not None)
        seconds: list[float] = []
        with timed(len(items), seconds):
            before = memory.length if memory is not None else 0
            memory, _ = self.model.latent_rollout(*self.model.encode(prompts), steps, memory)
            memory = self._trim(memory, memory.length - before)
        for trace, prompt in zip(traces, prompts):
            trace.append(AgentTrace(role.title(), role, prompt, "", 0, steps, seconds[0]))
        return memory

    def parallel_specialists(self, items: list[dict], answer_kind: str, traces: list[list[AgentTrace]]) -> Memory | None:
        """The paper's hierarchy: specialists start from the question alone, as one batched rollout over
        (specialist, item) rows; the summarizer gets all their memories joined."""
        n, steps = len(items), self.settings.latent_steps
        prompts = [p for role in self.workers for p in self.render(role, items, answer_kind)]
        seconds: list[float] = []
        with timed(n, seconds):
            parts = [p for p in (self._trim(p, p.length) for p in self.specialist_memories(prompts, n)) if p is not None]
            joined = join_memories(parts, self.model.config) if parts else None
        for s, role in enumerate(self.workers):
            for i in range(n):
                traces[i].append(AgentTrace(role.title(), role, prompts[s * n + i], "", 0, steps,
                                            seconds[0] / len(self.workers)))
        return joined

    def specialist_memories(self, prompts: list[str], n: int) -> list[Memory]:
        """One latent rollout over all (specialist, item) rows, split back into one memory per specialist."""
        memory, _ = self.model.latent_rollout(*self.model.encode(prompts), self.settings.latent_steps)
        return [select_rows(memory, range(s * n, (s + 1) * n), self.model.config) for s in range(len(prompts) // n)]

    def _trim(self, memory: Memory, added: int) -> Memory | None:
        """The reference's ablations: keep only this agent's latent steps, or only this agent's positions."""
        if self.settings.latent_only:
            return keep_last(memory, self.settings.latent_steps, self.model.config)
        if self.settings.sequential_info_only:
            return keep_last(memory, added, self.model.config)
        return memory
