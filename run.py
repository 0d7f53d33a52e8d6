"""LatentMAS research CLI: python run.py --method latent_mas --task gsm8k [...] (see README.md, "Flags")."""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import re
import sys
import time
from dataclasses import replace
from datetime import datetime
from pathlib import Path

from errors import OneLineParser, UsageError, one_line_errors
from flags import (DEFAULT_MODEL, FLAGS, PAPER_MODELS, VLLM_FLAGS, DefaultsHelpFormatter, add_flags,
                   check_decoding_flags, enable_thinking)
from utils import ANSWER_RULES

# Settings that change results: a --resume must match them exactly.
RESULT_KEYS = ("task", "split", "model_name", "prompt", "max_new_tokens", "latent_steps", "temperature", "top_p",
               "top_k", "seed", "think", "disable_thinking", "latent_space_realign", "realign_lambda", "latent_only",
               "sequential_info_only", "hierarchy", "text_mas_context_length", "system_prompt", "prompt_file_sha256",
               "dtype", "use_vllm", "score_whole_text")


def build_parser() -> argparse.ArgumentParser:
    """run.py's flags (declared in flags.py, which the scripts share)."""
    p = OneLineParser(description="Run baseline, text_mas and/or latent_mas on a benchmark.",
                      formatter_class=DefaultsHelpFormatter)
    add_flags(p, *FLAGS)
    add_flags(p.add_argument_group("vLLM (optional; pip install -r requirements-vllm.txt)"), *VLLM_FLAGS)
    return p


# ------------------------------------------------------------------------------------------------ settings file
SETTINGS_RECORD_KEY = "calibration"  # a settings file's informational block (scripts/calibrate.py); never applied


def explicit_flags(argv: list[str] | None) -> set[str]:
    """The dests given on the command line (parsed again with every default suppressed)."""
    parser = build_parser()
    for action in parser._actions:
        action.default = argparse.SUPPRESS
    return set(vars(parser.parse_args(argv)))


# Keys run.py records in summary.json's settings that are not flags (replaying a summary skips them quietly), and
# recorded flags a replay must not take over: the old run's folder and the settings file it was itself given
# (whose values are already among the recorded ones).
RECORDED_NOT_FLAGS = ("prompt_file_sha256", "answer_kind", "answer_rule", "model", "versions", "kv_estimate", "vllm",
                      "calibration_overlap_items", "settings_file_applied", "settings_file_overridden", "sampling")
NOT_REPLAYED = ("output_dir", "settings_file")


def is_run_summary(raw: object) -> bool:
    """A summary.json written by run.py (its flags are under "settings"), rather than a flag -> value object."""
    return isinstance(raw, dict) and isinstance(raw.get("settings"), dict) and isinstance(raw.get("methods"), dict)


def read_settings_file(path: str) -> dict:
    """{dest: typed value} of a settings file, each value checked by the flag's own parser (type, choices).

    A run's summary.json is accepted too: its "settings" are replayed, except NOT_REPLAYED and the flags left at a
    None default; keys that are not flags are skipped (a note names any run.py did not write itself, e.g. a flag
    renamed since)."""
    from prompts import read_json_file

    raw = read_json_file(path, "--settings_file", UsageError)
    summary = is_run_summary(raw)
    if summary:
        raw = {k: v for k, v in raw["settings"].items() if k not in NOT_REPLAYED}
    if not isinstance(raw, dict):
        raise UsageError(f"--settings_file {path}: expected a JSON object of flag name -> value, or a run's "
                         "summary.json")
    parser = build_parser()
    actions = {a.dest: a for a in parser._actions if a.option_strings and a.dest not in ("help", "settings_file")}
    values, unknown = {}, []
    for key, value in raw.items():
        if key == SETTINGS_RECORD_KEY:
            continue
        action = actions.get(key)
        if summary and (action is None or (value is None and action.default is None)):
            if action is None and key not in RECORDED_NOT_FLAGS:
                unknown.append(key)
            continue
        if action is None:
            raise UsageError(f"--settings_file {path}: '{key}' is not a run.py flag")
        if action.nargs == 0:  # store_true
            if not isinstance(value, bool):
                raise UsageError(f"--settings_file {path}: '{key}' must be true or false (got {value!r})")
            values[key] = value
            continue
        many = action.nargs in ("+", "*")
        if many and isinstance(value, (int, float, str)) and not isinstance(value, bool):
            value = [value]  # "seed": 1 reads as [1] (files written before --seed took several values)
        if isinstance(value, (dict, bool)) or value is None or isinstance(value, list) != many:
            raise UsageError(f"--settings_file {path}: '{key}' must be {'a list' if many else 'a single value'} "
                             f"(got {value!r})")
        try:
            parsed = parser.parse_args([action.option_strings[0], *map(str, value if many else [value])])
        except UsageError as exc:
            raise UsageError(f"--settings_file {path}: {exc}") from None
        values[key] = getattr(parsed, key)
    if unknown:
        print(f"note: {path}: not run.py flags (now), not replayed: {', '.join(unknown)}", file=sys.stderr)
    return values


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command line, with --settings_file values taking the place of defaults (explicit flags win). The applied
    values and the keys overridden on the command line are kept in the namespace (and so in summary.json)."""
    args = build_parser().parse_args(argv)
    if args.settings_file:
        values = read_settings_file(args.settings_file)
        explicit = explicit_flags(argv)
        args.settings_file_applied = {k: v for k, v in values.items() if k not in explicit}
        args.settings_file_overridden = sorted(k for k in values if k in explicit)
        for key, value in args.settings_file_applied.items():
            setattr(args, key, value)
    return args


def settings_file_record(path: str | None) -> dict:
    """The informational block of a settings file (scripts/calibrate.py's "calibration"), or {}."""
    if not path:
        return {}
    record = json.loads(Path(path).read_text(encoding="utf-8")).get(SETTINGS_RECORD_KEY)
    return record if isinstance(record, dict) else {}


def calibration_overlap(args: argparse.Namespace, n_items: int) -> int:
    """How many of this run's items (the first n_items of the split) were in the settings file's dev slice."""
    record = settings_file_record(args.settings_file)
    dev = record.get("dev_slice") or {}
    if record.get("task") != args.task or record.get("split", "test") != args.split or "first_index" not in dev:
        return 0
    return max(0, min(n_items, int(dev.get("last_index", n_items - 1)) + 1) - int(dev["first_index"]))


# --------------------------------------------------------------------------------------------------- KV budget
_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024 ** 2, "g": 1024 ** 3, "t": 1024 ** 4, "kib": 1024, "mib": 1024 ** 2,
          "gib": 1024 ** 3, "tib": 1024 ** 4, "kb": 1000, "mb": 1000 ** 2, "gb": 1000 ** 3, "tb": 1000 ** 4}


def parse_size(text: str) -> int:
    """'1500000', '512MiB', '20GB', '1.5G' (K/M/G/T alone are binary) -> bytes."""
    import re

    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(text))
    unit = match.group(2).lower() if match else None
    if unit not in _UNITS:
        raise UsageError(f"--max_kv_bytes: cannot read size {text!r} (examples: 1500000, 512MiB, 20GB, 1.5G)")
    return int(float(match.group(1)) * _UNITS[unit])


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    return f"{n:.2f} TiB"


def check_kv_budget(args: argparse.Namespace, method: str, estimate: dict) -> None:
    """One-line refusal when the estimated peak KV cache exceeds --max_kv_bytes or --max_kv_tokens."""
    over = []
    if args.max_kv_bytes is not None and estimate["bytes_total"] > parse_size(args.max_kv_bytes):
        over.append(f"--max_kv_bytes {args.max_kv_bytes}")
    if args.max_kv_tokens is not None and estimate["tokens_total"] > args.max_kv_tokens:
        over.append(f"--max_kv_tokens {args.max_kv_tokens}")
    if over:
        raise UsageError(
            f"{method} would need an estimated peak KV cache of {human_bytes(estimate['bytes_total'])} "
            f"({estimate['bytes_total']:,} bytes = {estimate['tokens_total']:,} positions x "
            f"{estimate['bytes_per_position']:,} bytes; largest single item {human_bytes(estimate['bytes_per_item'])}),"
            f" over {' and '.join(over)}; lower --generate_bs, --latent_steps or --max_new_tokens")


DEVICE_PATTERN = re.compile(r"cpu|cuda(:\d+)?|mps")


def validate(args: argparse.Namespace) -> None:
    """Checks that need no model: fail in a second, not after a load."""
    if args.latent_steps < 0:
        raise UsageError(f"--latent_steps must be >= 0 (got {args.latent_steps})")
    for flag, device in (("--device", args.device), ("--device2", args.device2)):
        if device is not None and not DEVICE_PATTERN.fullmatch(device):
            raise UsageError(f"{flag} {device!r}: expected cpu, cuda, cuda:N or mps")
    if args.text_mas_context_length < -1:
        raise UsageError(f"--text_mas_context_length must be -1 (all) or >= 0 (got {args.text_mas_context_length})")
    if args.decode_latents < 0:
        raise UsageError(f"--decode_latents must be >= 0 (got {args.decode_latents})")
    if args.max_kv_bytes is not None and parse_size(args.max_kv_bytes) <= 0:
        raise UsageError(f"--max_kv_bytes must be positive (got {args.max_kv_bytes})")
    if args.max_kv_tokens is not None and args.max_kv_tokens <= 0:
        raise UsageError(f"--max_kv_tokens must be positive (got {args.max_kv_tokens})")
    if args.max_samples == 0 or args.max_samples < -1:
        raise UsageError(f"--max_samples must be a positive number or -1 for all (got {args.max_samples})")
    if args.generate_bs < 1:
        raise UsageError(f"--generate_bs must be >= 1 (got {args.generate_bs})")
    if args.max_new_tokens is not None and args.max_new_tokens < 1:
        raise UsageError(f"--max_new_tokens must be >= 1 (got {args.max_new_tokens})")
    check_decoding_flags(args)
    if not math.isfinite(args.realign_lambda):  # argparse's float() accepts "nan" and "inf"
        raise UsageError(f"--realign_lambda must be a finite number (got {args.realign_lambda})")
    if args.hierarchy == "parallel" and args.prompt != "hierarchical":
        raise UsageError("--hierarchy parallel applies to --prompt hierarchical only")
    if args.realign_lambda < 0:
        raise UsageError("--realign_lambda must be >= 0")
    if args.resume and not args.output_dir:
        raise UsageError("--resume needs the --output_dir of the run to continue")
    if len(set(args.method)) != len(args.method):
        raise UsageError("--method lists a method twice")
    if len(set(args.seed)) != len(args.seed):
        raise UsageError("--seed lists a seed twice")
    if args.use_vllm:
        if args.tensor_parallel_size < 1:
            raise UsageError(f"--tensor_parallel_size must be >= 1 (got {args.tensor_parallel_size})")
        if not 0 < args.gpu_memory_utilization <= 1:
            raise UsageError(f"--gpu_memory_utilization must be in (0, 1] (got {args.gpu_memory_utilization})")
        import importlib.util
        if importlib.util.find_spec("vllm") is None:  # vllm_backend.INSTALL_HINT (not imported here: no torch yet)
            raise UsageError("--use_vllm needs vLLM: pip install -r requirements-vllm.txt (CUDA GPU required)")
        import torch
        if not torch.cuda.is_available():
            raise UsageError("--use_vllm needs a CUDA GPU, and torch sees none; run without --use_vllm (HF backend)")
    if args.use_second_HF_model and not args.use_vllm:
        raise UsageError("--use_second_HF_model only applies with --use_vllm")


def run_settings(args: argparse.Namespace, task) -> dict:
    settings = {k: v for k, v in vars(args).items() if k not in ("resume", "quiet")}
    settings["max_new_tokens"] = args.max_new_tokens or task.max_new_tokens
    settings["prompt_file_sha256"] = (
        hashlib.sha256(Path(args.prompt_file).read_bytes()).hexdigest() if args.prompt_file else None)
    settings["answer_kind"] = task.answer_kind
    settings["answer_rule"] = ANSWER_RULES[args.score_whole_text]
    # One seed is stored as a number, as before --seed took several values (so --resume and readers of older
    # summaries see the same thing); several as a list.
    settings["seed"] = args.seed[0] if len(args.seed) == 1 else list(args.seed)
    return settings


def differing_setting(old: dict, new: dict) -> str | None:
    """The first result-changing setting (RESULT_KEYS) two runs' settings disagree on, as "key=old, now new"."""
    key = next((k for k in RESULT_KEYS if old.get(k) != new.get(k)), None)
    return None if key is None else f"{key}={old.get(key)!r}, now {new.get(key)!r}"


def check_resume(out_dir: Path, settings: dict) -> None:
    summary = out_dir / "summary.json"
    if not summary.exists():
        raise UsageError(f"--resume: {summary} not found; is {out_dir} the output folder of an earlier run?")
    try:
        old = json.loads(summary.read_text())["settings"]
    except (json.JSONDecodeError, KeyError):
        raise UsageError(f"--resume: {summary} is not a summary written by run.py") from None
    if diff := differing_setting(old, settings):
        raise UsageError(f"--resume: {out_dir} was made with other settings ({diff}); "
                         "use the same flags or a new --output_dir")


def check_output_dir(out_dir: Path) -> None:
    """The output folder can be created and written, checked before any model loads: an existing file, a file on
    the way, or a folder without write permission is one line, not a traceback after the load."""
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"--output_dir {out_dir} is a file, not a folder; choose a folder for the results")
    existing = out_dir
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise UsageError(f"--output_dir {out_dir}: {existing} is a file, so the folder cannot be created there")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"--output_dir {out_dir}: no permission to write in {existing}")


def latent_steps_warning(args: argparse.Namespace) -> str | None:
    """latent_mas with --latent_steps 0 (the default) has no latent thought at all: say so, once, on stderr."""
    if "latent_mas" not in args.method or args.latent_steps:
        return None
    return ("warning: latent_mas with --latent_steps 0: the agents before the judger only prefill their prompts "
            "into the shared memory, with no latent thought; the paper searched --latent_steps 0, 10, 20, 40, 80")


def default_output_dir(args: argparse.Namespace) -> Path:
    model = Path(args.model_name).name.replace("/", "_")
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("outputs") / f"{args.task}-{args.prompt}-{'+'.join(args.method)}-{model}-{stamp}"


def load_vllm(args: argparse.Namespace, settings: dict):
    """--use_vllm: (HF wrapper, VLLMEngine). vLLM is started first, so it finds the GPU memory it is told to take.
    The HF weights are loaded only for latent_mas (its latent rollout), on --device2 with --use_second_HF_model,
    else on --device (default cuda:0, beside vLLM: lower --gpu_memory_utilization to leave room for them).
    For baseline/text_mas alone the wrapper has no weights (tokenizer, template and config only)."""
    from models import ModelWrapper
    from vllm_backend import VLLMEngine, vllm_dtype

    latent = "latent_mas" in args.method
    wrapper_kwargs = dict(latent_space_realign=args.latent_space_realign, realign_lambda=args.realign_lambda,
                          enable_thinking=enable_thinking(args))
    skeleton = ModelWrapper.without_weights(args.model_name, dtype=vllm_dtype(args.dtype), **wrapper_kwargs)
    engine = VLLMEngine(skeleton.source.path, skeleton.tokenizer, skeleton.eos_token_ids,
                        tensor_parallel_size=args.tensor_parallel_size,
                        gpu_memory_utilization=args.gpu_memory_utilization,
                        enable_prefix_caching=args.enable_prefix_caching, enable_prompt_embeds=latent,
                        dtype=vllm_dtype(args.dtype), seed=args.seed[0])
    model = skeleton
    if latent:
        device = args.device2 if args.use_second_HF_model else (args.device or "cuda:0")
        model = ModelWrapper.from_pretrained(args.model_name, device=device, dtype=args.dtype, **wrapper_kwargs)
    settings["vllm"] = {"version": engine.version, "dtype": vllm_dtype(args.dtype),
                        "enable_prompt_embeds": latent, "hf_weights_loaded": latent,
                        "hf_device": str(model.device) if latent else None}
    return model, engine


def check_existing_results(out_dir: Path, settings: dict, resume: bool) -> None:
    """--resume needs an earlier run's folder with the same settings; a fresh run must not mix into old results."""
    from distributed import shard_files

    predictions_path = out_dir / "predictions.jsonl"
    if resume:
        check_resume(out_dir, settings)
    elif (predictions_path.exists() and predictions_path.stat().st_size) or shard_files(out_dir):
        raise UsageError(f"{out_dir} already holds results; pass --resume to continue it or choose another "
                         "--output_dir")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    validate(args)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    import distributed as dp
    from data import get_task, load_task
    from prompts import PromptBook

    ctx = dp.context_from_env()  # torchrun / accelerate launch: one replica per process (see distributed.py)
    if ctx.distributed and args.use_vllm:
        raise UsageError("--use_vllm runs in one process; launch run.py with torchrun/accelerate on the HF backend "
                         "only (vLLM has its own --tensor_parallel_size)")
    task = get_task(args.task)
    prompts = PromptBook.load(args.prompt_file, args.system_prompt)
    if args.model_name is None:
        args.model_name = DEFAULT_MODEL
        if ctx.main:
            print(f"note: no --model_name given, using the packaged {DEFAULT_MODEL}; "
                  f"the paper's models are --model_name {PAPER_MODELS}", file=sys.stderr)
    items = load_task(args.task, split=args.split, data_dir=args.data_dir,
                      max_samples=None if args.max_samples == -1 else args.max_samples)
    settings = run_settings(args, task)
    seeds = list(args.seed)
    out_dir = Path(args.output_dir) if args.output_dir else default_output_dir(args)
    device = args.device
    if ctx.distributed:
        import torch

        device = dp.pick_device(args.device, ctx, torch.cuda.is_available())
        dp.init_group(ctx, device)
        out_dir = Path(dp.broadcast(ctx, str(out_dir)))  # default names carry a time stamp: take rank 0's
        settings["world_size"] = ctx.world_size
    settings["output_dir"] = str(out_dir)  # the folder used, also when chosen automatically
    # The output folder is checked on rank 0 (the other ranks may be on machines without it); all ranks agree.
    error = None
    try:
        if ctx.main:
            check_output_dir(out_dir)
            check_existing_results(out_dir, settings, args.resume)
    except UsageError as exc:
        if not ctx.distributed:
            raise
        error = str(exc)
    dp.agree(ctx, error)
    from model_store import check_model_name

    check_model_name(args.model_name)  # an unknown name fails here in seconds, before torch and the weights load
    if ctx.main and (warning := latent_steps_warning(args)):  # after every check: bad input gets exactly one line
        print(warning, file=sys.stderr)

    import torch

    from methods import METHODS, MethodSettings
    from methods.runner import run_method, summarize, write_json
    from models import ModelWrapper
    from peak_memory import memory_now, reset_peak
    from provenance import library_versions
    from sampling import sampling_values
    from stats import aggregate_seeds

    torch.manual_seed(seeds[0])
    engine = None
    if args.use_vllm:
        model, engine = load_vllm(args, settings)
    else:
        model = ModelWrapper.from_pretrained(
            args.model_name, device=device, dtype=args.dtype, latent_space_realign=args.latent_space_realign,
            realign_lambda=args.realign_lambda, enable_thinking=enable_thinking(args))
    source = model.source
    settings["model"] = {"name": args.model_name, "origin": getattr(source, "origin", None),
                         "path": getattr(source, "path", None), "sha256": getattr(source, "sha256", None),
                         "revision": getattr(model.config, "_commit_hash", None), "dtype": str(model.model.dtype),
                         "device": str(model.device)}
    # The one sampling configuration every decoding agent uses: the model's generation config, the flags over it.
    settings["sampling"] = sampling_values(model.sampling_config(args.temperature, args.top_p, args.top_k))
    settings["versions"] = library_versions()
    if engine is not None:
        settings["versions"]["vllm"] = engine.version
    method_settings = MethodSettings(
        topology=args.prompt, max_new_tokens=settings["max_new_tokens"], temperature=args.temperature,
        top_p=args.top_p, top_k=args.top_k, seed=seeds[0], think=args.think, latent_steps=args.latent_steps,
        latent_only=args.latent_only, sequential_info_only=args.sequential_info_only, hierarchy=args.hierarchy,
        text_mas_context_length=args.text_mas_context_length, decode_latents=args.decode_latents)
    # Worst-case KV cache per method from the rendered prompts' token counts, before the first batch.
    estimates = {name: METHODS[name](model, method_settings, prompts).estimate_kv(items, task.answer_kind,
                                                                                   args.generate_bs)
                 for name in args.method}
    for name, estimate in estimates.items():
        check_kv_budget(args, name, estimate)
    settings["kv_estimate"] = estimates
    overlap = calibration_overlap(args, len(items))
    if args.settings_file:
        settings["calibration_overlap_items"] = overlap
        if overlap and ctx.main:
            print(f"note: {overlap} of this run's items were in the calibration dev slice of {args.settings_file}; "
                  "use --max_samples to keep them out", file=sys.stderr)
    out_dir.mkdir(parents=True, exist_ok=True)
    # The exact command line; `run.py --settings_file <this summary.json>` replays the settings.
    command = sys.argv if argv is None else ["run.py", *argv]
    summary = {"command": command, "settings": settings, "status": "running", "methods": {}}
    if ctx.main:
        write_json(out_dir / "summary.json", summary)

    # What is done: (method, seed, index) keys on disk (a launched run pools every rank's; see distributed.py).
    files = dp.ResultFiles(ctx, out_dir, args.method, seeds)
    phases = [(seed, name) for seed in seeds for name in args.method]
    todo = {(seed, name): files.todo(name, seed, len(items)) for seed, name in phases}
    mine = dict(zip(phases, dp.shard([todo[phase] for phase in phases], ctx)))  # this rank's share
    progress = None
    if ctx.distributed:
        total = len(phases) * len(items)
        progress = dp.GlobalProgress(ctx, total, total - sum(map(len, todo.values())),
                                     f"{'+'.join(args.method)} x {len(seeds)} seed(s), {ctx.world_size} ranks")
    per_seed: dict[str, dict[int, dict]] = {name: {} for name in args.method}
    weights = sum(p.numel() * p.element_size() for p in model.model.parameters() if p.device.type != "meta")

    def phase_records(records: list[dict], seed: int, name: str) -> list[dict]:
        return [r for r in records if files.key(r)[:2] == (name, seed) and r["index"] < len(items)]

    def finish_phase(seed: int, name: str, metrics: dict) -> None:
        per_seed[name][seed] = metrics
        summary["methods"][name] = {**aggregate_seeds(per_seed[name]),
                                    "estimated_peak_kv_bytes_total": estimates[name]["bytes_total"],
                                    "estimated_peak_kv_bytes_per_item": estimates[name]["bytes_per_item"]}
        write_json(out_dir / "summary.json", summary)
        print(json.dumps(final_line(args, name, metrics, seed), ensure_ascii=False), flush=True)

    started, written = time.perf_counter(), 0
    try:
        for seed, name in phases:
            method = METHODS[name](model, replace(method_settings, seed=seed), prompts, engine=engine)
            start = time.perf_counter()
            reset_peak(model.device)
            skip = set(range(len(items))) - set(mine[(seed, name)])  # done, or another rank's
            new = run_method(method, args.task, task.answer_kind, items, skip, files.write_path, args.generate_bs,
                             trace=not args.quiet, extra={"seed": seed}, show_bar=not ctx.distributed,
                             on_batch=progress.advance if progress else None, whole_text=args.score_whole_text)
            written += len(new)
            if not ctx.distributed:
                metrics = summarize(phase_records(files.previous, seed, name) + new, time.perf_counter() - start)
                # The real peak beside the accounted KV bytes: everything the process held (weights, KV caches and
                # their transient copies, activations; on CPU also the runtime). Weights are memory-mapped: on CPU
                # they count once touched, so what lies beyond them is the peak minus their bytes.
                peak = memory_now(model.device)
                metrics["peak_memory"] = {"kind": peak["kind"], "peak_bytes": peak["peak_bytes"],
                                          "weight_bytes": weights, "beyond_weights_bytes": peak["peak_bytes"] - weights}
                finish_phase(seed, name, metrics)
        if ctx.distributed:
            progress.close()
            merged = files.finish(written)
            if ctx.main:
                summary["wall_seconds"] = round(time.perf_counter() - started, 3)
                summary["items_per_rank"] = files.items_per_rank  # what each rank computed in this launch
                for seed, name in phases:
                    finish_phase(seed, name, summarize(phase_records(merged, seed, name)))
    except KeyboardInterrupt:
        if ctx.main:
            summary["status"] = "interrupted"
            write_json(out_dir / "summary.json", summary)
            print(f"interrupted: finished items are in {out_dir}; rerun with --resume --output_dir {out_dir}",
                  file=sys.stderr)
        return 130
    if ctx.main:
        summary["status"] = "finished"
        write_json(out_dir / "summary.json", summary)
        from report import comparison_table

        print(comparison_table(summary["methods"]))
        print(f"results: {out_dir}", file=sys.stderr)
    dp.close_group(ctx)
    return 0


def final_line(args: argparse.Namespace, method: str, m: dict, seed: int) -> dict:
    """The reference's closing stdout JSON line (one per method and seed), plus token counts."""
    return {"method": method, "model": args.model_name, "task": args.task, "prompt": args.prompt, "split": args.split,
            "seed": seed, "max_samples": m["n"], "accuracy": m["accuracy"], "correct": m["correct"],
            "total_time_sec": m["seconds"], "time_per_sample_sec": m["seconds_per_item"],
            "total_output_tokens": m["total_output_tokens"], "judger_output_tokens": m["judger_output_tokens"],
            "avg_output_tokens": m["avg_output_tokens"]}


def cli() -> int:
    return one_line_errors(main, "run.py")


if __name__ == "__main__":
    sys.exit(cli())
