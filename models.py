"""The latent core: one model wrapper that renders chats, generates text, rolls out latent thoughts, realigns
hidden states to input embeddings and hands KV caches (latent working memory) from agent to agent.

Conventions (B = batch rows, T = new positions, L = positions already in memory, d = hidden size):
- Every batch is left-padded, so the last column of a freshly encoded batch is a real token in every row.
- A `Memory` is a KV cache plus a [B, L] mask (1 = real position) and, per row, the position id its next real
  token takes. Pads may sit anywhere inside the memory (each agent's prompt is left-padded on its own); they are
  never attended because every forward passes the full [B, L + T] mask, and each row's position ids continue
  from its own true length.
- Forwards never mutate a Memory that was passed in: every call works on a shallow copy of the cache, so one
  memory can feed several continuations (the hierarchical judger, the tests).
"""

from __future__ import annotations

import copy
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig, LogitsProcessorList

from errors import ModelLoadError
from flags import default
from cpu_linear import use_few_rows_linear
from memory import Memory, _make_cache, copy_memory, select_rows
from sampling import pick_tokens

# Tokenizers without a chat template get this plain, documented format (README: "Chat format").
FALLBACK_ROLE_HEADERS = {"system": "System: ", "user": "User: ", "assistant": "Assistant: "}


@dataclass
class Generation:
    """Result of decoding a batch: texts, token ids and, per row, tokens generated up to and including EOS."""

    texts: list[str]
    token_ids: list[list[int]]
    num_tokens: list[int]
    kv: dict | None = None  # Memory.usage() of the largest cache held while decoding, positions of every row
    ended_by_eos: list[bool] = field(default_factory=list)  # per row: ended by EOS (True) or cut at the budget

    def cut(self, row: int) -> bool:
        """Whether row `row` was cut at the token budget (no EOS; False where unknown)."""
        return bool(self.ended_by_eos) and not self.ended_by_eos[row]


def finish_rows(tokenizer, rows: Sequence[Sequence[int]], eos_token_ids: Sequence[int]) -> Generation:
    """A Generation from per-row generated token ids, for every engine: each row cut after its first EOS (counted,
    and the row marked as ended by EOS), its text decoded with skip_special_tokens=True."""
    eos = set(eos_token_ids)
    texts, ids, counts, ended = [], [], [], []
    for row in rows:
        row = list(row)
        n = next((i + 1 for i, tok in enumerate(row) if tok in eos), len(row))
        ids.append(row[:n])
        counts.append(n)
        ended.append(bool(row[:n]) and row[n - 1] in eos)
        texts.append(tokenizer.decode(row[:n], skip_special_tokens=True))
    return Generation(texts, ids, counts, ended_by_eos=ended)


def _parse_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    """--dtype names -> torch dtypes; "auto" and None -> None (the caller's device default)."""
    if not isinstance(dtype, str):
        return dtype
    return {"auto": None, "float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
            "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}[dtype]


@contextmanager
def _load_errors(name_or_path: str):
    """Turn the many ways a model load fails into one ModelLoadError line for the CLI."""
    import logging

    from model_store import ModelStoreError

    # huggingface_hub logs each failed request before the exception that says the same: keep only our one line.
    hub_log = logging.getLogger("huggingface_hub")
    level = hub_log.level
    hub_log.setLevel(logging.ERROR)
    try:
        yield
    except ModelStoreError as exc:
        raise ModelLoadError(str(exc)) from None
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(f"cannot load model '{name_or_path}': {first}") from None
    finally:
        hub_log.setLevel(level)


# --------------------------------------------------------------------------------------------------- realignment

def ridge_realignment(w_out_chunks, lam: float) -> torch.Tensor:
    """W_a = (W_out^T W_out + lam I)^-1 W_out^T W_in, accumulated in float32 over vocabulary chunks.

    w_out_chunks yields (W_out[rows] [n, d], W_in[rows] [n, d]) pairs so the full [V, d] float32 copies of large
    vocabularies are never materialised. Returns W_a [d, d] float32.
    """
    gram, cross = None, None
    for w_out, w_in in w_out_chunks:
        w_out, w_in = w_out.float(), w_in.float()
        g, c = w_out.T @ w_out, w_out.T @ w_in
        gram = g if gram is None else gram + g
        cross = c if cross is None else cross + c
    eye = torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device)
    return torch.linalg.solve(gram + lam * eye, cross)


# --------------------------------------------------------------------------------------------------------- model

class ModelWrapper:
    """One causal LM shared by all agents of a run: chat rendering, decoding, latent rollout and realignment."""

    def __init__(
        self,
        model,
        tokenizer,
        *,
        name: str | None = None,
        latent_space_realign: bool = default("latent_space_realign"),
        realign_lambda: float = default("realign_lambda"),
        realign_scale: float | None = None,
        enable_thinking: bool | None = None,
        source=None,
    ) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.name = name or getattr(model.config, "_name_or_path", "model")
        self.source = source  # model_store.ModelSource when loaded through from_pretrained
        self.latent_space_realign = latent_space_realign
        self.realign_lambda = realign_lambda
        self.realign_scale = realign_scale  # None: match the mean input-embedding norm (paper); float: multiply
        # None: the chat template's own default (Qwen3: thinking mode, as the reference renders); False/True: passed
        # to the template as enable_thinking (--disable_thinking).
        self.enable_thinking = enable_thinking
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.eos_token_ids = self._eos_ids()
        self._realign_matrix: torch.Tensor | None = None
        self._target_norm: torch.Tensor | None = None
        self._embed_norms: torch.Tensor | None = None  # decode_thoughts: input-embedding row norms, computed once

    # -------------------------------------------------------------------------------------------- loading

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str,
        *,
        device: str | None = None,
        dtype: str | torch.dtype | None = None,
        **kwargs,
    ) -> "ModelWrapper":
        """Load a hub id, a local folder, a GGUF file or a registry-packaged model (see model_store.py).

        device: "cpu", "cuda", "cuda:N" or None (auto). "cuda" with several GPUs shards the model (device_map).
        dtype: default bf16 on CUDA, fp32 on CPU.
        """
        from model_store import resolve_model

        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise ModelLoadError(f"--device {device} was asked for but torch sees no CUDA GPU")
        dtype = _parse_dtype(dtype) or (torch.bfloat16 if device.startswith("cuda") else torch.float32)
        device_map = "auto" if device == "cuda" and torch.cuda.device_count() > 1 else device
        with _load_errors(name_or_path):
            source = resolve_model(name_or_path)
            extra = {"gguf_file": source.gguf_file} if source.gguf_file else {}
            tokenizer = AutoTokenizer.from_pretrained(source.path, **extra)
            model = AutoModelForCausalLM.from_pretrained(source.path, dtype=dtype, device_map=device_map, **extra)
        use_few_rows_linear(model)  # CPU fp32 only: small batches (see FewRowsLinear)
        return cls(model, tokenizer, name=name_or_path, source=source, **kwargs)

    @classmethod
    def without_weights(cls, name_or_path: str, *, dtype: str | torch.dtype | None = None,
                        **kwargs) -> "ModelWrapper":
        """Tokenizer, chat template, config and generation config, with the model's layers on the meta device (no
        weights read, no memory taken): enough for prompts, token counts and KV estimates when another engine
        (vLLM, see vllm_backend.py) does the decoding. Any forward pass on it fails."""
        from transformers import AutoConfig, GenerationConfig

        from model_store import resolve_model

        dtype = _parse_dtype(dtype)
        with _load_errors(name_or_path):
            source = resolve_model(name_or_path)
            extra = {"gguf_file": source.gguf_file} if source.gguf_file else {}
            tokenizer = AutoTokenizer.from_pretrained(source.path, **extra)
            config = AutoConfig.from_pretrained(source.path, **extra)
            with torch.device("meta"):
                model = AutoModelForCausalLM.from_config(config, dtype=dtype or torch.bfloat16)
            try:
                model.generation_config = GenerationConfig.from_pretrained(source.path, **extra)
            except OSError:
                pass  # no generation_config.json: the one derived from config.json stays
        return cls(model, tokenizer, name=name_or_path, source=source, **kwargs)

    def _eos_ids(self) -> list[int]:
        ids = set()
        for value in (getattr(self.model.generation_config, "eos_token_id", None), self.tokenizer.eos_token_id):
            if isinstance(value, int):
                ids.add(value)
            elif value is not None:
                ids.update(int(v) for v in value)
        return sorted(ids)

    @property
    def device(self) -> torch.device:
        """Where inputs go: the device of the input embeddings (the first shard under device_map)."""
        return self.model.get_input_embeddings().weight.device

    @property
    def config(self):
        return self.model.config

    # ------------------------------------------------------------------------------------------ chat & tokens

    def render_chat(self, messages: list[dict]) -> str:
        """Render one conversation with the tokenizer's own template, ending with the assistant header.

        No template argument beyond the generation prompt unless enable_thinking was set, so by default the prompt
        is exactly the template's default rendering (Qwen3: thinking mode, no empty think block).
        Without a template: "System: ...\\n\\nUser: ...\\n\\nAssistant: " (README, "Chat format").
        """
        if getattr(self.tokenizer, "chat_template", None):
            extra = {} if self.enable_thinking is None else {"enable_thinking": self.enable_thinking}
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True, **extra)
        parts = [FALLBACK_ROLE_HEADERS[m["role"]] + m["content"].strip() for m in messages]
        return "\n\n".join(parts + [FALLBACK_ROLE_HEADERS["assistant"].rstrip()]) + " "

    def encode(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Left-padded token ids [B, T] and mask [B, T]. Special tokens come from the chat template, not here."""
        enc = self.tokenizer(list(texts), return_tensors="pt", padding=True, add_special_tokens=False)
        return enc["input_ids"].to(self.device), enc["attention_mask"].to(self.device)

    # ------------------------------------------------------------------------------------------------ forward

    def _extend_args(self, new_mask: torch.Tensor, memory: Memory | None) -> dict:
        """Attention mask over memory + new positions, and per-row position ids that continue each row."""
        if memory is None:
            start = torch.zeros(new_mask.shape[0], dtype=torch.long, device=new_mask.device)
            full_mask, cache = new_mask, _make_cache([], self.config)
        else:
            start = memory.next_pos.to(new_mask.device)
            full_mask = torch.cat([memory.mask.to(new_mask.device), new_mask], dim=1)
            cache = memory.cache
        # [B, T]: real tokens get start, start+1, ...; pads get a harmless copy of their neighbour's position.
        position_ids = (start[:, None] + new_mask.cumsum(dim=-1) - 1).clamp(min=0)
        return {"attention_mask": full_mask, "position_ids": position_ids, "past_key_values": cache, "use_cache": True}

    @staticmethod
    def _advance(memory: Memory | None, args: dict, new_mask: torch.Tensor) -> Memory:
        start = args["position_ids"][:, -1] + 1 if new_mask.shape[1] else memory.next_pos
        # Rows whose new positions are all padding keep their previous next position.
        real = new_mask.sum(dim=-1) > 0
        prev = memory.next_pos.to(start.device) if memory is not None else torch.zeros_like(start)
        return Memory(args["past_key_values"], args["attention_mask"], torch.where(real, start, prev))

    def _forward_hidden(self, new_mask: torch.Tensor, memory: Memory | None, *, input_ids=None, inputs_embeds=None):
        """Run the decoder body only (no LM head, no per-layer hidden states). Returns ([B, T, d], Memory)."""
        args = self._extend_args(new_mask, memory)
        out = self.model.base_model(input_ids=input_ids, inputs_embeds=inputs_embeds, **args)
        return out.last_hidden_state, self._advance(memory, args, new_mask)

    def _forward_logits(self, new_mask: torch.Tensor, memory: Memory | None, *, input_ids=None, inputs_embeds=None):
        """Full causal-LM forward keeping only the last position's logits. Returns ([B, V] float32, Memory)."""
        args = self._extend_args(new_mask, memory)
        out = self.model(input_ids=input_ids, inputs_embeds=inputs_embeds, logits_to_keep=1, **args)
        return out.logits[:, -1].float(), self._advance(memory, args, new_mask)

    def _own(self, memory: Memory | None) -> Memory | None:
        return None if memory is None else copy_memory(memory, self.config)

    @torch.no_grad()
    def prefill(self, input_ids: torch.Tensor, mask: torch.Tensor, memory: Memory | None = None) -> Memory:
        """Append a left-padded segment [B, T] to a memory (or start one) and return the extended memory."""
        _, memory = self._forward_hidden(mask, self._own(memory), input_ids=input_ids)
        return memory

    @torch.no_grad()
    def prefill_embeds(self, inputs_embeds: torch.Tensor, mask: torch.Tensor, memory: Memory | None = None) -> Memory:
        """Append a left-padded segment of input embeddings [B, T, d] (for instance latent thoughts bridged from
        another model, see bridge.py) to a memory (or start one); padded positions (mask 0) are never attended."""
        embeds = inputs_embeds.to(device=self.device, dtype=self.model.dtype)
        _, memory = self._forward_hidden(mask.to(self.device), self._own(memory), inputs_embeds=embeds)
        return memory

    @torch.no_grad()
    def next_token_logits(self, input_ids: torch.Tensor, mask: torch.Tensor, memory: Memory | None = None):
        """Logits [B, V] of the token after a segment appended to memory, and the extended memory."""
        return self._forward_logits(mask, self._own(memory), input_ids=input_ids)

    # ------------------------------------------------------------------------------------------- latent rollout

    @torch.no_grad()
    def latent_rollout(
        self,
        input_ids: torch.Tensor,
        mask: torch.Tensor,
        steps: int,
        memory: Memory | None = None,
        *,
        thought_fn: Callable[[torch.Tensor, int], torch.Tensor] | None = None,
        keep_hidden: bool = False,
        on_step: Callable[[int, int], None] | None = None,
    ) -> tuple[Memory, list[torch.Tensor]]:
        """Prefill an agent's prompt [B, T] after `memory`, then think for `steps` latent steps.

        Each step maps the last-layer hidden state of the row's last position, h [B, d], to an input embedding
        e [B, d] (realignment by default, or `thought_fn(h, step)`) and feeds e as one new position. No token is
        sampled and no logits are computed. Returns the extended memory and, if keep_hidden, the `steps` hidden
        states [B, d] that produced the thoughts (for decoding them afterwards).
        """
        thought_fn = thought_fn or (lambda h, step: self.realign(h))
        hidden, memory = self._forward_hidden(mask, self._own(memory), input_ids=input_ids)
        last = hidden[:, -1]  # left padding: the last column is real in every row
        one = torch.ones(mask.shape[0], 1, dtype=mask.dtype, device=mask.device)
        kept = []
        for step in range(steps):
            if keep_hidden:
                kept.append(last)
            thought = thought_fn(last, step).to(self.model.dtype)[:, None, :]  # [B, 1, d]
            hidden, memory = self._forward_hidden(one, memory, inputs_embeds=thought)
            last = hidden[:, -1]
            if on_step is not None:
                on_step(step + 1, steps)
        return memory, kept

    # ------------------------------------------------------------------------------------------------ realign

    def real_vocab_size(self) -> int:
        """Rows of the embedding matrices that belong to a token of the tokenizer. Qwen pads its matrices to a
        multiple of 128 (151,936 rows for 151,669 tokens): the padded rows were never trained."""
        w_out = self.model.get_output_embeddings().weight
        return min(len(self.tokenizer), w_out.shape[0], self.model.get_input_embeddings().weight.shape[0])

    def _vocab_chunks(self, chunk: int = 8192):
        """Yield (W_out rows, effective input embeddings of the same token ids), both [n, d], over the tokenizer's
        real rows only (the reference resizes the embeddings to len(tokenizer) before realigning)."""
        w_out = self.model.get_output_embeddings().weight
        embed = self.model.get_input_embeddings()
        vocab = self.real_vocab_size()
        for start in range(0, vocab, chunk):
            ids = torch.arange(start, min(start + chunk, vocab), device=embed.weight.device)
            # Calling the embedding module (not reading .weight) includes scaling such as Gemma's sqrt(d).
            yield w_out[start:start + len(ids)].to(embed.weight.device), embed(ids)

    def set_realignment(self, latent_space_realign: bool, realign_lambda: float) -> None:
        """Change the realignment settings; the matrix is recomputed on next use when they differ."""
        if (self.latent_space_realign, self.realign_lambda) != (latent_space_realign, realign_lambda):
            self.latent_space_realign, self.realign_lambda = latent_space_realign, realign_lambda
            self._realign_matrix = None

    @torch.no_grad()
    def realignment(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(W_a [d, d] float32, target norm scalar): computed once per wrapper, then cached."""
        if self._realign_matrix is None:
            embed = self.model.get_input_embeddings()
            norms = torch.cat([e.float().norm(dim=-1) for _, e in self._vocab_chunks()])
            self._target_norm = norms.mean()
            if self.latent_space_realign:
                self._realign_matrix = ridge_realignment(self._vocab_chunks(), self.realign_lambda)
            else:
                d = embed.weight.shape[1]
                self._realign_matrix = torch.eye(d, dtype=torch.float32, device=embed.weight.device)
        return self._realign_matrix, self._target_norm

    def realign(self, hidden: torch.Tensor) -> torch.Tensor:
        """h [B, d] -> e [B, d] float32: h W_a, rescaled to the mean input-embedding norm (or times realign_scale)."""
        matrix, target = self.realignment()
        aligned = hidden.float().to(matrix.device) @ matrix
        if self.realign_scale is not None:
            return aligned * self.realign_scale
        return aligned * (target / aligned.norm(dim=-1, keepdim=True).clamp_min(1e-6))

    # ------------------------------------------------------------------------------------ reading latent thoughts

    def _scale_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """The logit transforms some heads apply after the linear layer (Cohere, Granite, Gemma 2 soft-capping)."""
        c = self.config
        if isinstance(getattr(c, "logit_scale", None), (int, float)):
            logits = logits * c.logit_scale
        if isinstance(getattr(c, "logits_scaling", None), (int, float)) and c.logits_scaling:
            logits = logits / c.logits_scaling
        if getattr(c, "final_logit_softcapping", None):
            logits = torch.tanh(logits / c.final_logit_softcapping) * c.final_logit_softcapping
        return logits

    @torch.no_grad()
    def decode_thoughts(self, hidden_states: Sequence[torch.Tensor], k: int) -> list[list[dict]]:
        """Read latent thoughts as tokens (an audit trail, not something the agents see).

        hidden_states: the per-step hidden states [B, d] that produced the thoughts (latent_rollout(keep_hidden=True)).
        For every step: the k most likely next tokens through the LM head (with their probabilities) and the k
        input-embedding rows nearest, by cosine, to the realigned vector realign(h) that was fed (with the cosine).
        Only ids the tokenizer knows are ranked (padded vocabulary rows are skipped). Returns, per row, one dict
        per step: {"lm_head": [str], "lm_head_prob": [float], "nearest_input": [str], "nearest_input_cos": [float]}.
        """
        rows = hidden_states[0].shape[0] if len(hidden_states) else 0
        out: list[list[dict]] = [[] for _ in range(rows)]
        if k <= 0:
            return out
        head = self.model.get_output_embeddings()
        table = self.model.get_input_embeddings().weight
        vocab = self.real_vocab_size()
        if self._embed_norms is None:
            # In chunks: a float32 copy of a large [V, d] table would be gigabytes.
            self._embed_norms = torch.cat([table[i:min(i + 8192, vocab)].float().norm(dim=-1)
                                           for i in range(0, vocab, 8192)]).clamp_min(1e-6)
        k = min(k, vocab)
        text = lambda ids: [self.tokenizer.decode([i]) for i in ids]
        for h in hidden_states:
            logits = self._scale_logits(head(h.to(device=head.weight.device, dtype=head.weight.dtype)).float())
            probs, top = torch.softmax(logits, dim=-1)[:, :vocab].topk(k, dim=-1)
            fed = self.realign(h).to(table.device)
            cos = (fed.to(table.dtype) @ table[:vocab].T).float()
            cos = cos / (self._embed_norms * fed.norm(dim=-1, keepdim=True).clamp_min(1e-6))
            sims, near = cos.topk(k, dim=-1)
            for r in range(rows):
                out[r].append({"lm_head": text(top[r].tolist()),
                               "lm_head_prob": [round(p, 4) for p in probs[r].tolist()],
                               "nearest_input": text(near[r].tolist()),
                               "nearest_input_cos": [round(c, 4) for c in sims[r].tolist()]})
        return out

    def kv_bytes_per_position(self) -> int:
        """Bytes one position of one row takes in the KV cache: 2 (keys and values) x layers x KV heads x head
        dimension x bytes per element of the model's dtype."""
        c = self.config.get_text_config() if hasattr(self.config, "get_text_config") else self.config
        heads = getattr(c, "num_key_value_heads", None) or c.num_attention_heads
        head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
        return 2 * c.num_hidden_layers * heads * head_dim * self.model.dtype.itemsize

    # ----------------------------------------------------------------------------------------------- sampling

    def sampling_config(self, temperature: float = 0.0, top_p: float | None = None,
                        top_k: int | None = None) -> GenerationConfig:
        """The run's one sampling configuration: the model's generation config with the run's flags over it, merged
        the way transformers' `generate` merges them (what a flag leaves as None keeps the model's value, else
        generate's global default, e.g. top_k 50). Qwen3 ships top_k 20, top_p 0.95, T 0.6.

        temperature 0 is greedy (do_sample False): no warpers, while processors such as a repetition penalty still
        apply, as in generate. The same values go to vLLM (vllm_backend.vllm_sampling_values)."""
        flags: dict = {"do_sample": temperature > 0}
        if temperature > 0:
            flags["temperature"] = temperature
            flags.update({k: v for k, v in (("top_p", top_p), ("top_k", top_k)) if v is not None})
        config, _ = self.model._prepare_generation_config(None, **flags)
        return config

    def logits_processors(self, config: GenerationConfig, prompt_length: int, prompt_mask: torch.Tensor | None,
                          device: torch.device) -> LogitsProcessorList:
        """transformers' own logits processors and warpers for `config`, built by the same GenerationMixin helpers
        `generate` uses (private API; transformers is pinned in requirements.txt). prompt_mask [B, T]: the current
        segment's mask, so a repetition penalty skips left padding as in generate; None for embedding prompts."""
        config = copy.deepcopy(config)
        self.model._prepare_special_tokens(config, kwargs_has_attention_mask=prompt_mask is not None, device=device)
        kwargs = {} if prompt_mask is None else {"attention_mask": prompt_mask}
        return self.model._get_logits_processor(generation_config=config, input_ids_seq_length=prompt_length,
                                                device=device, model_kwargs=kwargs)

    # --------------------------------------------------------------------------------------------- generation

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor,
        mask: torch.Tensor,
        memory: Memory | None = None,
        *,
        max_new_tokens: int = 256,
        sampling: GenerationConfig | None = None,
        streams: Sequence[int] | None = None,
        on_step: Callable[[int, int], None] | None = None,
    ) -> Generation:
        """Decode a left-padded batch [B, T], optionally continuing from `memory` (the judger's case).

        sampling: a sampling_config(...) (None: greedy). streams: one seed per row (stream_seed(seed, item id, agent));
        row r draws only from its own generator, so its tokens do not depend on the rows around it. A row stops at its
        first EOS (counted) or at max_new_tokens; after that it leaves the batch and never influences the others.
        on_step(tokens so far, max_new_tokens), if given, after every decode step (progress).
        """
        return self._decode(mask, self._own(memory), {"input_ids": input_ids}, max_new_tokens=max_new_tokens,
                            sampling=sampling, streams=streams, on_step=on_step)

    @torch.no_grad()
    def generate_embeds(
        self,
        embeds: Sequence[torch.Tensor],
        *,
        max_new_tokens: int = 256,
        sampling: GenerationConfig | None = None,
        streams: Sequence[int] | None = None,
        on_step: Callable[[int, int], None] | None = None,
    ) -> Generation:
        """Decode from prompts given as input embeddings, one [T_i, d] tensor per row (each its own length).

        The HF twin of vLLM's prompt-embeds input (vllm_backend.py): rows are left-padded here (pad positions get
        zero vectors and mask 0, so they are never attended and take no position), then decoded by the same loop as
        `generate` (same sampling, EOS counting and stopping). A row holding the embeddings of a token sequence gives
        the same tokens as `generate` on those token ids (processors that read the prompt's ids, such as a
        repetition penalty, see only the generated tokens here).
        """
        d = self.model.get_input_embeddings().weight.shape[-1]
        if any(e.ndim != 2 or e.shape[-1] != d for e in embeds):
            raise ValueError(f"generate_embeds needs one [T, {d}] tensor per row, got {[list(e.shape) for e in embeds]}")
        batch, mask = pad_embeds(embeds, dtype=self.model.dtype, device=self.device)
        return self._decode(mask, None, {"inputs_embeds": batch}, max_new_tokens=max_new_tokens, sampling=sampling,
                            streams=streams, on_step=on_step)

    def _decode(self, mask: torch.Tensor, memory: Memory | None, first: dict, *, max_new_tokens: int,
                sampling: GenerationConfig | None, streams: Sequence[int] | None,
                on_step: Callable[[int, int], None] | None = None) -> Generation:
        """The decode loop of `generate` and `generate_embeds`: `first` holds the first forward's input_ids or
        inputs_embeds (left-padded, [B, T] or [B, T, d]); `memory` is already the loop's own copy (or None).

        A row that emits EOS leaves the batch (its cache rows are dropped), so the remaining rows decode in a smaller
        batch: every row still sees exactly its own positions, and no forward runs for finished rows."""
        batch, device = mask.shape[0], mask.device
        config = sampling if sampling is not None else self.sampling_config()
        logits, memory = self._forward_logits(mask, memory, **first)
        # The ids the processors read (the segment's prompt, then each generated token), and its mask.
        seen = first.get("input_ids", torch.zeros(batch, 0, dtype=torch.long, device=device))
        prompt_length, prompt_mask = seen.shape[1], (mask if "input_ids" in first else None)
        processors = self.logits_processors(config, prompt_length, prompt_mask, logits.device)
        generators = None
        if config.do_sample and streams is not None:
            if len(streams) != batch:
                raise ValueError(f"{len(streams)} random streams for {batch} rows")
            generators = [torch.Generator(device=logits.device).manual_seed(int(s)) for s in streams]
        eos = torch.tensor(self.eos_token_ids or [-1], device=device)
        generated = torch.full((batch, max_new_tokens), self.tokenizer.pad_token_id or 0, dtype=torch.long,
                               device=device)
        live = torch.arange(batch, device=device)  # original row index of each row still decoding
        positions = [0] * batch  # real positions of each row's cache when it left the batch
        peak: dict | None = None  # Memory.usage() of the largest cache held

        def retire(rows: torch.Tensor) -> None:
            """Account for the rows [live] leaving the batch: the cache as it is now, and their positions."""
            nonlocal peak
            usage = memory.usage()
            if peak is None or usage["bytes"] > peak["bytes"]:
                peak = usage
            for row, n in zip(live[rows].tolist(), memory.row_lengths()[rows].tolist()):
                positions[row] = n

        steps = 0
        for step in range(max_new_tokens):
            scores = processors(seen, logits)
            rows_generators = None if generators is None else [generators[r] for r in live.tolist()]
            token = pick_tokens(scores, config.do_sample, rows_generators).to(device)
            generated[live, step] = token
            steps = step + 1
            if on_step is not None:
                on_step(steps, max_new_tokens)
            if step == max_new_tokens - 1:
                break
            seen = torch.cat([seen, token[:, None].to(seen.device)], dim=1)
            finished = torch.isin(token, eos)
            if bool(finished.any()):
                retire(finished)
                keep = (~finished).nonzero().squeeze(-1)
                live = live[keep]
                if not len(live):
                    break
                memory, token, seen = select_rows(memory, keep, self.config), token[keep], seen[keep]
                # Some processors hold per-row state (a repetition penalty's padding lengths): rebuild for the rows left.
                prompt_mask = prompt_mask[keep] if prompt_mask is not None else None
                processors = self.logits_processors(config, prompt_length, prompt_mask, logits.device)
            logits, memory = self._forward_logits(torch.ones_like(token)[:, None], memory, input_ids=token[:, None])
        if len(live) and steps:  # rows still in the batch at the end (the budget was reached)
            retire(torch.ones_like(live, dtype=torch.bool))
        result = finish_rows(self.tokenizer, generated[:, :steps].tolist(), self.eos_token_ids)
        result.kv = {**peak, "row_positions": positions} if peak else memory.usage()
        return result


def pad_embeds(embeds: Sequence[torch.Tensor], *, dtype: torch.dtype | None = None,
               device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad rows of input embeddings [T_i, d] into ([B, T, d], mask [B, T]); pad positions are zero vectors
    with mask 0 (any vector would do: they are never attended)."""
    if not len(embeds):
        raise ValueError("pad_embeds needs at least one row")
    width = max(e.shape[0] for e in embeds)
    dtype = dtype or embeds[0].dtype
    device = device or embeds[0].device
    batch = torch.zeros(len(embeds), width, embeds[0].shape[-1], dtype=dtype, device=device)
    mask = torch.zeros(len(embeds), width, dtype=torch.long, device=device)
    for row, e in enumerate(embeds):
        if e.ndim != 2 or e.shape[-1] != batch.shape[-1] or not e.shape[0]:
            raise ValueError(f"row {row}: expected a non-empty [T, {batch.shape[-1]}] tensor, got {list(e.shape)}")
        batch[row, width - e.shape[0]:] = e.to(device=device, dtype=dtype)
        mask[row, width - e.shape[0]:] = 1
    return batch, mask


