"""LatentMAS research CLI: python run.py --method latent_mas --task gsm8k [...] (see README.md, "Flags")."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from datetime import datetime
from pathlib import Path

from errors import UsageError, check_output_folder, one_line_errors
# The run's configuration (flags.py: every setting once, its parser, settings files, checks and result keys); the
# names are run.py's public interface too (tests and users call run.parse_args, run.build_parser, run.validate).
from flags import (DEFAULT_MODEL, PAPER_MODELS, RESULT_KEYS, build_parser, calibration_overlap,  # noqa: F401
                   check_kv_budget, differing_setting, enable_thinking, judger_layout_note, parse_args, parse_size, read_settings_file,
                   run_settings, validate)


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


def latent_steps_warning(args: argparse.Namespace) -> str | None:
    """latent_mas with --latent_steps 0 (the default) has no latent thought at all: say so, once, on stderr."""
    if "latent_mas" not in args.method or args.latent_steps:
        return None
    return ("warning: latent_mas with --latent_steps 0: the agents before the judger only prefill their prompts "
            "into the shared memory, with no latent thought; the paper searched --latent_steps 0, 10, 20, 40, 80")


def run_notes(args: argparse.Namespace, split_size: int, default_model: bool) -> list[str]:
    """What a run does differently from what its flags may suggest, said once on stderr (after every check)."""
    notes = []
    if default_model:
        notes.append(f"note: no --model_name given, using the packaged {DEFAULT_MODEL}; the paper's models are "
                     f"--model_name {PAPER_MODELS}")
    if args.max_samples > split_size:
        notes.append(f"warning: --max_samples {args.max_samples}: {args.task} {args.split} has {split_size} items; "
                     f"running all {split_size}")
    if args.decode_latents and "latent_mas" not in args.method:
        notes.append(f"warning: --decode_latents applies to latent_mas only, which this run does not include "
                     f"(--method {' '.join(args.method)}): nothing is decoded")
    return notes


class Terminated(KeyboardInterrupt):
    """SIGTERM (kill, a scheduler's stop): handled as Ctrl-C is, the summary marked interrupted, exit 143."""


def _terminate(signum, frame):
    raise Terminated


def default_output_dir(args: argparse.Namespace) -> Path:
    model = Path(args.model_name).name.replace("/", "_")
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("outputs") / f"{args.task}-{args.prompt}-{'+'.join(args.method)}-{model}-{stamp}"


def load_vllm(args: argparse.Namespace, settings: dict):
    """--use_vllm: (HF wrapper, VLLMEngine). vLLM is started first, so it finds the memory it is told to take.
    The HF weights are loaded only for latent_mas (its latent rollout): on CUDA on --device2 with
    --use_second_HF_model, else on --device (default cuda:0, beside vLLM: lower --gpu_memory_utilization to leave
    room for them); on CPU in the same memory as vLLM. For baseline/text_mas alone the wrapper has no weights
    (tokenizer, template and config only)."""
    import torch

    from models import ModelWrapper
    from vllm_backend import VLLMEngine, memory_settings, vllm_dtype

    cuda = torch.cuda.is_available()
    latent = "latent_mas" in args.method
    wrapper_kwargs = dict(latent_space_realign=args.latent_space_realign, realign_lambda=args.realign_lambda,
                          enable_thinking=enable_thinking(args))
    skeleton = ModelWrapper.without_weights(args.model_name, dtype=vllm_dtype(args.dtype), **wrapper_kwargs)
    engine = VLLMEngine(skeleton.source.path, skeleton.tokenizer, skeleton.eos_token_ids,
                        dtype=vllm_dtype(args.dtype),
                        memory=memory_settings(cuda, args.vllm_kv_cache_gib, args.gpu_memory_utilization),
                        tensor_parallel_size=args.tensor_parallel_size,
                        enable_prefix_caching=args.enable_prefix_caching, enable_prompt_embeds=latent,
                        seed=args.seed[0], judger_layout=args.vllm_judger_layout)
    model = skeleton
    if latent:
        device = args.device2 if args.use_second_HF_model else (args.device or ("cuda:0" if cuda else "cpu"))
        model = ModelWrapper.from_pretrained(args.model_name, device=device, dtype=args.dtype, **wrapper_kwargs)
    settings["vllm"] = {**engine.describe(), "hf_weights_loaded": latent,
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
    default_model = args.model_name is None
    if default_model:
        args.model_name = DEFAULT_MODEL
    items = load_task(args.task, split=args.split, data_dir=args.data_dir)
    notes = run_notes(args, len(items), default_model)
    if args.max_samples != -1:
        items = items[:args.max_samples]
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
            check_output_folder(out_dir, "--output_dir")
            check_existing_results(out_dir, settings, args.resume)
    except UsageError as exc:
        if not ctx.distributed:
            raise
        error = str(exc)
    dp.agree(ctx, error)
    from model_store import check_model_name

    check_model_name(args.model_name)  # an unknown name fails here in seconds, before torch and the weights load
    if ctx.main:  # after every check: bad input gets exactly one line
        for note in notes + [latent_steps_warning(args), judger_layout_note(args)]:
            if note:
                print(note, file=sys.stderr)

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
                             on_batch=progress.advance if progress else None, whole_text=args.score_whole_text,
                             desc=f"{name} seed {seed}" if len(seeds) > 1 else name)
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
    except KeyboardInterrupt as stop:
        if ctx.main:
            summary["status"] = "interrupted"
            write_json(out_dir / "summary.json", summary)
            print(f"{'terminated' if isinstance(stop, Terminated) else 'interrupted'}: finished items are in "
                  f"{out_dir}; rerun with --resume --output_dir {out_dir}", file=sys.stderr)
        return 143 if isinstance(stop, Terminated) else 130
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
    import signal

    signal.signal(signal.SIGTERM, _terminate)
    try:
        return one_line_errors(main, "run.py")
    except KeyboardInterrupt as stop:  # before the first item (the model loading): nothing written yet
        print(f"run.py: {'terminated' if isinstance(stop, Terminated) else 'interrupted'} before the first item; "
              "nothing to resume", file=sys.stderr)
        return 143 if isinstance(stop, Terminated) else 130


if __name__ == "__main__":
    sys.exit(cli())
