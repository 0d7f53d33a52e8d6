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

import os
import sys
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, DynamicCache

# Tokenizers without a chat template get this plain, documented format (README: "Chat format").
FALLBACK_ROLE_HEADERS = {"system": "System: ", "user": "User: ", "assistant": "Assistant: "}


class ModelLoadError(Exception):
    """A model could not be found or loaded; the message is one line for the CLI."""


@dataclass
class Memory:
    """Latent working memory handed from agent to agent.

    cache:    DynamicCache, per layer keys/values of shape [B, H_kv, L, D]
    mask:     [B, L] long, 1 where the position is real, 0 for padding
    next_pos: [B] long, the position id the next real token of each row takes
    """

    cache: DynamicCache
    mask: torch.Tensor
    next_pos: torch.Tensor

    @property
    def batch_size(self) -> int:
        return self.mask.shape[0]

    @property
    def length(self) -> int:
        return self.mask.shape[1]

    def row_lengths(self) -> torch.Tensor:
        """[B] number of real positions per row."""
        return self.mask.sum(dim=-1)

    def nbytes(self) -> int:
        """Bytes held by the keys and values (padding included, as it is allocated)."""
        return sum(k.numel() * k.element_size() + v.numel() * v.element_size() for k, v in _layer_tensors(self.cache))


@dataclass
class Generation:
    """Result of decoding a batch: texts, token ids and, per row, tokens generated up to and including EOS."""

    texts: list[str]
    token_ids: list[list[int]]
    num_tokens: list[int]


# ----------------------------------------------------------------------------------------------- cache operations

def _layer_tensors(cache: DynamicCache) -> list[tuple[torch.Tensor, torch.Tensor]]:
    out = []
    for layer in cache.layers:
        if getattr(layer, "is_sliding", False):
            # A sliding-window layer drops old positions by itself, so slicing or joining it along the sequence
            # would silently misalign it with the mask.
            raise NotImplementedError("latent memory needs full-attention KV layers; sliding-window caches are not supported")
        out.append((layer.keys, layer.values))
    return out


def _make_cache(kv: Sequence[tuple[torch.Tensor, torch.Tensor]], config) -> DynamicCache:
    return DynamicCache(ddp_cache_data=list(kv), config=config)


def copy_memory(memory: Memory, config) -> Memory:
    """A memory whose cache object can be extended without touching `memory` (tensors are copied once)."""
    return Memory(_make_cache(_layer_tensors(memory.cache), config), memory.mask, memory.next_pos)


def keep_last(memory: Memory, k: int, config) -> Memory | None:
    """Keep only the last k positions of every row (the reference's latent_only / sequential_info_only ablations).

    Kept keys keep the positions they were rotated with, and next_pos is unchanged, so relative distances between
    the kept memory and what follows stay as they were.
    """
    if k <= 0:
        return None
    k = min(k, memory.length)
    kv = [(key[:, :, -k:, :], value[:, :, -k:, :]) for key, value in _layer_tensors(memory.cache)]
    return Memory(_make_cache(kv, config), memory.mask[:, -k:], memory.next_pos)


def select_rows(memory: Memory, rows: torch.Tensor | Sequence[int], config) -> Memory:
    """The memory of a subset of rows, in the given order."""
    rows = torch.as_tensor(rows, dtype=torch.long, device=memory.mask.device)
    kv = [(key[rows.to(key.device)], value[rows.to(value.device)]) for key, value in _layer_tensors(memory.cache)]
    return Memory(_make_cache(kv, config), memory.mask[rows], memory.next_pos[rows])


def join_memories(memories: Sequence[Memory], config) -> Memory:
    """Concatenate independent memories of the same rows along the sequence (the hierarchical judger's input).

    Each memory keeps the position ids it was computed with (parallel context windows): the joined memory's next
    position is the longest one's, so what follows sits after every specialist's thoughts, and no key is re-rotated.
    """
    if len(memories) == 1:
        return memories[0]
    sizes = {m.batch_size for m in memories}
    if len(sizes) != 1:
        raise ValueError(f"cannot join memories of different batch sizes {sorted(sizes)}")
    per_memory = [_layer_tensors(m.cache) for m in memories]
    kv = [
        (torch.cat([layers[i][0] for layers in per_memory], dim=2), torch.cat([layers[i][1] for layers in per_memory], dim=2))
        for i in range(len(per_memory[0]))
    ]
    mask = torch.cat([m.mask for m in memories], dim=1)
    next_pos = torch.stack([m.next_pos for m in memories]).amax(dim=0)
    return Memory(_make_cache(kv, config), mask, next_pos)


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
        latent_space_realign: bool = False,
        realign_lambda: float = 1e-5,
        realign_scale: float | None = None,
        think: bool = False,
        source=None,
    ) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.name = name or getattr(model.config, "_name_or_path", "model")
        self.source = source  # model_store.ModelSource when loaded through from_pretrained
        self.latent_space_realign = latent_space_realign
        self.realign_lambda = realign_lambda
        self.realign_scale = realign_scale  # None: match the mean input-embedding norm (paper); float: multiply
        self.think = think
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.eos_token_ids = self._eos_ids()
        self._realign_matrix: torch.Tensor | None = None
        self._target_norm: torch.Tensor | None = None

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
        from model_store import ModelStoreError, resolve_model

        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise ModelLoadError(f"--device {device} was asked for but torch sees no CUDA GPU")
        if isinstance(dtype, str):
            dtype = {"auto": None, "float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
                     "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}[dtype]
        dtype = dtype or (torch.bfloat16 if device.startswith("cuda") else torch.float32)
        device_map = "auto" if device == "cuda" and torch.cuda.device_count() > 1 else device
        try:
            source = resolve_model(name_or_path)
            extra = {"gguf_file": source.gguf_file} if source.gguf_file else {}
            tokenizer = AutoTokenizer.from_pretrained(source.path, **extra)
            model = AutoModelForCausalLM.from_pretrained(source.path, dtype=dtype, device_map=device_map, **extra)
        except ModelStoreError as exc:
            raise ModelLoadError(str(exc)) from None
        except (OSError, ValueError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelLoadError(f"cannot load model '{name_or_path}': {first}") from None
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

        Without a template: "System: ...\\n\\nUser: ...\\n\\nAssistant: " (README, "Chat format").
        """
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=True, enable_thinking=self.think
            )
        parts = [FALLBACK_ROLE_HEADERS[m["role"]] + m["content"].strip() for m in messages]
        return "\n\n".join(parts + [FALLBACK_ROLE_HEADERS["assistant"].rstrip()]) + " "

    def encode(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Left-padded token ids [B, T] and mask [B, T]. Special tokens come from the chat template, not here."""
        enc = self.tokenizer(list(texts), return_tensors="pt", padding=True, add_special_tokens=False)
        return enc["input_ids"].to(self.device), enc["attention_mask"].to(self.device)

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

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
        return memory, kept

    # ------------------------------------------------------------------------------------------------ realign

    def _vocab_chunks(self, chunk: int = 8192):
        """Yield (W_out rows, effective input embeddings of the same token ids), both [n, d]."""
        w_out = self.model.get_output_embeddings().weight
        embed = self.model.get_input_embeddings()
        vocab = min(w_out.shape[0], embed.weight.shape[0])
        for start in range(0, vocab, chunk):
            ids = torch.arange(start, min(start + chunk, vocab), device=embed.weight.device)
            # Calling the embedding module (not reading .weight) includes scaling such as Gemma's sqrt(d).
            yield w_out[start:start + len(ids)].to(embed.weight.device), embed(ids)

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

    # --------------------------------------------------------------------------------------------- generation

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor,
        mask: torch.Tensor,
        memory: Memory | None = None,
        *,
        max_new_tokens: int = 256,
        temperature: float = 0.0,
        top_p: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> Generation:
        """Decode a left-padded batch [B, T], optionally continuing from `memory` (the judger's case).

        temperature 0 is greedy. A row stops at its first EOS (counted) or at max_new_tokens; after that its new
        positions are masked, so finished rows never influence the others.
        """
        batch = input_ids.shape[0]
        logits, memory = self._forward_logits(mask, self._own(memory), input_ids=input_ids)
        done = torch.zeros(batch, dtype=torch.bool, device=input_ids.device)
        eos = torch.tensor(self.eos_token_ids or [-1], device=input_ids.device)
        pad = self.tokenizer.pad_token_id
        tokens: list[torch.Tensor] = []
        for step in range(max_new_tokens):
            token = sample_next(logits, temperature, top_p, generator).to(input_ids.device)
            token = torch.where(done, torch.full_like(token, pad), token)
            tokens.append(token)
            done = done | torch.isin(token, eos)
            if bool(done.all()) or step == max_new_tokens - 1:
                break
            logits, memory = self._forward_logits((~done).long()[:, None], memory, input_ids=token[:, None])
        return self._finish(torch.stack(tokens, dim=1) if tokens else input_ids[:, :0], eos)

    def _finish(self, generated: torch.Tensor, eos: torch.Tensor) -> Generation:
        texts, ids, counts = [], [], []
        for row in generated.tolist():
            n = len(row)
            for i, tok in enumerate(row):
                if tok in eos.tolist():
                    n = i + 1
                    break
            ids.append(row[:n])
            counts.append(n)
            texts.append(self.tokenizer.decode(row[:n], skip_special_tokens=True))
        return Generation(texts, ids, counts)


def sample_next(logits: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator | None) -> torch.Tensor:
    """[B, V] logits -> [B] token ids: argmax for temperature 0, else nucleus sampling."""
    if temperature <= 0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits / temperature, dim=-1)
    if top_p < 1.0:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        # Keep the smallest prefix whose mass reaches top_p (the first token always stays).
        drop = sorted_probs.cumsum(dim=-1) - sorted_probs > top_p
        sorted_probs = sorted_probs.masked_fill(drop, 0.0)
        choice = torch.multinomial(sorted_probs.cpu(), 1, generator=generator).to(order.device)
        return order.gather(-1, choice).squeeze(-1)
    return torch.multinomial(probs.cpu(), 1, generator=generator).squeeze(-1).to(logits.device)


def make_generator(seed: int | None) -> torch.Generator | None:
    """A CPU generator for sampling (CPU so runs on different devices draw the same numbers)."""
    if seed is None:
        return None
    return torch.Generator().manual_seed(seed)


def library_versions() -> dict[str, str]:
    import transformers

    return {"python": sys.version.split()[0], "torch": torch.__version__, "transformers": transformers.__version__}
