"""The README's bash blocks: each is marked (run by this suite, by the CI, or skipped with a reason), and the cheap
ones run here as written. The CI runs the others (scripts/ci_reproduction.sh)."""

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("check_readme_commands", ROOT / "scripts" / "check_readme_commands.py")
check = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = check  # dataclasses look their module up there
spec.loader.exec_module(check)


def test_every_bash_block_is_marked_and_the_quick_start_and_sweep_dry_run_are_run_by_ci():
    blocks = check.bash_blocks((ROOT / "README.md").read_text())
    assert all(b.tier != "skip" or b.reason for b in blocks)
    ci = [b.text for b in blocks if b.tier == "ci"]
    assert any("run.py --method latent_mas --task gsm8k --max_samples 3" in t for t in ci), ci  # the quick start
    assert any("scripts/sweep.py" in t and "--dry_run" in t for t in ci), ci
    assert [b for b in blocks if b.tier == "cheap"], "no README block is run by the default suite"
    ci_script = (ROOT / "scripts" / "ci_reproduction.sh").read_text()
    assert "scripts/check_readme_commands.py --run ci" in ci_script


def test_an_unmarked_block_is_refused():
    with pytest.raises(check.ReadmeError, match="line 3: a ```bash block without"):
        check.bash_blocks("text\n\n```bash\npython run.py\n```\n")


@pytest.mark.parametrize("index", range(len([b for b in check.bash_blocks((ROOT / "README.md").read_text())
                                             if b.tier == "cheap"])))
def test_cheap_blocks_run_as_written(index):
    block = [b for b in check.bash_blocks((ROOT / "README.md").read_text()) if b.tier == "cheap"][index]
    result = check.run_block(block)
    assert result.returncode == 0, (block.text, result.stderr[-2000:])
    assert result.stdout.strip(), block.text
