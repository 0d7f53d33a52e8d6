"""The guard against text tests that cannot fail (conftest.py's autouse `decode_log` fixture).

A test that compares texts proves nothing when the model writes the same text, or nothing, whatever the prompt:
the texts agree whether or not the behaviour under test holds. So every decode a test makes through
`ModelWrapper._decode` (the loop behind `generate` and `generate_embeds`, in process: the methods, the API, run.main)
is recorded, and so is every `predictions.jsonl` the test writes under its tmp_path (run.py in a subprocess). When
the test ends, the guard fails it if

- an output row is empty or whitespace only;
- one decode call got two or more different prompts and wrote the same tokens for all of them;
- the whole test got two or more different prompts and wrote the same tokens for all of them;
- a predictions.jsonl holds an agent output that is empty or whitespace only, or one method's final texts are
  the same for two or more different questions.

A test whose outputs are meant to be degenerate says so with @pytest.mark.unguarded_outputs(reason) (one does:
tests/test_faults.py, whose tmp_path holds the outputs of runs with faults in them).
Tests compare token ids where texts could agree by accident: `DecodeLog.capture()` collects the decodes of a block.
"""

from __future__ import annotations

import hashlib
import json
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator


@dataclass
class Decode:
    """One `_decode` call: per row, a fingerprint of its input, the generated token ids and text."""

    prompts: list[str]
    token_ids: list[tuple[int, ...]]
    texts: list[str]


def fingerprint(row) -> str:
    """A row's real input (token ids [T] or input embeddings [T, d], pads removed) as a short hash."""
    return hashlib.sha1(row.detach().cpu().contiguous().numpy().tobytes()).hexdigest()[:16]


class DecodeLog:
    """Every decode of one test, in order."""

    def __init__(self) -> None:
        self.decodes: list[Decode] = []

    def record(self, mask, first: dict, generation) -> None:
        inputs = first.get("input_ids")
        if inputs is None:
            inputs = first["inputs_embeds"]
        prompts = [fingerprint(inputs[r][mask[r].bool().to(inputs.device)]) for r in range(mask.shape[0])]
        self.decodes.append(Decode(prompts, [tuple(ids) for ids in generation.token_ids], list(generation.texts)))

    @contextmanager
    def capture(self) -> Iterator[list[Decode]]:
        """The decodes made inside the block: `with log.capture() as decodes: ...`."""
        start, captured = len(self.decodes), []
        yield captured
        captured.extend(self.decodes[start:])

    def problems(self) -> list[str]:
        return decode_problems(self.decodes)


def rows(decodes: list[Decode]) -> list[tuple[int, ...]]:
    """The token ids of every row of every decode, in order."""
    return [ids for d in decodes for ids in d.token_ids]


def _constant(prompts: list[str], outputs: list) -> bool:
    """Two or more different prompts, one output for all of them."""
    return len(set(prompts)) >= 2 and len(set(outputs)) == 1


def decode_problems(decodes: list[Decode]) -> list[str]:
    found = []
    for k, d in enumerate(decodes):
        for r, (text, ids) in enumerate(zip(d.texts, d.token_ids)):
            if not text.strip():
                found.append(f"decode {k} row {r}: empty or whitespace-only output {text!r} (token ids {list(ids)})")
        if _constant(d.prompts, d.token_ids):
            found.append(f"decode {k}: the same output {d.texts[0]!r} for {len(set(d.prompts))} different prompts")
    prompts = [p for d in decodes for p in d.prompts]
    if _constant(prompts, rows(decodes)) and len(decodes) > 1:
        found.append(f"all {len(decodes)} decodes: the same output {decodes[0].texts[0]!r} for "
                     f"{len(set(prompts))} different prompts")
    return found


def predictions_problems(path: Path) -> list[str]:
    """The guard's checks on a run's predictions.jsonl (run.py's result file)."""
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a torn last line of a killed run
    # Records a model wrote; a test's hand-made record files (merging, resuming: no question, no text) say nothing.
    records = [r for r in records if isinstance(r, dict) and {"method", "question", "final_text"} <= set(r)]
    found = []
    for r in records:
        for a in r.get("agents", []):
            if a.get("output_tokens", 0) > 0 and not a["output"].strip():
                found.append(f"{r['method']} item {r['index']} {a['role']}: empty or whitespace-only "
                             f"output {a['output']!r}")
    for method in sorted({r["method"] for r in records}):
        mine = [r for r in records if r["method"] == method]
        if _constant([r["question"] for r in mine], [r["final_text"] for r in mine]):
            found.append(f"{method}: the same final text {mine[0]['final_text']!r} for "
                         f"{len({r['question'] for r in mine})} different questions")
    return found


def tree_problems(folder: Path) -> list[str]:
    """predictions_problems of every predictions.jsonl under `folder`."""
    return [f"{p.relative_to(folder)}: {problem}" for p in sorted(folder.rglob("predictions.jsonl"))
            for problem in predictions_problems(p)]
