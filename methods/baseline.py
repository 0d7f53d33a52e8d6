"""Single agent: the question, the answer format, one decode."""

from __future__ import annotations

from .base import AgentTrace, ItemOutput, Method, timed


class BaselineMethod(Method):
    name = "baseline"

    def run_batch(self, items: list[dict], answer_kind: str) -> list[ItemOutput]:
        prompts = self.render("single", items, answer_kind)
        seconds: list[float] = []
        with timed(len(items), seconds):
            gen = self.generate(prompts, self.streams(items, ["single"]), roles=["single"])
        return [
            ItemOutput(text, [AgentTrace("Solver", "single", prompt, text, n, 0, seconds[0], cut_at_budget=gen.cut(r))])
            for r, (prompt, text, n) in enumerate(zip(prompts, gen.texts, gen.num_tokens))
        ]
