"""LatentMAS: agents think in latent steps and hand their KV cache on; only the final agent writes text."""

from __future__ import annotations

from models import Memory, join_memories, keep_last, select_rows

from .base import AgentTrace, ItemOutput, Method, timed


class LatentMASMethod(Method):
    name = "latent_mas"
    uses_think_token = True

    def run_batch(self, items: list[dict], answer_kind: str) -> list[ItemOutput]:
        if self.engine is not None:  # --use_vllm: the judger decodes from prompt embeddings (see run_batch_embeds)
            return self.run_batch_embeds(items, answer_kind)
        n = len(items)
        traces: list[list[AgentTrace]] = [[] for _ in range(n)]
        if self.settings.parallel_specialists:
            memory = self.parallel_specialists(items, answer_kind, traces)
        else:
            memory = None
            for role in self.workers:
                memory = self.think(role, items, answer_kind, memory, traces)
        # The judger always continues from the accumulated memory, latent_steps = 0 included.
        prompts = self.render(self.final_role, items, answer_kind, latent=memory is not None)
        seconds: list[float] = []
        with timed(n, seconds):
            gen = self.generate(prompts, self.streams(items, [self.final_role]), memory)
        for trace, prompt, text, count in zip(traces, prompts, gen.texts, gen.num_tokens):
            trace.append(AgentTrace(self.final_role.title(), self.final_role, prompt, text, count, 0, seconds[0]))
        return [ItemOutput(text, trace) for text, trace in zip(gen.texts, traces)]

    def think(self, role: str, items: list[dict], answer_kind: str, memory: Memory | None,
              traces: list[list[AgentTrace]]) -> Memory | None:
        """One agent of a chain: prompt + latent steps appended to the memory, then the ablation trims."""
        steps, decode = self.settings.latent_steps, self.settings.decode_latents
        prompts = self.render(role, items, answer_kind, latent=memory is not None)
        seconds: list[float] = []
        with timed(len(items), seconds):
            before = memory.length if memory is not None else 0
            memory, hidden = self.model.latent_rollout(*self.model.encode(prompts), steps, memory,
                                                       keep_hidden=decode > 0)
            self.track_kv(memory.usage())
            memory = self._trim(memory, memory.length - before)
        # Reading the thoughts (--decode_latents) is an audit, outside the timed work.
        latent_tokens = self.model.decode_thoughts(hidden, decode) if hidden else [None] * len(items)
        for trace, prompt, tokens in zip(traces, prompts, latent_tokens):
            trace.append(AgentTrace(role.title(), role, prompt, "", 0, steps, seconds[0], latent_tokens=tokens))
        return memory

    def parallel_specialists(self, items: list[dict], answer_kind: str, traces: list[list[AgentTrace]]) -> Memory | None:
        """The paper's hierarchy: specialists start from the question alone, as one batched rollout over
        (specialist, item) rows; the summarizer gets all their memories joined."""
        n, steps = len(items), self.settings.latent_steps
        prompts = [p for role in self.workers for p in self.render(role, items, answer_kind)]
        seconds: list[float] = []
        hidden: list = []
        with timed(n, seconds):
            memories = self.specialist_memories(prompts, n, hidden)
            parts = [p for p in (self._trim(p, p.length) for p in memories) if p is not None]
            joined = join_memories(parts, self.model.config) if parts else None
        latent_tokens = self.model.decode_thoughts(hidden, self.settings.decode_latents) if hidden else None
        for s, role in enumerate(self.workers):
            for i in range(n):
                traces[i].append(AgentTrace(role.title(), role, prompts[s * n + i], "", 0, steps,
                                            seconds[0] / len(self.workers),
                                            latent_tokens=latent_tokens[s * n + i] if latent_tokens else None))
        return joined

    def specialist_memories(self, prompts: list[str], n: int, hidden: list | None = None) -> list[Memory]:
        """One latent rollout over all (specialist, item) rows, split back into one memory per specialist.
        With --decode_latents and a `hidden` list, the hidden states behind the thoughts are appended to it."""
        keep = hidden is not None and self.settings.decode_latents > 0
        memory, kept = self.model.latent_rollout(*self.model.encode(prompts), self.settings.latent_steps,
                                                 keep_hidden=keep)
        self.track_kv(memory.usage())
        if keep:
            hidden.extend(kept)
        return [select_rows(memory, range(s * n, (s + 1) * n), self.model.config) for s in range(len(prompts) // n)]

    def _trim(self, memory: Memory, added: int) -> Memory | None:
        """The reference's ablations: keep only this agent's latent steps, or only this agent's positions."""
        if self.settings.latent_only:
            return keep_last(memory, self.settings.latent_steps, self.model.config)
        if self.settings.sequential_info_only:
            return keep_last(memory, added, self.model.config)
        return memory

    def kv_plan(self, items: list[dict], answer_kind: str) -> list[tuple[int, list[int]]]:
        """The memories run_batch builds, from prompt token counts alone (see Method.kv_plan): every agent's
        rollout before its ablation trim, then the judger's cache after decoding to max_new_tokens."""
        n, m, s = len(items), self.settings.latent_steps, self.settings
        caches: list[tuple[int, list[int]]] = []
        length, real, has_memory = 0, [0] * n, False
        if s.parallel_specialists:
            lengths = self.prompt_lengths([p for role in self.workers for p in self.render(role, items, answer_kind)])
            part = max(lengths) + m  # every specialist's memory keeps the rollout's padded length
            rows = [sum(lengths[r] + m for r in range(i, len(lengths), n)) for i in range(n)]
            caches.append((len(lengths) * part, rows))
            if s.latent_only:
                length, real, has_memory = len(self.workers) * m, [len(self.workers) * m] * n, m > 0
            else:
                length, real, has_memory = len(self.workers) * part, rows, True
        else:
            for role in self.workers:
                lengths = self.prompt_lengths(self.render(role, items, answer_kind, latent=has_memory))
                added = max(lengths) + m
                caches.append((n * (length + added), [r + k + m for r, k in zip(real, lengths)]))
                if s.latent_only:
                    length, real, has_memory = m, [m] * n, m > 0
                elif s.sequential_info_only:
                    length, real, has_memory = added, [k + m for k in lengths], True
                else:
                    length, real, has_memory = length + added, [r + k + m for r, k in zip(real, lengths)], True
        lengths = self.prompt_lengths(self.render(self.final_role, items, answer_kind, latent=has_memory))
        grow = s.max_new_tokens - 1  # the last sampled token is never fed back
        caches.append((n * (length + max(lengths) + grow), [r + k + grow for r, k in zip(real, lengths)]))
        return caches

    # ----------------------------------------------------------------------------- --use_vllm: judger from embeddings

    def run_batch_embeds(self, items: list[dict], answer_kind: str) -> list[ItemOutput]:
        """The reference's fast path on stock engines: the thinkers' latent rollouts run on the HF model exactly as
        in run_batch (same prompts, KV hand-off between thinkers, ablation trims), keeping per row each agent's
        prompt tokens and the aligned vectors it was fed; the judger is then decoded by self.engine from prompt
        embeddings (vllm_backend.judger_embeds): its own prompt's token embeddings with those segments spliced in
        after its user-turn header. This re-prefills the memory from embeddings, so the judger's positions differ
        from the KV hand-off of run_batch and its text is not expected to equal run_batch's token for token."""
        from vllm_backend import judger_embeds, rollout_segments

        n, s = len(items), self.settings
        traces: list[list[AgentTrace]] = [[] for _ in range(n)]
        segments: list[list] | None = None  # per row, what the judger's memory would hold; None = no memory
        if s.parallel_specialists:
            prompts = [p for role in self.workers for p in self.render(role, items, answer_kind)]
            seconds: list[float] = []
            with timed(n, seconds):
                ids, mask = self.model.encode(prompts)
                memory, hidden = self.model.latent_rollout(ids, mask, s.latent_steps, keep_hidden=True)
                self.track_kv(memory.usage())
                rows = rollout_segments(self.model, ids, mask, hidden)
                if not (s.latent_only and s.latent_steps == 0):  # keep_last(.., 0) leaves no memory
                    segments = [[self._trim_segment(rows[k * n + i]) for k in range(len(self.workers))]
                                for i in range(n)]
            decode = s.decode_latents > 0 and hidden
            latent_tokens = self.model.decode_thoughts(hidden, s.decode_latents) if decode else None
            for k, role in enumerate(self.workers):
                for i in range(n):
                    traces[i].append(AgentTrace(role.title(), role, prompts[k * n + i], "", 0, s.latent_steps,
                                                seconds[0] / len(self.workers),
                                                latent_tokens=latent_tokens[k * n + i] if latent_tokens else None))
        else:
            memory = None
            for role in self.workers:
                prompts = self.render(role, items, answer_kind, latent=memory is not None)
                seconds = []
                with timed(n, seconds):
                    before = memory.length if memory is not None else 0
                    ids, mask = self.model.encode(prompts)
                    memory, hidden = self.model.latent_rollout(ids, mask, s.latent_steps, memory, keep_hidden=True)
                    self.track_kv(memory.usage())
                    memory = self._trim(memory, memory.length - before)
                    rows = rollout_segments(self.model, ids, mask, hidden)
                    if memory is None:
                        segments = None
                    elif s.latent_only or s.sequential_info_only:  # only this agent's thoughts / positions
                        segments = [[self._trim_segment(seg)] for seg in rows]
                    else:
                        segments = [(old or []) + [seg] for old, seg in zip(segments or [None] * n, rows)]
                decode = s.decode_latents > 0 and hidden
                latent_tokens = self.model.decode_thoughts(hidden, s.decode_latents) if decode else [None] * n
                for trace, prompt, tokens in zip(traces, prompts, latent_tokens):
                    trace.append(AgentTrace(role.title(), role, prompt, "", 0, s.latent_steps, seconds[0],
                                            latent_tokens=tokens))
        latent = segments is not None
        messages = [self.prompts.messages(self.final_role, item["question"], answer_kind, None, latent)
                    for item in items]
        prompts = [self.model.render_chat(m) + self.prompt_suffix for m in messages]
        seconds = []
        with timed(n, seconds):
            embeds = [judger_embeds(self.model, m, segs, self.prompt_suffix)
                      for m, segs in zip(messages, segments or [[]] * n)]
            gen = self.engine.generate_from_embeds(embeds, max_new_tokens=s.max_new_tokens, sampling=self.sampling,
                                                   streams=self.streams(items, [self.final_role]))
        for trace, prompt, text, count in zip(traces, prompts, gen.texts, gen.num_tokens):
            trace.append(AgentTrace(self.final_role.title(), self.final_role, prompt, text, count, 0, seconds[0]))
        return [ItemOutput(text, trace) for text, trace in zip(gen.texts, traces)]

    def _trim_segment(self, segment):
        """The ablation trims of _trim on one agent's segment: --latent_only keeps its thoughts only."""
        return segment.latent_only() if self.settings.latent_only else segment
