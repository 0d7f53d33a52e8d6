"""A run's result files, in one place: summary.json and predictions.jsonl written atomically and durably, read back,
checked before a resume, and (for a launched run) the per-rank shard files and their merge.

    OUT/summary.json             the settings, status and per-method metrics (rewritten whole, atomically)
    OUT/predictions.jsonl        one record per (method, seed, item), appended per batch (flushed and fsynced)
    OUT/predictions.rank{r}.jsonl  a launched run's rank r appends here; merged into predictions.jsonl at the end

Every write that replaces a file goes through a temporary file, fsync and rename, so a kill leaves the old file or
the new one, never half of one; appends are fsynced per batch, so a kill loses at most the batch in flight, and a
torn last line is cut off when the file is read again. distributed.py keeps only the process group and the split
of the items over the ranks; the collectives ResultFiles needs come from there.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Iterable

from errors import UsageError

SUMMARY_NAME = "summary.json"
MERGED_NAME = "predictions.jsonl"
SHARD_PATTERN = re.compile(r"predictions\.rank(\d+)\.jsonl")

RecordKey = tuple[str, int, int]  # (method, seed, index)


# ------------------------------------------------------------------------------------------------ writing, reading

def _replace(path: Path, text: str) -> None:
    """Replace path with text atomically and durably: a temporary file beside it, fsync, rename."""
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)


def write_json(path: Path, data: dict) -> None:
    """Write a JSON file (a summary, a settings file) atomically: a kill never leaves half of one."""
    _replace(path, json.dumps(data, indent=2, ensure_ascii=False, default=str))


def _lines(records: Iterable[dict]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


def write_records(path: Path, records: list[dict]) -> None:
    """Replace a predictions file with these records, atomically."""
    _replace(path, _lines(records))


def append_records(path: Path, records: list[dict]) -> None:
    """Append one batch's records, flushed and fsynced before returning (what is on disk survives a kill)."""
    with path.open("a", encoding="utf-8") as f:
        f.write(_lines(records))
        f.flush()
        os.fsync(f.fileno())


def read_predictions(path: Path) -> list[dict]:
    """Lines already written; a torn last line (a run killed mid-write) is dropped from the file."""
    if not path.exists():
        return []
    records, good_bytes = [], 0
    with path.open("rb") as f:
        for raw in f:
            try:
                records.append(json.loads(raw))
            except json.JSONDecodeError:
                break
            good_bytes += len(raw)
    if good_bytes != path.stat().st_size:
        with path.open("r+b") as f:
            f.truncate(good_bytes)
    return records


def read_records(paths: Iterable[Path]) -> list[dict]:
    return [r for p in paths for r in read_predictions(p)]


# ----------------------------------------------------------------------------------------------- before a run

def check_resume(out_dir: Path, settings: dict) -> None:
    """--resume continues a folder only when its recorded result-changing settings equal this run's."""
    from flags import differing_setting

    summary = out_dir / SUMMARY_NAME
    if not summary.exists():
        raise UsageError(f"--resume: {summary} not found; is {out_dir} the output folder of an earlier run?")
    try:
        old = json.loads(summary.read_text())["settings"]
    except (json.JSONDecodeError, KeyError):
        raise UsageError(f"--resume: {summary} is not a summary written by run.py") from None
    if diff := differing_setting(old, settings):
        raise UsageError(f"--resume: {out_dir} was made with other settings ({diff}); "
                         "use the same flags or a new --output_dir")


def check_existing_results(out_dir: Path, settings: dict, resume: bool) -> None:
    """--resume needs an earlier run's folder with the same settings; a fresh run must not mix into old results."""
    predictions = out_dir / MERGED_NAME
    if resume:
        check_resume(out_dir, settings)
    elif (predictions.exists() and predictions.stat().st_size) or shard_files(out_dir):
        raise UsageError(f"{out_dir} already holds results; pass --resume to continue it or choose another "
                         "--output_dir")


# ----------------------------------------------------------------------------------------- records and shards

def record_key(record: dict, default_seed: int) -> RecordKey:
    """(method, seed, index); records written before --seed took several values carry no seed: the run's one."""
    return record["method"], int(record.get("seed", default_seed)), int(record["index"])


def merge_records(records: Iterable[dict], methods: list[str], seeds: list[int], default_seed: int) -> list[dict]:
    """One record per (method, seed, index) (the first seen), in the run's order: seed, then method (as listed on
    the command line), then item index. Records of other methods or seeds (an earlier run's) come last."""
    unique: dict[RecordKey, dict] = {}
    for r in records:
        unique.setdefault(record_key(r, default_seed), r)

    def order(key: RecordKey) -> tuple:
        method, seed, index = key
        return (seeds.index(seed) if seed in seeds else len(seeds), seed,
                methods.index(method) if method in methods else len(methods), method, index)

    return [unique[k] for k in sorted(unique, key=order)]


def shard_path(out_dir: Path, rank: int) -> Path:
    return out_dir / f"predictions.rank{rank}.jsonl"


def shard_files(out_dir: Path) -> dict[int, Path]:
    """The per-rank files in out_dir, by rank."""
    if not out_dir.is_dir():
        return {}
    found = {}
    for path in out_dir.iterdir():
        match = SHARD_PATTERN.fullmatch(path.name)
        if match:
            found[int(match.group(1))] = path
    return dict(sorted(found.items()))


def owned_files(out_dir: Path, rank: int, world_size: int) -> list[Path]:
    """The files a rank reads at a resume and hands to rank 0 at the end: its own shard file, and shard files of
    ranks beyond this world size (left by an earlier, larger launch); rank 0 also takes the merged file. Every
    rank sees only its own machine's disk, so nothing is assumed shared."""
    files = [out_dir / MERGED_NAME] if rank == 0 else []
    files.append(shard_path(out_dir, rank))
    files += [p for r, p in shard_files(out_dir).items() if r >= world_size]
    return [p for p in files if p.exists()]


def consolidate(out_dir: Path, methods: list[str], seeds: list[int], default_seed: int) -> list[dict]:
    """One process resuming a launched run: fold every shard file into predictions.jsonl (merged, in order) and
    remove them, so the run continues on the one file a plain run appends to. Returns the records."""
    shards = list(shard_files(out_dir).values())
    merged_path = out_dir / MERGED_NAME
    if not shards:
        return read_records([merged_path])
    records = merge_records(read_records([merged_path, *shards]), methods, seeds, default_seed)
    write_records(merged_path, records)
    for p in shards:
        p.unlink(missing_ok=True)
    return records


class ResultFiles:
    """A run's records on disk, for one process or a launched run: what is already done at the start, where this
    process appends, and (launched) the merge into one predictions.jsonl at the end."""

    def __init__(self, ctx, out_dir: Path, methods: list[str], seeds: list[int]) -> None:
        """ctx: distributed.DistContext (rank, world size)."""
        from distributed import all_gather

        self.ctx, self.methods, self.seeds = ctx, methods, seeds
        self.summary_path = out_dir / SUMMARY_NAME
        self.merged_path = out_dir / MERGED_NAME
        self.items_per_rank: list[int] | None = None
        if ctx.distributed:
            # Every rank reads the files it owns; the union of their keys is what is done.
            self.owned = owned_files(out_dir, ctx.rank, ctx.world_size)
            self.previous = read_records(self.owned)
            self.done = set().union(*all_gather(ctx, {self.key(r) for r in self.previous}))
            self.write_path = shard_path(out_dir, ctx.rank)
        else:
            # One process continues on predictions.jsonl, an earlier launch's shard files folded into it first.
            self.owned = []
            self.previous = consolidate(out_dir, methods, seeds, seeds[0])
            self.done = {self.key(r) for r in self.previous}
            self.write_path = self.merged_path

    def key(self, record: dict) -> RecordKey:
        return record_key(record, self.seeds[0])

    def todo(self, method: str, seed: int, n_items: int) -> list[int]:
        """Item indices of a (method, seed) phase not yet done, in order (before sharding)."""
        return [i for i in range(n_items) if (method, seed, i) not in self.done]

    def write_summary(self, summary: dict) -> None:
        """summary.json, written by rank 0 only (the other ranks may be on machines without the folder)."""
        if self.ctx.main:
            write_json(self.summary_path, summary)

    def finish(self, written: int) -> list[dict] | None:
        """A launched run, once this rank has run its last batch: rank 0 gathers every rank's records (over the
        process group: no shared disk needed), writes them merged and in order to predictions.jsonl and returns
        them; then every rank removes the shard files it owned. `written`: records this rank added in this launch
        (kept per rank in items_per_rank). Other ranks return None; one process returns None and does nothing."""
        from distributed import barrier, gather_to_main

        if not self.ctx.distributed:
            return None
        mine = set(self.owned) | {self.write_path}
        parts = gather_to_main(self.ctx, (read_records(p for p in mine if p.exists()), written))
        merged = None
        if self.ctx.main:
            merged = merge_records((r for records, _ in parts for r in records), self.methods, self.seeds,
                                   self.seeds[0])
            write_records(self.merged_path, merged)
            self.items_per_rank = [n for _, n in parts]
        barrier(self.ctx)  # the merged file is written: the shard files can go
        for path in mine - {self.merged_path}:
            path.unlink(missing_ok=True)
        return merged
