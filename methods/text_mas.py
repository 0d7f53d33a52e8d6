"""Text-based multi-agent system: every agent decodes text; later agents get earlier outputs pasted in.

It walks the same topology plan as latent_mas (topology.py): here a memory is, per item, the earlier agents'
outputs as (name, text) entries, and an agent reads them as text in its prompt.
"""

from __future__ import annotations

from topology import StageOps, make_plan, walk

from .base import AgentTrace, ItemOutput, Method, timed

Entries = list[list[tuple[str, str]]]  # per item: (agent name, output) of the agents before


class TextOps(StageOps):
    """Plan operations on earlier outputs: an agent's own part is its one entry; parts join in agent order."""

    def own(self, part: Entries, added: int) -> Entries:
        return [row[-added:] for row in part]

    def join(self, memories: list[Entries]) -> Entries:
        return [[entry for row in rows for entry in row] for rows in zip(*memories)]


class CountOps(StageOps):
    """The same plan over counts of earlier outputs per item (the KV estimator of kv_plan)."""

    def own(self, part: int, added: int) -> int:
        return added

    def join(self, memories: list[int]) -> int:
        return sum(memories)


class TextMASMethod(Method):
    name = "text_mas"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # --latent_only / --sequential_info_only trim latent memory: every text_mas agent reads all earlier outputs.
        self.plan = make_plan(self.settings.topology, self.settings.hierarchy)

    def run_batch(self, items: list[dict], answer_kind: str) -> list[ItemOutput]:
        n = len(items)
        traces: list[list[AgentTrace]] = [[] for _ in range(n)]
        step = lambda roles, read: self._step(roles, items, answer_kind, read, traces)
        read = walk(self.plan, step, TextOps())
        (final,), _ = step((self.plan.final_role,), read)
        finals = [row[-1][1] for row in final]
        return [ItemOutput(text, trace) for text, trace in zip(finals, traces)]

    def _step(self, roles: tuple[str, ...], items: list[dict], answer_kind: str, read: Entries | None,
              traces: list[list[AgentTrace]]) -> tuple[list[Entries], list[int]]:
        """One stage: its agents decode side by side (one batch over (agent, item) rows), each reading the earlier
        outputs. Returns one part per agent (the entries it read + its own) and the entries each added (1)."""
        n = len(items)
        contexts = [self._context(row) for row in read] if read is not None else None
        prompts = [p for role in roles for p in self.render(role, items, answer_kind, contexts)]
        seconds: list[float] = []
        with timed(n, seconds):
            gen = self.generate(prompts, self.streams(items, list(roles)), roles=roles)
        parts = []
        for k, role in enumerate(roles):
            rows = range(k * n, (k + 1) * n)
            for i, r in enumerate(rows):
                traces[i].append(AgentTrace(role.title(), role, prompts[r], gen.texts[r], gen.num_tokens[r], 0,
                                            seconds[0] / len(roles), cut_at_budget=gen.cut(r)))
            parts.append([(read[i] if read is not None else []) + [(role.title(), gen.texts[r])]
                          for i, r in enumerate(rows)])
        return parts, [1] * len(roles)

    def _context(self, entries: list[tuple[str, str]]) -> str:
        text = "\n\n".join(f"[{name}]\n{output.strip()}" for name, output in entries)
        limit = self.settings.text_mas_context_length
        if limit > 0 and text:
            ids = self.model.tokenizer(text, add_special_tokens=False)["input_ids"]
            if len(ids) > limit:  # keep the most recent work
                text = self.model.tokenizer.decode(ids[-limit:])
        return text

    def kv_plan(self, items: list[dict], answer_kind: str) -> list[tuple[int, list[int]]]:
        """Every stage decodes on a cache of its own, freed before the next one. Earlier outputs are unknown before
        the run, so each is counted as max_new_tokens plus its "[Name]" header (an upper bound), capped by
        --text_mas_context_length; decoding is assumed to run to max_new_tokens (see Method.kv_plan)."""
        n, s = len(items), self.settings
        grow = s.max_new_tokens - 1
        caches: list[tuple[int, list[int]]] = []

        def context_bound(k: int) -> int:
            bound = k * (s.max_new_tokens + 8)
            return min(bound, s.text_mas_context_length + 8) if s.text_mas_context_length > 0 else bound

        def stage(roles: tuple[str, ...], earlier: int | None) -> tuple[list[int], list[int]]:
            earlier = earlier or 0
            # One placeholder token stands for the context, then replaced by its bound.
            context = ["x"] * n if earlier else None
            lengths = [k - (1 if earlier else 0) + context_bound(earlier)
                       for role in roles for k in self.prompt_lengths(self.render(role, items, answer_kind, context))]
            caches.append((len(lengths) * (max(lengths) + grow),
                           [sum(lengths[r] + grow for r in range(i, len(lengths), n)) for i in range(n)]))
            return [earlier + 1] * len(roles), [1] * len(roles)

        stage((self.plan.final_role,), walk(self.plan, stage, CountOps()))
        return caches
