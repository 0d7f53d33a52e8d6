"""One experiment: the configured methods and seeds on a task's items, from the run's configuration to its summary.

    summary = run_experiment(parse_args(argv))      # what run.py does after parsing and checking its flags

The configuration is flags.py's namespace (every setting declared once there; `flags.config(...)` builds one in
Python). The steps, in order: the task and its items, the run's recorded settings, the output folder and the resume
check (results.py), the model (HF, or vLLM with --use_vllm), the KV estimate per method, then every (seed, method)
phase through methods.runner (the batch loop; the task scores), the metrics per method and seed into summary.json.
run.py, scripts/calibrate.py (its search loop around it) and `LatentMAS.evaluate` call it. Under torchrun /
accelerate every rank calls it; distributed.py splits the items and results.py merges the ranks' files.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import datetime
from pathlib import Path

import distributed as dp
from data import Task, get_task
from errors import Interrupted, Terminated, UsageError, check_output_folder
from flags import (DEFAULT_MODEL, PAPER_MODELS, calibration_overlap, check_kv_budget, enable_thinking,
                   judger_layout_note, run_settings)
from results import ResultFiles, check_existing_results


def run_notes(config: argparse.Namespace, split_size: int, default_model: bool) -> list[str]:
    """What a run does differently from what its flags may suggest, said once on stderr (after every check)."""
    notes = []
    if default_model:
        notes.append(f"note: no --model_name given, using the packaged {DEFAULT_MODEL}; the paper's models are "
                     f"--model_name {PAPER_MODELS}")
    if config.max_samples > split_size:
        notes.append(f"warning: --max_samples {config.max_samples}: {config.task} {config.split} has {split_size} "
                     f"items; running all {split_size}")
    if config.decode_latents and "latent_mas" not in config.method:
        notes.append(f"warning: --decode_latents applies to latent_mas only, which this run does not include "
                     f"(--method {' '.join(config.method)}): nothing is decoded")
    if "latent_mas" in config.method and not config.latent_steps:
        notes.append("warning: latent_mas with --latent_steps 0: the agents before the judger only prefill their "
                     "prompts into the shared memory, with no latent thought; the paper searched --latent_steps 0, "
                     "10, 20, 40, 80")
    return notes + [note for note in [judger_layout_note(config)] if note]


def default_output_dir(config: argparse.Namespace) -> Path:
    model = Path(config.model_name).name.replace("/", "_")
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("outputs") / f"{config.task}-{config.prompt}-{'+'.join(config.method)}-{model}-{stamp}"


def load_model(config: argparse.Namespace, device: str | None, settings: dict):
    """(ModelWrapper, engine or None): the HF model on `device`, or with --use_vllm the vLLM engine and, for
    latent_mas (its latent rollout), the HF weights. vLLM is started first, so it finds the memory it is told to
    take; on CUDA the HF weights go on --device2 with --use_second_HF_model, else on --device (default cuda:0, beside
    vLLM: lower --gpu_memory_utilization to leave room for them); on CPU in the same memory as vLLM. For
    baseline/text_mas alone the wrapper has no weights (tokenizer, template and config only)."""
    from models import ModelWrapper

    wrapper_kwargs = dict(latent_space_realign=config.latent_space_realign, realign_lambda=config.realign_lambda,
                          enable_thinking=enable_thinking(config))
    if not config.use_vllm:
        return ModelWrapper.from_pretrained(config.model_name, device=device, dtype=config.dtype,
                                            **wrapper_kwargs), None
    import torch

    from vllm_backend import VLLMEngine, memory_settings, vllm_dtype

    cuda = torch.cuda.is_available()
    latent = "latent_mas" in config.method
    skeleton = ModelWrapper.without_weights(config.model_name, dtype=vllm_dtype(config.dtype), **wrapper_kwargs)
    engine = VLLMEngine(skeleton.source.path, skeleton.tokenizer, skeleton.eos_token_ids,
                        dtype=vllm_dtype(config.dtype),
                        memory=memory_settings(cuda, config.vllm_kv_cache_gib, config.gpu_memory_utilization),
                        tensor_parallel_size=config.tensor_parallel_size,
                        enable_prefix_caching=config.enable_prefix_caching, enable_prompt_embeds=latent,
                        seed=config.seed[0], judger_layout=config.vllm_judger_layout)
    model = skeleton
    if latent:
        hf_device = config.device2 if config.use_second_HF_model else (config.device or ("cuda:0" if cuda else "cpu"))
        model = ModelWrapper.from_pretrained(config.model_name, device=hf_device, dtype=config.dtype, **wrapper_kwargs)
    settings["vllm"] = {**engine.describe(), "hf_weights_loaded": latent,
                        "hf_device": str(model.device) if latent else None}
    return model, engine


def estimate_kv(model, config: argparse.Namespace, task: Task, items: list[dict], prompts, method: str) -> dict:
    """Worst-case KV cache of one method on these items, from the rendered prompts' token counts (no forward)."""
    from methods import METHODS, MethodSettings

    settings = MethodSettings.from_config(config, task)
    return METHODS[method](model, settings, prompts).estimate_kv(items, task.answer_kind, config.generate_bs)


def check_folder(ctx: dp.DistContext, out_dir: Path, settings: dict, resume: bool) -> None:
    """The output folder, checked on rank 0 before any work (the other ranks may be on machines without it): it can
    be written, and it holds no results unless --resume continues them with the same settings. All ranks agree."""
    error = None
    try:
        if ctx.main:
            check_output_folder(out_dir, "--output_dir")
            check_existing_results(out_dir, settings, resume)
    except UsageError as exc:
        if not ctx.distributed:
            raise
        error = str(exc)
    dp.agree(ctx, error)


def record_model(settings: dict, config: argparse.Namespace, model, engine) -> None:
    """What the run loaded, into its recorded settings: the model (origin, checksum, dtype, device), the sampling
    configuration every decoding agent uses (the model's generation config, the flags over it) and the versions."""
    from provenance import library_versions
    from sampling import sampling_values

    source = model.source
    settings["model"] = {"name": config.model_name, "origin": getattr(source, "origin", None),
                         "path": getattr(source, "path", None), "sha256": getattr(source, "sha256", None),
                         "revision": getattr(model.config, "_commit_hash", None), "dtype": str(model.model.dtype),
                         "device": str(model.device)}
    settings["sampling"] = sampling_values(model.sampling_config(config.temperature, config.top_p, config.top_k))
    settings["versions"] = library_versions()
    if engine is not None:
        settings["versions"]["vllm"] = engine.version


def final_line(config: argparse.Namespace, method: str, m: dict, seed: int) -> dict:
    """The reference's closing stdout JSON line (one per method and seed), plus token counts."""
    return {"method": method, "model": config.model_name, "task": config.task, "prompt": config.prompt,
            "split": config.split, "seed": seed, "max_samples": m["n"], "accuracy": m["accuracy"],
            "correct": m["correct"], "total_time_sec": m["seconds"], "time_per_sample_sec": m["seconds_per_item"],
            "total_output_tokens": m["total_output_tokens"], "judger_output_tokens": m["judger_output_tokens"],
            "avg_output_tokens": m["avg_output_tokens"]}


def run_experiment(config: argparse.Namespace, *, command: list[str] | None = None, model=None,
                   items: list[dict] | None = None, recorded: dict | None = None) -> dict:
    """Run config.method x config.seed on config.task and return the summary (also in OUT/summary.json).

    config: flags.py's namespace, already checked (flags.validate). command: what summary.json records as the
    command line (run.py's argv). model: a loaded ModelWrapper to use instead of loading config.model_name (the
    HF backend only). items: the items to run instead of the split's first --max_samples (calibrate's dev slice).
    recorded: more keys for summary.json's settings (calibrate's dev slice), not compared by --resume.
    Ctrl-C or SIGTERM after the summary is first written: it is marked "interrupted" and Interrupted is raised."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from prompts import PromptBook

    ctx = dp.context_from_env()  # torchrun / accelerate launch: one replica per process (see distributed.py)
    if ctx.distributed and config.use_vllm:
        raise UsageError("--use_vllm runs in one process; launch run.py with torchrun/accelerate on the HF backend "
                         "only (vLLM has its own --tensor_parallel_size)")
    if model is not None and config.use_vllm:
        raise UsageError("run_experiment: a loaded model runs on the HF backend; leave use_vllm off")
    task = get_task(config.task)
    prompts = PromptBook.load(config.prompt_file, config.system_prompt)
    default_model = config.model_name is None
    if default_model:
        config.model_name = DEFAULT_MODEL
    given = items is not None
    if not given:
        items = task.load(split=config.split, data_dir=config.data_dir)
    notes = run_notes(config, len(items), default_model)  # against the whole split: --max_samples beyond it warns
    if not given and config.max_samples != -1:
        items = items[:config.max_samples]
    settings = {**run_settings(config, task), **(recorded or {})}
    seeds = list(config.seed)
    out_dir = Path(config.output_dir) if config.output_dir else default_output_dir(config)
    device = config.device
    if ctx.distributed:
        import torch

        device = dp.pick_device(config.device, ctx, torch.cuda.is_available())
        dp.init_group(ctx, device)
        out_dir = Path(dp.broadcast(ctx, str(out_dir)))  # default names carry a time stamp: take rank 0's
        settings["world_size"] = ctx.world_size
    settings["output_dir"] = str(out_dir)  # the folder used, also when chosen automatically
    check_folder(ctx, out_dir, settings, config.resume)
    if model is None:
        from model_store import check_model_name

        check_model_name(config.model_name)  # an unknown name fails here in seconds, before torch and the weights
    if ctx.main:  # after every check: bad input gets exactly one line
        for note in notes:
            print(note, file=sys.stderr)

    import torch

    from methods import METHODS, MethodSettings
    from methods.runner import run_method, summarize
    from peak_memory import memory_now, reset_peak
    from stats import aggregate_seeds

    torch.manual_seed(seeds[0])
    engine = None
    if model is None:
        model, engine = load_model(config, device, settings)
    record_model(settings, config, model, engine)
    estimates = {name: estimate_kv(model, config, task, items, prompts, name) for name in config.method}
    for name, estimate in estimates.items():
        check_kv_budget(config, name, estimate)
    settings["kv_estimate"] = estimates
    overlap = calibration_overlap(config, len(items))
    if config.settings_file:
        settings["calibration_overlap_items"] = overlap
        if overlap and ctx.main:
            print(f"note: {overlap} of this run's items were in the calibration dev slice of {config.settings_file}; "
                  "use --max_samples to keep them out", file=sys.stderr)
    out_dir.mkdir(parents=True, exist_ok=True)
    # The exact command line; `run.py --settings_file <this summary.json>` replays the settings.
    summary = {"command": command, "settings": settings, "status": "running", "methods": {}}
    # What is done: (method, seed, index) keys on disk (a launched run pools every rank's; see results.py).
    files = ResultFiles(ctx, out_dir, config.method, seeds)
    files.write_summary(summary)

    phases = [(seed, name) for seed in seeds for name in config.method]
    todo = {(seed, name): files.todo(name, seed, len(items)) for seed, name in phases}
    mine = dict(zip(phases, dp.shard([todo[phase] for phase in phases], ctx)))  # this rank's share
    progress = None
    if ctx.distributed:
        total = len(phases) * len(items)
        progress = dp.GlobalProgress(ctx, total, total - sum(map(len, todo.values())),
                                     f"{'+'.join(config.method)} x {len(seeds)} seed(s), {ctx.world_size} ranks")
    per_seed: dict[str, dict[int, dict]] = {name: {} for name in config.method}
    weights = sum(p.numel() * p.element_size() for p in model.model.parameters() if p.device.type != "meta")

    def phase_records(records: list[dict], seed: int, name: str) -> list[dict]:
        return [r for r in records if files.key(r)[:2] == (name, seed) and r["index"] < len(items)]

    def finish_phase(seed: int, name: str, metrics: dict) -> None:
        per_seed[name][seed] = metrics
        summary["methods"][name] = {**aggregate_seeds(per_seed[name]),
                                    "estimated_peak_kv_bytes_total": estimates[name]["bytes_total"],
                                    "estimated_peak_kv_bytes_per_item": estimates[name]["bytes_per_item"]}
        files.write_summary(summary)
        print(json.dumps(final_line(config, name, metrics, seed), ensure_ascii=False), flush=True)

    started, written = time.perf_counter(), 0
    try:
        for seed, name in phases:
            method = METHODS[name](model, MethodSettings.from_config(config, task, seed=seed), prompts, engine=engine)
            start = time.perf_counter()
            reset_peak(model.device)
            skip = set(range(len(items))) - set(mine[(seed, name)])  # done, or another rank's
            new = run_method(method, task, items, skip, files.write_path, config.generate_bs, trace=not config.quiet,
                             extra={"seed": seed}, show_bar=not ctx.distributed,
                             on_batch=progress.advance if progress else None, whole_text=config.score_whole_text,
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
        summary["status"] = "interrupted"
        files.write_summary(summary)
        terminated = isinstance(stop, Terminated)
        if ctx.main:
            print(f"{'terminated' if terminated else 'interrupted'}: finished items are in {out_dir}; rerun with "
                  f"--resume --output_dir {out_dir}", file=sys.stderr)
        raise Interrupted(out_dir, terminated) from None
    summary["status"] = "finished"
    files.write_summary(summary)
    if ctx.main:
        from report import comparison_table

        print(comparison_table(summary["methods"]))
        print(f"results: {out_dir}", file=sys.stderr)
    dp.close_group(ctx)
    return summary
