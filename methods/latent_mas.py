"""LatentMAS: agents think in latent steps and hand their KV cache on; only the final agent writes text.

The agents, their order and what each reads come from the run's topology plan (topology.py), walked once by
`think_all`. The walk keeps the KV memory and, per row, the memory's own sequence (each agent's prompt tokens and
the vectors it was fed); both go to the engine as one hand-off (engine.Handoff): the HF engine continues the KV
memory, vLLM re-prefills the sequence in its judger layout. The KV estimator (`kv_plan`) walks the same plan over
shapes.
"""

from __future__ import annotations

from engine import Handoff, replays_exactly
from memory import Memory, join_memories, keep_last, select_rows
from splice import rollout_segments
from topology import EMPTY, KVShape, KVShapeOps, StageOps, walk

from .base import AgentTrace, ItemOutput, Method, timed


class KVOps(StageOps[Memory]):
    """Plan operations on KV memories (per-row masks and positions are kept by keep_last / join_memories)."""

    def __init__(self, config, latent_steps: int) -> None:
        self.config, self.latent_steps = config, latent_steps

    def own(self, part: Memory, added: int) -> Memory:
        return keep_last(part, added, self.config)

    def latent(self, part: Memory) -> Memory | None:
        return keep_last(part, self.latent_steps, self.config)

    def join(self, memories: list[Memory]) -> Memory:
        return join_memories(memories, self.config)


class HandoffOps(StageOps[tuple]):
    """A KV memory paired with, per row, the memory's own sequence as Segments (each agent's prompt tokens and the
    vectors it was fed), cut and joined alike: what engine.Handoff carries to the final agent."""

    def __init__(self, kv: KVOps) -> None:
        self.kv = kv

    def own(self, part: tuple, added: int) -> tuple:
        memory, rows = part
        return self.kv.own(memory, added), [[segments[-1]] for segments in rows]

    def latent(self, part: tuple) -> tuple | None:
        memory, rows = part
        kept = self.kv.latent(memory)
        return None if kept is None else (kept, [[segments[-1].latent_only()] for segments in rows])

    def join(self, memories: list[tuple]) -> tuple:
        return (self.kv.join([m for m, _ in memories]),
                [[seg for row in per_memory for seg in row] for per_memory in zip(*(rows for _, rows in memories))])


class LatentMASMethod(Method):
    name = "latent_mas"
    uses_think_token = True

    def run_batch(self, items: list[dict], answer_kind: str) -> list[ItemOutput]:
        n, final = len(items), self.plan.final_role
        traces: list[list[AgentTrace]] = [[] for _ in range(n)]
        # The judger always continues from the accumulated memory, latent_steps = 0 included.
        read = self.think_all(items, answer_kind, traces)
        messages = [self.prompts.messages(final, item["question"], answer_kind, None, read is not None)
                    for item in items]
        prompts = [self.model.render_chat(m) + self.prompt_suffix for m in messages]
        handoff = None if read is None else Handoff(read[0], read[1], replays_exactly(self.plan), messages,
                                                    self.prompt_suffix, self.model)
        seconds: list[float] = []
        with timed(n, seconds):
            gen = self.generate(prompts, self.streams(items, [final]), handoff, roles=[final])
        for r, (trace, prompt, text, count) in enumerate(zip(traces, prompts, gen.texts, gen.num_tokens)):
            trace.append(AgentTrace(final.title(), final, prompt, text, count, 0, seconds[0], cut_at_budget=gen.cut(r)))
        return [ItemOutput(text, trace) for text, trace in zip(gen.texts, traces)]

    def think_all(self, items: list[dict], answer_kind: str, traces: list[list[AgentTrace]]):
        """Walk the plan's thinking stages: the memory the final agent reads, a pair (Memory, per-row Segments),
        or None."""
        ops = HandoffOps(KVOps(self.model.config, self.settings.latent_steps))
        return walk(self.plan, lambda roles, read: self.think(roles, items, answer_kind, read, traces), ops)

    def think(self, roles: tuple[str, ...], items: list[dict], answer_kind: str, read,
              traces: list[list[AgentTrace]]) -> tuple[list, list[int]]:
        """One stage: its agents' prompts appended to the memory they read and `latent_steps` latent steps, as one
        batched rollout over (agent, item) rows. Returns one part per agent, a (Memory, per-row Segments) pair of
        what it read + its positions, and the positions each appended."""
        n, steps, decode = len(items), self.settings.latent_steps, self.settings.decode_latents
        memory, segments = read if read is not None else (None, None)
        prompts = [p for role in roles for p in self.render(role, items, answer_kind, latent=read is not None)]
        seconds: list[float] = []
        with timed(n, seconds):
            ids, mask = self.model.encode(prompts)
            if memory is not None and len(roles) > 1:  # each agent of the stage reads the same memory
                memory = select_rows(memory, [i for _ in roles for i in range(n)], self.model.config)
            memory, hidden = self.model.latent_rollout(ids, mask, steps, memory, keep_hidden=True,
                                                       on_step=self.report(roles, "latent steps"))
            self.track_kv(memory.usage())
            parts = [memory] if len(roles) == 1 else [select_rows(memory, range(k * n, (k + 1) * n), self.model.config)
                                                      for k in range(len(roles))]
            rows = rollout_segments(self.model, ids, mask, hidden)
            parts = [(part, [(segments[i] if segments else []) + [rows[k * n + i]] for i in range(n)])
                     for k, part in enumerate(parts)]
        # Reading the thoughts (--decode_latents) is an audit, outside the timed work.
        latent_tokens = self.model.decode_thoughts(hidden, decode) if decode > 0 else None
        for k, role in enumerate(roles):
            for i in range(n):
                traces[i].append(AgentTrace(role.title(), role, prompts[k * n + i], "", 0, steps,
                                            seconds[0] / len(roles),
                                            latent_tokens=latent_tokens[k * n + i] if latent_tokens else None))
        return parts, [ids.shape[1] + steps] * len(roles)

    def kv_plan(self, items: list[dict], answer_kind: str) -> list[tuple[int, list[int]]]:
        """The memories run_batch builds, from prompt token counts alone (see Method.kv_plan): the same plan walked
        over KV shapes; every stage's rollout before its trim, then the judger's cache after decoding to
        max_new_tokens."""
        n, m = len(items), self.settings.latent_steps
        caches: list[tuple[int, list[int]]] = []

        def rollout(roles: tuple[str, ...], read: KVShape | None) -> tuple[list[KVShape], list[int]]:
            lengths = self.prompt_lengths([p for role in roles for p in self.render(role, items, answer_kind,
                                                                                     latent=read is not None)])
            base, width = read or EMPTY, max(lengths)  # one batch: every row padded to the longest prompt
            real = base.real(n)
            caches.append((len(lengths) * (base.length + width + m),
                           [sum(real[i] + lengths[k * n + i] + m for k in range(len(roles))) for i in range(n)]))
            parts = [base.extend(width, lengths[k * n:(k + 1) * n]).extend(m, [m] * n) for k in range(len(roles))]
            return parts, [width + m] * len(roles)

        read = walk(self.plan, rollout, KVShapeOps(m))
        lengths = self.prompt_lengths(self.render(self.plan.final_role, items, answer_kind, latent=read is not None))
        grow = self.settings.max_new_tokens - 1  # the last sampled token is never fed back
        base = read or EMPTY
        caches.append((n * (base.length + max(lengths) + grow), [r + k + grow for r, k in zip(base.real(n), lengths)]))
        return caches
