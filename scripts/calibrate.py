"""Calibrate LatentMAS on a development slice: sweep latent_steps x realignment, pick the best setting.

    python scripts/calibrate.py --model_name Qwen/Qwen2.5-Coder-0.5B-Instruct --task gsm8k --data_dir ../shared/data \
        --dev_samples 20 --latent_steps 0 5 10 20 40 --realign off on --output_dir calibration/gsm8k
    python run.py --settings_file calibration/gsm8k/best_settings.json --task gsm8k --max_samples 100 [...]

The model is loaded once. The development slice is the LAST --dev_samples items of the split, because run.py
evaluates the FIRST --max_samples items: a run keeps clear of the slice as long as max_samples <= split size -
dev_samples (--test_samples M refuses a slice that would overlap the first M items; run.py notes any overlap and
records it in summary.json as calibration_overlap_items).

Every setting is one run of run.py's pipeline (experiment.run_experiment: the same batch loop, scoring, trace and
result files) on the dev slice, with the loaded model: OUT/<setting>/ is a run folder (predictions.jsonl and
summary.json, the dev slice recorded in its settings). Then:
- OUT/calibration.md: one table row per setting (accuracy, output tokens, seconds).
- OUT/calibration.png: accuracy, output tokens per item and seconds per item against latent_steps, one line per
  realignment setting, the chosen setting starred.
- OUT/best_settings.json: {"latent_steps": m, "latent_space_realign": bool, "calibration": {...}}; run.py
  --settings_file applies the two flags and ignores the "calibration" record (task, model, dev slice, the fixed
  settings of the sweep, every row's metrics).
Selection rule: highest accuracy; ties go to fewer output tokens, then fewer seconds, then the earlier setting in
sweep order (--latent_steps in the order given, and for each, --realign in the order given: by default fewer steps
and realignment off first). With latent_steps 0 realignment has nothing to act on, so "0 / on" reuses the
"0 / off" run when both are asked for. When every setting scores the same accuracy the choice rests on the
tie-breakers alone (and fewer output tokens can then mean a judger that stops early): calibrate.py warns, and the
warning goes into calibration.md and best_settings.json.

Fixed settings (topology, max_new_tokens, temperature, ...) take run.py's flags and defaults; use the ones the test
run will use. Greedy decoding (--temperature 0) makes a small slice less noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from errors import Interrupted, OneLineParser, UsageError, one_line_errors  # noqa: E402
from flags import (DEFAULT_MODEL, DefaultsHelpFormatter, add_flags, check_decoding_flags, enable_thinking,  # noqa: E402
                   single_seed, token_budget)
from flags import config as flag_config  # noqa: E402
from results import write_json  # noqa: E402

SELECTION_RULE = ("highest accuracy; ties: fewer total output tokens, then fewer seconds, then the earlier setting "
                  "in sweep order")
# Settings that must match for --resume to reuse a setting's predictions.
FIXED_KEYS = ("task", "split", "model_name", "prompt", "dev_samples", "max_new_tokens", "temperature", "top_p",
              "top_k", "seed", "realign_lambda", "think", "disable_thinking", "latent_only", "sequential_info_only", "hierarchy",
              "system_prompt", "prompt_file", "dtype")


# The flags calibrate.py shares with run.py (their names, defaults and help from flags.py); every setting's run
# gets them as given.
RUN_FLAGS = ("model_name", "task", "split", "data_dir", "prompt", "hierarchy", "realign_lambda", "max_new_tokens",
             "temperature", "top_p", "top_k", "seed", "generate_bs", "device", "dtype", "think", "disable_thinking",
             "latent_only", "sequential_info_only", "system_prompt", "prompt_file")


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(description="Sweep latent_steps x realignment for latent_mas on a development slice.",
                      formatter_class=DefaultsHelpFormatter)
    # The flags run.py has too, with its names, defaults and help (flags.py).
    add_flags(p, *RUN_FLAGS, "output_dir", "resume")
    p.add_argument("--dev_samples", type=int, default=20, help="the last N items of the split")
    p.add_argument("--test_samples", type=int, default=None,
                   help="refuse a dev slice that overlaps the first M items (the test run's --max_samples)")
    p.add_argument("--latent_steps", type=int, nargs="+", default=[0, 5, 10, 20, 40],
                   help="the latent_steps values to sweep")
    p.add_argument("--realign", nargs="+", choices=["off", "on"], default=["off", "on"],
                   help="latent_space_realign settings to sweep")
    p.add_argument("--trace", action="store_true", help="print the per-problem trace")
    return p


def validate(args: argparse.Namespace) -> None:
    if args.dev_samples < 1:
        raise UsageError(f"--dev_samples must be >= 1 (got {args.dev_samples})")
    if min(args.latent_steps) < 0:
        raise UsageError("--latent_steps values must be >= 0")
    if len(set(args.latent_steps)) != len(args.latent_steps) or len(set(args.realign)) != len(args.realign):
        raise UsageError("--latent_steps and --realign must not repeat a value")
    if args.generate_bs < 1 or (args.max_new_tokens is not None and args.max_new_tokens < 1):
        raise UsageError("--generate_bs and --max_new_tokens must be >= 1")
    check_decoding_flags(args)
    if args.resume and not args.output_dir:
        raise UsageError("--resume needs the --output_dir of the calibration to continue")


def setting_name(steps: int, realign: bool) -> str:
    return f"steps{steps}-realign_{'on' if realign else 'off'}"


def dev_slice(args: argparse.Namespace) -> tuple[list[dict], dict]:
    """The last --dev_samples items of the split and where they sit in it."""
    from data import load_task

    items = load_task(args.task, split=args.split, data_dir=args.data_dir)
    if args.dev_samples >= len(items):
        raise UsageError(f"--dev_samples {args.dev_samples} leaves no test items: {args.task} has {len(items)}")
    first = len(items) - args.dev_samples
    if args.test_samples is not None and args.test_samples > first:
        raise UsageError(f"the dev slice (items {first}-{len(items) - 1}) overlaps the first {args.test_samples} "
                         f"test items; use --dev_samples <= {len(items) - args.test_samples}")
    info = {"split": args.split, "split_size": len(items), "first_index": first, "last_index": len(items) - 1,
            "n": args.dev_samples, "ids": [item.get("id") for item in items[first:]]}
    return items[first:], info


def choose(rows: list[dict]) -> dict:
    """The selection rule (SELECTION_RULE): rows are in sweep order, min() keeps the first of equal keys."""
    return min(rows, key=lambda r: (-r["accuracy"], r["total_output_tokens"], r["seconds"]))


def table(rows: list[dict], best: dict, header: dict) -> str:
    lines = [f"# LatentMAS calibration: {header['task']} ({header['prompt']}), {header['model_name']}", "",
             f"Dev slice: the last {header['dev_slice']['n']} items of the {header['dev_slice']['split']} split "
             f"(indices {header['dev_slice']['first_index']}-{header['dev_slice']['last_index']} of "
             f"{header['dev_slice']['split_size']}). Fixed: " +
             ", ".join(f"{k}={v}" for k, v in header["fixed"].items()) + ".", "",
             f"Selection: {SELECTION_RULE}.", "",
             "| latent_steps | realign | accuracy | correct | output tokens (total) | output tokens / item | "
             "seconds | seconds / item | |",
             "|---:|:---:|---:|---:|---:|---:|---:|---:|:---|"]
    for r in rows:
        mark = "**best**" if r is best else ("same run as realign off" if r.get("shared") else "")
        lines.append(f"| {r['latent_steps']} | {'on' if r['latent_space_realign'] else 'off'} | "
                     f"{r['accuracy']:.3f} | {r['correct']}/{r['n']} | {r['total_output_tokens']} | "
                     f"{r['avg_output_tokens']:.1f} | {r['seconds']:.2f} | {r['seconds_per_item']:.3f} | {mark} |")
    lines += ["", f"Best: latent_steps={best['latent_steps']}, latent_space_realign={best['latent_space_realign']} "
                  "(best_settings.json; `python run.py --settings_file best_settings.json ...`)."]
    if header.get("warning"):
        lines += ["", f"Warning: {header['warning']}."]
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], best: dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("accuracy", "accuracy"), ("avg_output_tokens", "output tokens / item"),
              ("seconds_per_item", "seconds / item")]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for ax, (key, label) in zip(axes, panels):
        for realign, style in ((False, "o-"), (True, "s--")):
            sub = sorted((r for r in rows if r["latent_space_realign"] == realign), key=lambda r: r["latent_steps"])
            if sub:
                ax.plot([r["latent_steps"] for r in sub], [r[key] for r in sub], style,
                        label=f"realign {'on' if realign else 'off'}")
        ax.plot([best["latent_steps"]], [best[key]], "*", color="crimson", markersize=16, label="chosen")
        if key == "accuracy":
            ax.set_ylim(-0.03, 1.03)
        ax.set_xlabel("latent_steps")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.model_name = args.model_name or DEFAULT_MODEL
    single_seed(args)
    validate(args)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    from data import get_task
    from prompts import PromptBook

    task = get_task(args.task)
    PromptBook.load(args.prompt_file, args.system_prompt)  # a bad prompt file fails before the model loads
    items, dev = dev_slice(args)
    max_new_tokens = token_budget(args, task)
    fixed = {k: (max_new_tokens if k == "max_new_tokens" else getattr(args, k)) for k in FIXED_KEYS}
    model_tag = Path(args.model_name).name
    out = Path(args.output_dir or f"calibration/{args.task}-{args.prompt}-{model_tag}-"
                                  f"{datetime.now().strftime('%Y%m%d-%H%M%S')}")
    sweep_file = out / "sweep.json"
    if args.resume:
        if not sweep_file.exists():
            raise UsageError(f"--resume: {sweep_file} not found; is {out} a calibration folder?")
        old = json.loads(sweep_file.read_text()).get("fixed", {})
        diff = [k for k in FIXED_KEYS if old.get(k) != fixed.get(k)]
        if diff:
            raise UsageError(f"--resume: {out} was made with {diff[0]}={old.get(diff[0])!r} (now {fixed[diff[0]]!r})")
    elif out.exists() and any(out.iterdir()):
        raise UsageError(f"{out} is not empty; pass --resume to continue it or choose another --output_dir")

    import torch

    from experiment import run_experiment
    from models import ModelWrapper
    from provenance import library_versions

    torch.manual_seed(args.seed)
    base = ModelWrapper.from_pretrained(args.model_name, device=args.device, dtype=args.dtype,
                                        realign_lambda=args.realign_lambda, enable_thinking=enable_thinking(args))
    # One loaded model, two wrappers: realignment off (identity) and on (ridge W_a), each caching its own matrix.
    wrappers = {False: base, True: ModelWrapper(base.model, base.tokenizer, name=args.model_name, source=base.source,
                                                latent_space_realign=True, realign_lambda=args.realign_lambda,
                                                enable_thinking=enable_thinking(args))}
    out.mkdir(parents=True, exist_ok=True)
    write_json(sweep_file, {"fixed": fixed, "dev_slice": dev, "latent_steps": args.latent_steps,
                            "realign": args.realign})
    # Every setting is one run of run.py's pipeline on the dev slice, in its own folder (a run folder: summary.json
    # and predictions.jsonl as run.py writes them, resumable on its own).
    shared = {name: getattr(args, name) for name in RUN_FLAGS}
    rows: list[dict] = []
    runs: dict[tuple[int, bool], dict] = {}
    for steps in args.latent_steps:
        for realign in (r == "on" for r in args.realign):
            if steps == 0 and realign and (0, False) in runs:
                rows.append({**runs[(0, False)], "latent_space_realign": True, "shared": True})
                continue
            name = setting_name(steps, realign)
            folder = out / name
            config = flag_config(**shared, method=["latent_mas"], latent_steps=steps, latent_space_realign=realign,
                                 output_dir=str(folder), resume=(folder / "summary.json").exists(),
                                 quiet=not args.trace)
            print(f"calibrate: {name} on {len(items)} dev items", file=sys.stderr, flush=True)
            summary = run_experiment(config, command=["scripts/calibrate.py", *(argv or sys.argv[1:])],
                                     model=wrappers[realign], items=items, recorded={"dev_slice": dev})
            row = {"latent_steps": steps, "latent_space_realign": realign, "dir": name,
                   **summary["methods"]["latent_mas"]}
            runs[(steps, realign)] = row
            rows.append(row)

    best = choose(rows)
    warning = None
    if len({r["accuracy"] for r in rows}) == 1:
        # With every setting equally accurate the choice rests on the tie-breakers alone, and "fewer output tokens"
        # can then favour a judger that stops early: say so rather than pass it off as a calibration.
        warning = (f"every setting scored accuracy {rows[0]['accuracy']:.3f} on the {len(items)} dev items: the "
                   "choice rests on the tie-breakers (output tokens, seconds) only; use more --dev_samples or a "
                   "larger --max_new_tokens")
        print(f"calibrate: warning: {warning}", file=sys.stderr)
    header = {"task": args.task, "prompt": args.prompt, "model_name": args.model_name, "dev_slice": dev,
              "fixed": {k: fixed[k] for k in ("max_new_tokens", "temperature", "top_p", "seed", "realign_lambda")},
              "warning": warning}
    (out / "calibration.md").write_text(table(rows, best, header), encoding="utf-8")
    plot(rows, best, out / "calibration.png",
         f"{args.task} ({args.prompt}), {model_tag}, last {len(items)} items of {args.split}")
    metric_keys = ("accuracy", "correct", "n", "total_output_tokens", "avg_output_tokens", "seconds",
                   "seconds_per_item", "peak_kv_bytes_total", "peak_kv_bytes_per_item")
    record = {
        "task": args.task, "split": args.split, "model_name": args.model_name, "prompt": args.prompt,
        "dev_slice": dev, "fixed_settings": fixed, "selection": SELECTION_RULE, "warning": warning,
        "metrics": {k: best[k] for k in metric_keys},
        "sweep": [{"latent_steps": r["latent_steps"], "latent_space_realign": r["latent_space_realign"],
                   "dir": r["dir"], **{k: r[k] for k in metric_keys}} for r in rows],
        "model": {"origin": getattr(base.source, "origin", None), "sha256": getattr(base.source, "sha256", None),
                  "dtype": str(base.model.dtype), "device": str(base.device)},
        "versions": library_versions(), "created": datetime.now().isoformat(timespec="seconds"),
    }
    best_file = out / "best_settings.json"
    write_json(best_file, {"latent_steps": best["latent_steps"], "latent_space_realign": best["latent_space_realign"],
                           "calibration": record})
    print((out / "calibration.md").read_text(encoding="utf-8"))
    print(f"best settings: {best_file} (python run.py --settings_file {best_file} ...)", file=sys.stderr)
    return 0


def cli() -> int:
    try:
        return one_line_errors(main, "calibrate.py")
    except Interrupted as stop:  # the setting's run folder is marked; --resume continues the calibration
        return 143 if stop.terminated else 130


if __name__ == "__main__":
    sys.exit(cli())
