"""The README's bash and python blocks: each is marked (run by this suite, by the CI, or skipped with a reason),
and the cheap ones run here as written; a python block runs outside the checkout and must print what the README
shows. The CI runs the others (scripts/ci_reproduction.sh)."""

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("check_readme_commands", ROOT / "scripts" / "check_readme_commands.py")
check = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = check  # dataclasses look their module up there
spec.loader.exec_module(check)

README_BLOCKS = check.readme_blocks((ROOT / "README.md").read_text())


def test_every_block_is_marked_and_the_quick_start_sweep_dry_run_and_api_example_are_run_by_ci():
    assert all(b.tier != "skip" or b.reason for b in README_BLOCKS)
    ci = [b for b in README_BLOCKS if b.tier == "ci"]
    assert any("run.py --method latent_mas --task gsm8k --max_samples 3" in b.text for b in ci), ci  # quick start
    assert any("scripts/sweep.py" in b.text and "--dry_run" in b.text for b in ci), ci
    api = [b for b in README_BLOCKS if b.language == "python" and "from latentmas import LatentMAS" in b.text]
    assert api and all(b.tier in check.TIERS and b.prints for b in api), api  # run, and compared with its output
    assert [b for b in README_BLOCKS if b.tier == "cheap"], "no README block is run by the default suite"
    ci_script = (ROOT / "scripts" / "ci_reproduction.sh").read_text()
    assert "scripts/check_readme_commands.py --run ci" in ci_script


@pytest.mark.parametrize("language", check.LANGUAGES)
def test_an_unmarked_block_is_refused(language):
    with pytest.raises(check.ReadmeError, match=f"line 3: a ```{language} block without"):
        check.readme_blocks(f"text\n\n```{language}\nprint(1)\n```\n")


def test_a_run_python_block_without_its_output_is_refused_and_a_skipped_one_needs_none():
    with pytest.raises(check.ReadmeError, match="line 2: a ```python block that is run needs the ```text block"):
        check.readme_blocks("<!-- readme-check: cheap -->\n```python\nprint(1)\n```\n\nSome prose.\n")
    skipped = check.readme_blocks("<!-- readme-check: skip: a GPU -->\n```python\nprint(1)\n```\n")
    assert [(b.tier, b.prints) for b in skipped] == [("skip", None)]


# A user's script: it imports a module of the checkout (possible through PYTHONPATH only) and says where it runs.
EXAMPLE = """<!-- readme-check: cheap -->
```python
import os
from pathlib import Path

import errors

checkout, here = Path(os.environ["PYTHONPATH"]), Path.cwd()
print("imported from the checkout:", Path(errors.__file__).parent == checkout)
print("runs inside the checkout:", checkout in (here, *here.parents))
print("took 0.25 s")
```

It prints (the seconds vary):

```text
{prints}
```
"""
PRINTS = "imported from the checkout: True\nruns inside the checkout: False\ntook {seconds} s"


@pytest.mark.parametrize("seconds, matches", [("<seconds>", True), ("0.25", True), ("0.3", False),
                                              ("<seconds> <seconds>", False)])
def test_a_python_block_runs_outside_the_checkout_and_must_print_what_the_readme_shows(seconds, matches):
    [block] = check.readme_blocks(EXAMPLE.replace("{prints}", PRINTS.format(seconds=seconds)))
    assert block.prints.startswith("imported from the checkout") and "```" not in block.text
    result = check.run_block(block)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("imported from the checkout: True\nruns inside the checkout: False\n")
    mismatch = check.output_mismatch(block, result.stdout)
    assert (mismatch == "") == matches, mismatch
    if not matches:
        assert "+took 0.25 s" in mismatch  # the diff shows what it printed


def test_a_placeholder_stands_for_a_number_only():
    [block] = check.readme_blocks(EXAMPLE.replace("{prints}", "took <seconds> s"))
    assert check.output_mismatch(block, "took 12 s\n") == ""
    assert check.output_mismatch(block, "took soon s\n") != ""
    assert check.output_mismatch(block, "took 1.5 s\nand more\n") != ""


@pytest.mark.parametrize("index", range(len([b for b in README_BLOCKS if b.tier == "cheap"])))
def test_cheap_blocks_run_as_written(index):
    block = [b for b in README_BLOCKS if b.tier == "cheap"][index]
    result = check.run_block(block)
    assert result.returncode == 0, (block.text, result.stderr[-2000:])
    assert result.stdout.strip(), block.text
    assert check.output_mismatch(block, result.stdout) == "", block.text
