"""Data parallelism on the standard launchers: one model replica per process, items sharded deterministically.

    torchrun --standalone --nproc_per_node 8 run.py <flags>          # one node, 8 GPUs (or CPU processes)
    torchrun --nnodes 2 --nproc_per_node 8 --rdzv_backend c10d --rdzv_endpoint HOST:29500 run.py <flags>
    accelerate launch --num_processes 8 run.py <flags>

The launcher sets RANK, WORLD_SIZE and LOCAL_RANK; run.py reads them here and a plain `python run.py` (no such
variables) runs as one process, exactly as before. How a launched run works:

- Every rank loads the same items and its own model replica (cuda:LOCAL_RANK, else CPU).
- The items still to do in the (seed, method) phases are dealt round-robin: rank r of W takes the r-th, (r+W)-th,
  ... of them, so every rank gets the same number of items give or take one. Outputs do not depend on batch
  composition (exact batching, per-item random streams), so sharding changes no result.
- Each rank appends its records to predictions.rank{r}.jsonl, flushed and fsynced per batch. At the end rank 0
  gathers them (over torch.distributed, so the ranks need no shared disk) and writes one predictions.jsonl in
  (seed, method, item) order; the shard files are then removed (results.ResultFiles: the files; this module: the
  process group and the split of the items).
- --resume: every rank reports the (method, seed, index) keys it holds on disk, the union is what is done, and
  only the rest is dealt out: no item is lost or repeated, whatever world size the earlier run had.
- Progress: one bar on rank 0, fed by a counter in the launcher's key-value store (no lock-step between ranks).

The process group uses gloo on CPU and GPU alike: the ranks exchange only a few keys and records (no tensors), and
gloo needs no GPU memory and no NCCL watchdog. Its timeout is long, since a rank that finishes its shard early
waits for the others (an AIME shard can take hours).
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from datetime import timedelta

from errors import DistributedError

# A rank may wait at the final barrier while the slowest rank finishes its shard.
GROUP_TIMEOUT = timedelta(days=7)
PROGRESS_KEY = "latentmas/items_done"


@dataclass(frozen=True)
class DistContext:
    """Where this process sits in the launch: rank of world_size, and its GPU index on its machine."""
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def context_from_env(environ: dict | None = None) -> DistContext:
    """The launch as torchrun and accelerate describe it (RANK, WORLD_SIZE, LOCAL_RANK); one process without them."""
    env = os.environ if environ is None else environ
    if "WORLD_SIZE" not in env and "RANK" not in env:
        return DistContext()
    try:
        world = int(env.get("WORLD_SIZE", "1"))
        rank = int(env.get("RANK", "0"))
        local = int(env.get("LOCAL_RANK", str(rank)))
    except ValueError:
        raise DistributedError(f"RANK/WORLD_SIZE/LOCAL_RANK must be integers (got RANK={env.get('RANK')!r}, "
                               f"WORLD_SIZE={env.get('WORLD_SIZE')!r}, LOCAL_RANK={env.get('LOCAL_RANK')!r})") from None
    if world < 1 or not 0 <= rank < world or local < 0:
        raise DistributedError(f"inconsistent launch: RANK={rank}, WORLD_SIZE={world}, LOCAL_RANK={local}")
    return DistContext(rank, world, local)


def pick_device(requested: str | None, ctx: DistContext, cuda_available: bool) -> str | None:
    """One replica per process: the launched process's own GPU (cuda:LOCAL_RANK) when --device is unset or 'cuda'
    (else CPU); an explicit cpu or cuda:N is kept. One process: --device as given."""
    if not ctx.distributed:
        return requested
    if requested in (None, "cuda"):
        if cuda_available:
            return f"cuda:{ctx.local_rank}"
        if requested == "cuda":
            raise DistributedError("--device cuda was asked for but torch sees no CUDA GPU")
        return "cpu"
    return requested


def init_group(ctx: DistContext, device: str | None) -> None:
    """Join the launch's process group (gloo, see the module docstring); a no-op for one process."""
    if not ctx.distributed:
        return
    import torch
    import torch.distributed as dist

    if device and device.startswith("cuda:"):
        torch.cuda.set_device(int(device.split(":")[1]))
    if not dist.is_initialized():
        dist.init_process_group("gloo", timeout=GROUP_TIMEOUT)
    # torchrun stops the other workers with SIGTERM when one fails: run.py's cli handles it like Ctrl-C.


def close_group(ctx: DistContext) -> None:
    if ctx.distributed:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def barrier(ctx: DistContext) -> None:
    if ctx.distributed:
        import torch.distributed as dist

        dist.barrier()


def all_gather(ctx: DistContext, value: object) -> list:
    """Every rank's value, in rank order (pickled; for small control data and records)."""
    if not ctx.distributed:
        return [value]
    import torch.distributed as dist

    out: list = [None] * ctx.world_size
    dist.all_gather_object(out, value)
    return out


def gather_to_main(ctx: DistContext, value: object) -> list | None:
    """Every rank's value on rank 0 (rank order); None on the other ranks."""
    if not ctx.distributed:
        return [value]
    import torch.distributed as dist

    out: list | None = [None] * ctx.world_size if ctx.main else None
    dist.gather_object(value, out, dst=0)
    return out


def broadcast(ctx: DistContext, value: object) -> object:
    """Rank 0's value on every rank."""
    if not ctx.distributed:
        return value
    import torch.distributed as dist

    box = [value if ctx.main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def agree(ctx: DistContext, error: str | None) -> None:
    """Raise DistributedError on every rank when any rank has an error (the first one), so no rank waits forever
    in a collective that another rank will never reach."""
    errors = [e for e in all_gather(ctx, error) if e]
    if errors:
        raise DistributedError(errors[0])


# ------------------------------------------------------------------------------------------------------- sharding


def shard(todo: list[list[int]], ctx: DistContext) -> list[list[int]]:
    """This rank's share of each phase's item indices still to do. The phases' items are dealt as one sequence,
    round-robin: rank r of W takes the r-th, (r+W)-th, ... item of it, so every rank gets the same number of
    items give or take one over the whole run (dealing each phase from rank 0 would give rank 0 the odd item of
    every phase)."""
    shares, position = [], 0
    for phase in todo:
        shares.append([i for k, i in enumerate(phase) if (position + k) % ctx.world_size == ctx.rank])
        position += len(phase)
    return shares



# ------------------------------------------------------------------------------------------------------- progress


class GlobalProgress:
    """One bar for the whole launch, on rank 0. Every rank adds its finished items to a counter in the launcher's
    key-value store after each batch; a thread on rank 0 reads it twice a second. No rank ever waits for another."""

    def __init__(self, ctx: DistContext, total: int, initial: int, desc: str) -> None:
        from tqdm import tqdm

        self.ctx = ctx
        self.store = _default_store()
        self.pending = 0  # rank 0: finished items not yet added to the store (only its thread touches the store)
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.bar = None
        barrier(ctx)  # nobody counts before rank 0 has read the counter's starting value
        self.base = self.store.add(PROGRESS_KEY, 0) if self.store is not None and ctx.main else 0
        barrier(ctx)
        if ctx.main:
            self.own = self.shown = 0
            self.bar = tqdm(total=total, initial=initial, desc=desc, unit="item", dynamic_ncols=True)
            self.thread = threading.Thread(target=self._poll, daemon=True)
            self.thread.start()

    def advance(self, n: int) -> None:
        """This rank finished n more items."""
        if self.ctx.main:
            with self.lock:
                self.pending += n
                self.own += n
        elif self.store is not None:
            self.store.add(PROGRESS_KEY, n)

    def _counted(self) -> int:
        with self.lock:
            pending, self.pending = self.pending, 0
        if self.store is None:  # no store to share: rank 0's own items only
            return self.own
        return self.store.add(PROGRESS_KEY, pending) - self.base

    def _poll(self) -> None:
        while not self.stop.wait(0.5):
            self._refresh()

    def _refresh(self) -> None:
        done = self._counted()
        if done > self.shown:
            self.bar.update(done - self.shown)
            self.shown = done

    def close(self) -> None:
        """After this rank's last batch; waits for every rank, so the bar ends on the full count."""
        barrier(self.ctx)
        if self.bar is None:
            return
        self.stop.set()
        self.thread.join()
        self._refresh()
        self.bar.close()


def _default_store():
    """The key-value store of the process group (torchrun's); None if this torch does not expose it."""
    try:
        from torch.distributed.distributed_c10d import _get_default_store

        return _get_default_store()
    except Exception:  # a private helper: fall back to a bar of rank 0's own items
        return None
