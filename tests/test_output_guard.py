"""The output guard (tests/output_guard.py): it flags a constant model, passes the default tiny model, and is on in
every test without being asked for."""

import json

import output_guard
from prompts import PromptBook

QUESTIONS = ["What is 2 + 3?", "Tom has 7 apples and eats two of them. How many are left?", "What is 12 / 4?"]


def decode(wrapper, role="judger", tokens=4):
    prompts = [wrapper.render_chat(PromptBook.load().messages(role, q, "number")) for q in QUESTIONS]
    return wrapper.generate(*wrapper.encode(prompts), max_new_tokens=tokens)


def test_a_constant_model_is_flagged(make_tiny_wrapper, decode_log):
    """The tied tiny model writes the same whitespace for every prompt: the guard reports both faults."""
    log = output_guard.DecodeLog()
    with decode_log.capture() as decodes:
        generation = decode(make_tiny_wrapper(tie=True))
    log.decodes = decodes
    decode_log.decodes.clear()  # this test's own guard must not fail it for the constant outputs it made on purpose
    assert len(set(generation.texts)) == 1 and not generation.texts[0].strip()
    problems = log.problems()
    assert any("whitespace-only" in p for p in problems)
    assert any(f"the same output {generation.texts[0]!r} for 3 different prompts" in p for p in problems)


def test_the_default_tiny_model_writes_varied_text(make_tiny_wrapper, decode_log):
    wrapper = make_tiny_wrapper()
    for role in ("single", "judger", "planner", "summarizer"):
        generation = decode(wrapper, role)
        assert len(set(map(tuple, generation.token_ids))) == len(QUESTIONS), generation.texts
        assert all(text.strip() for text in generation.texts)
    assert len(decode_log.decodes) == 4 and not decode_log.problems()


def test_the_guard_records_every_decode_without_being_asked(make_tiny_wrapper, request):
    """This test does not name decode_log; the autouse fixture records its decodes all the same."""
    generation = decode(make_tiny_wrapper(), tokens=2)
    log = request.node.funcargs["decode_log"]
    assert [list(ids) for ids in log.decodes[0].token_ids] == generation.token_ids
    assert len(set(log.decodes[0].prompts)) == len(QUESTIONS)


def test_identical_outputs_for_one_prompt_are_not_flagged():
    same = output_guard.Decode(["p", "p"], [(1, 2), (1, 2)], ["ab", "ab"])
    assert output_guard.decode_problems([same, same]) == []
    varied = output_guard.Decode(["p", "q"], [(1, 2), (1, 3)], ["ab", "ac"])
    assert output_guard.decode_problems([varied]) == []
    # One prompt per call, but across the test two prompts got one output: flagged.
    assert output_guard.decode_problems([output_guard.Decode(["p"], [(1,)], ["a"]),
                                         output_guard.Decode(["q"], [(1,)], ["a"])]) != []


def _write_predictions(path, finals, outputs):
    lines = [{"method": "latent_mas", "index": i, "question": f"question {i}", "final_text": final,
              "agents": [{"role": "judger", "output": out, "output_tokens": 3}]}
             for i, (final, out) in enumerate(zip(finals, outputs))]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(l) + "\n" for l in lines) + '{"torn')


def test_predictions_files_are_checked(tmp_path):
    """run.py in a subprocess decodes out of the guard's sight: its predictions.jsonl is checked instead."""
    _write_predictions(tmp_path / "constant" / "predictions.jsonl", ["\n\n", "\n\n"], ["\n\n", "\n\n"])
    _write_predictions(tmp_path / "varied" / "predictions.jsonl", ["a", "b"], ["a", "b"])
    problems = output_guard.tree_problems(tmp_path)
    assert all(p.startswith("constant") for p in problems) and len(problems) == 3, problems
    (tmp_path / "constant" / "predictions.jsonl").unlink()  # leave this test's tmp_path clean for its own guard
