"""Latent working memory: a KV cache with its mask and per-row positions, and the operations agents hand it over
with (share, trim, select rows, join). Shapes: B = batch rows, L = positions held, H_kv = KV heads, D = head size.

A cache layer never writes into its tensors, it replaces them (DynamicLayer.update concatenates into new ones), so
memories can share tensors: extending one never changes another.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from transformers import DynamicCache


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

    def usage(self) -> dict:
        """KV accounting: allocated bytes, rows, allocated length and real positions per row."""
        return {"bytes": self.nbytes(), "rows": self.batch_size, "length": self.length,
                "row_positions": self.row_lengths().tolist()}


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
    """A DynamicCache holding these tensors themselves, not copies. Sharing is safe: a cache layer never writes into
    its tensors, it replaces them (DynamicLayer.update concatenates into new ones), so extending one cache never
    changes another that shares its tensors."""
    cache = DynamicCache(config=config)
    for layer, (key, value) in zip(cache.layers, kv):
        layer.lazy_initialization(key, value)
        layer.keys, layer.values = key, value
    return cache


def copy_memory(memory: Memory, config) -> Memory:
    """A memory whose cache object can be extended without touching `memory`; the tensors are shared, not copied
    (see _make_cache)."""
    return Memory(_make_cache(_layer_tensors(memory.cache), config), memory.mask, memory.next_pos)


def keep_last(memory: Memory, k: int, config) -> Memory | None:
    """Keep only the last k positions of every row (the reference's latent_only / sequential_info_only ablations).

    Kept keys keep the positions they were rotated with, and next_pos is unchanged, so relative distances between
    the kept memory and what follows stay as they were. The kept positions are copied out, so the dropped ones are
    freed (a view would keep the whole tensor alive).
    """
    if k <= 0:
        return None
    k = min(k, memory.length)
    kv = [(key[:, :, -k:, :].clone(), value[:, :, -k:, :].clone()) for key, value in _layer_tensors(memory.cache)]
    return Memory(_make_cache(kv, config), memory.mask[:, -k:], memory.next_pos)


def select_rows(memory: Memory, rows: torch.Tensor | Sequence[int], config) -> Memory:
    """The memory of a subset of rows, in the given order. A run of consecutive rows (one agent's part of a batched
    stage) is a view of the same tensors, not a copy; other selections (rows leaving a decode batch) are copied."""
    if isinstance(rows, range) and rows.step == 1:
        part = slice(rows.start, rows.stop)
        kv = [(key[part], value[part]) for key, value in _layer_tensors(memory.cache)]
        return Memory(_make_cache(kv, config), memory.mask[part], memory.next_pos[part])
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


