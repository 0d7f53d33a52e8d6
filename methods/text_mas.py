"""Text-based multi-agent system: every agent decodes text, later agents get earlier outputs pasted in."""

from __future__ import annotations

from .base import AgentTrace, ItemOutput, Method, timed


class TextMASMethod(Method):
    name = "text_mas"

    def run_batch(self, items: list[dict], answer_kind: str) -> list[ItemOutput]:
        n = len(items)
        traces: list[list[AgentTrace]] = [[] for _ in range(n)]
        if self.settings.parallel_specialists:
            # Independent specialists: one batched decode over (specialist, item) rows, nobody sees anybody.
            prompts = [p for role in self.workers for p in self.render(role, items, answer_kind)]
            seconds: list[float] = []
            with timed(n, seconds):
                gen = self.generate(prompts, self.streams(items, self.workers))
            for s, role in enumerate(self.workers):
                for i in range(n):
                    r = s * n + i
                    traces[i].append(AgentTrace(role.title(), role, prompts[r], gen.texts[r], gen.num_tokens[r], 0,
                                                seconds[0] / len(self.workers)))
        else:
            for role in self.workers:
                self._step(role, items, answer_kind, traces)
        finals = self._step(self.final_role, items, answer_kind, traces)
        return [ItemOutput(text, trace) for text, trace in zip(finals, traces)]

    def _step(self, role: str, items: list[dict], answer_kind: str, traces: list[list[AgentTrace]]) -> list[str]:
        contexts = [self._context(trace) for trace in traces]
        prompts = self.render(role, items, answer_kind, contexts)
        seconds: list[float] = []
        with timed(len(items), seconds):
            gen = self.generate(prompts, self.streams(items, [role]))
        for trace, prompt, text, count in zip(traces, prompts, gen.texts, gen.num_tokens):
            trace.append(AgentTrace(role.title(), role, prompt, text, count, 0, seconds[0]))
        return gen.texts

    def _context(self, trace: list[AgentTrace]) -> str:
        text = "\n\n".join(f"[{a.name}]\n{a.output.strip()}" for a in trace)
        limit = self.settings.text_mas_context_length
        if limit > 0 and text:
            ids = self.model.tokenizer(text, add_special_tokens=False)["input_ids"]
            if len(ids) > limit:  # keep the most recent work
                text = self.model.tokenizer.decode(ids[-limit:])
        return text

    def kv_plan(self, items: list[dict], answer_kind: str) -> list[tuple[int, list[int]]]:
        """Every agent decodes on a cache of its own, freed before the next one. Earlier outputs are unknown before
        the run, so each is counted as max_new_tokens plus its "[Name]" header (an upper bound), capped by
        --text_mas_context_length; decoding is assumed to run to max_new_tokens (see Method.kv_plan)."""
        n, s = len(items), self.settings
        grow = s.max_new_tokens - 1

        def context_bound(k: int) -> int:
            bound = k * (s.max_new_tokens + 8)
            return min(bound, s.text_mas_context_length + 8) if s.text_mas_context_length > 0 else bound

        def cache(roles: list[str], earlier: int) -> tuple[int, list[int]]:
            # One placeholder token stands for the context, then replaced by its bound.
            context = ["x"] * n if earlier else None
            lengths = [k - (1 if earlier else 0) + context_bound(earlier)
                       for role in roles for k in self.prompt_lengths(self.render(role, items, answer_kind, context))]
            return len(lengths) * (max(lengths) + grow), [sum(lengths[r] + grow for r in range(i, len(lengths), n))
                                                          for i in range(n)]

        if s.parallel_specialists:
            caches = [cache(self.workers, 0)]
        else:
            caches = [cache([role], k) for k, role in enumerate(self.workers)]
        return caches + [cache([self.final_role], len(self.workers))]
