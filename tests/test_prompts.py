"""The prompts carry nothing a scorer would take for an answer, and the single agent is told of no other agents.

A format example that is a plausible answer gets copied by small models ("e.g. \\boxed{42}" was answered 42, and
scored right wherever the gold is 42). So every rendered prompt of every role, task and way of receiving earlier
work, taken as a model's output, must score wrong against every gold (every letter of a choice task), and what its
task's extraction pulls out of it must not have a gold's shape (a number for number tasks, any letter for choice
tasks, code for code tasks). Fast: regexes over the prompt texts, no model.
"""

import pytest

from data import TASKS, load_task, score_output
from prompts import DEFAULT_PROMPTS, PromptBook
from utils import parse_number

ROLES = sorted(set(DEFAULT_PROMPTS) - {"system", "latent_context", "text_context"})


def rendered_prompts(answer_kind: str) -> list[str]:
    """Every agent's whole prompt (system and user lines), with an empty question: alone, received as latent
    memory, or after earlier agents' (empty) text."""
    book = PromptBook.load()
    texts = []
    for role in ROLES:
        for context, latent in ((None, False), (None, True), ("", False)):
            messages = book.messages(role, "", answer_kind, context, latent)
            texts.append("\n\n".join(m["content"] for m in messages))
    return texts


def has_gold_shape(answer_kind: str, prediction: str | None) -> bool:
    if prediction is None:
        return False
    if answer_kind in ("number", "integer"):
        return parse_number(prediction) is not None
    return bool(prediction.strip())  # a letter (choice), code (code): anything found counts


def items_with_every_gold(task: str, data_dir) -> list[dict]:
    """The task's first 30 items; for a choice task, also the first item with each valid letter as its gold."""
    path = data_dir / TASKS[task].local_file
    if not path.exists():
        pytest.skip(f"no local data at {path}")
    items = load_task(task, data_dir=str(data_dir), max_samples=30)
    letters = sorted(items[0].get("choices") or TASKS[task].choices)
    return items + [{**items[0], "gold": letter} for letter in letters]


@pytest.mark.parametrize("task", sorted(TASKS))
def test_no_prompt_holds_an_answer_the_scorer_accepts(task, data_dir):
    items = items_with_every_gold(task, data_dir)
    kind = TASKS[task].answer_kind
    for prompt in rendered_prompts(kind):
        first = score_output(task, prompt, items[0])
        assert not has_gold_shape(kind, first.prediction), (task, first, prompt)
        if kind != "code":  # code: nothing extracted, so there is no program to run against other items
            assert not any(score_output(task, prompt, item).correct for item in items), (task, prompt)


def test_the_single_agent_is_told_of_no_other_agents():
    book = PromptBook.load()
    for kind in ("number", "choice", "code"):
        text = " ".join(m["content"] for m in book.messages("single", "What is 2 + 2?", kind)).lower()
        assert "agent" not in text and "collaborat" not in text and "specialist" not in text, text
