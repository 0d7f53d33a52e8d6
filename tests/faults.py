"""The fault-injection table: each entry puts one defect back into the code, from the test side (a monkeypatch; the
project's modules stay as they are), and names the default-suite tests that must fail under it.

tests/test_faults.py runs every catching test with its fault applied (one pytest subprocess; conftest.py applies
the fault around that test alone, and tests/fault_site/sitecustomize.py applies it in any Python the test starts,
such as run.py), prints the table and fails if a fault goes uncaught. The README's Tests section lists the table.

Adding a fault is one FAULTS entry: its name, a function that applies it through `patch.setattr(owner, name,
value)`, and the node ids of the tests that catch it. Patch what the code looks up when it runs (a class attribute,
or a module global that the code reads at call time), not a name that test modules imported before the fault.

"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable


class PlainPatch:
    """The one MonkeyPatch method faults use, for processes that never undo (tests/fault_site/sitecustomize.py)."""

    @staticmethod
    def setattr(owner, name: str, value) -> None:
        setattr(owner, name, value)


@dataclass(frozen=True)
class Fault:
    name: str
    apply: Callable  # apply(patch): patch.setattr(owner, name, value) for each change
    catchers: tuple[str, ...]  # node ids of default-suite tests that must fail under the fault
    vllm_catchers: tuple[str, ...] = ()  # more, on stock vLLM: run where vllm is importable (CI installs it)


# ------------------------------------------------------------------------------------------------ latent core

def memory_mask_all_ones(patch):
    """The reference's padding bug: every memory position is attended, left pads of earlier agents included."""
    import torch

    from models import ModelWrapper

    extend = ModelWrapper._extend_args

    def extend_args(self, new_mask, memory):
        args = extend(self, new_mask, memory)
        if memory is not None:
            ones = torch.ones_like(memory.mask).to(new_mask.device)
            args["attention_mask"] = torch.cat([ones, new_mask], dim=1)
        return args

    patch.setattr(ModelWrapper, "_extend_args", extend_args)


def positions_not_continued_per_row(patch):
    """Every row continues from the memory's padded length, as if no row had pads."""
    import torch

    from models import ModelWrapper

    extend = ModelWrapper._extend_args

    def extend_args(self, new_mask, memory):
        args = extend(self, new_mask, memory)
        if memory is not None:
            start = torch.full_like(memory.next_pos, memory.length).to(new_mask.device)
            args["position_ids"] = (start[:, None] + new_mask.cumsum(dim=-1) - 1).clamp(min=0)
        return args

    patch.setattr(ModelWrapper, "_extend_args", extend_args)


def right_padding(patch):
    """Batches padded on the right: the last column, whose hidden state starts the latent steps and whose logits
    give the first token, is a pad in the shorter rows (a reference defect)."""
    from models import ModelWrapper

    encode = ModelWrapper.encode

    def right_padded(self, texts):
        self.tokenizer.padding_side = "right"
        try:
            return encode(self, texts)
        finally:
            self.tokenizer.padding_side = "left"

    patch.setattr(ModelWrapper, "encode", right_padded)


def pre_norm_hidden_state(patch):
    """The latent step fed the last layer's output before the model's final norm."""
    import torch

    from models import ModelWrapper

    forward_hidden = ModelWrapper._forward_hidden

    def without_final_norm(self, new_mask, memory, **inputs):
        body = self.model.base_model
        norm = body.norm
        body.norm = torch.nn.Identity()
        try:
            return forward_hidden(self, new_mask, memory, **inputs)
        finally:
            body.norm = norm

    patch.setattr(ModelWrapper, "_forward_hidden", without_final_norm)


def thoughts_not_norm_matched(patch):
    """h W_a fed as it is, without rescaling to the input embeddings' mean norm."""
    from models import ModelWrapper

    patch.setattr(ModelWrapper, "realign", lambda self, hidden: hidden.float() @ self.realignment()[0])


def input_memory_mutated(patch):
    """Forwards extend the caller's memory in place instead of a copy (one memory can no longer feed several
    continuations: the hierarchical judger, the ablations)."""
    from models import ModelWrapper

    patch.setattr(ModelWrapper, "_own", lambda self, memory: memory)


def eos_not_counted(patch):
    """Output token counts stop before the EOS token instead of including it."""
    from models import ModelWrapper

    finish = ModelWrapper._finish

    def finish_without_eos(self, generated, eos):
        result = finish(self, generated, eos)
        ends = set(eos.tolist())
        result.num_tokens = [n - 1 if ids and ids[-1] in ends else n
                             for n, ids in zip(result.num_tokens, result.token_ids)]
        return result

    patch.setattr(ModelWrapper, "_finish", finish_without_eos)


# ------------------------------------------------------------------------------------------------------ methods

def judger_without_memory(patch):
    """The judger decodes from its prompt alone (the reference with latent_steps = 0)."""
    from methods.base import Method
    from methods.latent_mas import LatentMASMethod

    patch.setattr(LatentMASMethod, "generate", lambda self, prompts, streams, memory=None, roles=():
                  Method.generate(self, prompts, streams, None, roles))


def text_mas_without_earlier_outputs(patch):
    from methods.text_mas import TextMASMethod

    patch.setattr(TextMASMethod, "_context", lambda self, entries: "")


def specialists_see_each_other(patch):
    """--hierarchy parallel planned as the chain: each specialist runs on the previous ones' work."""
    import methods.base
    import methods.text_mas
    import topology

    chain = lambda topology_name, hierarchy="chain", **kwargs: topology.make_plan(topology_name, "chain", **kwargs)
    for module in (methods.base, methods.text_mas):  # the modules that build plans (make_plan looked up per call)
        patch.setattr(module, "make_plan", chain)


def ablation_trims_ignored(patch):
    """--latent_only / --sequential_info_only keep the whole memory (the plan's keep read as "all")."""
    import topology

    after_stage = topology.after_stage
    patch.setattr(topology, "after_stage", lambda keep, *args: after_stage("all", *args))


def resume_repeats_an_item(patch):
    """--resume forgets the last finished item and runs it again (an off-by-one in what is already done)."""
    import methods.runner as runner

    run_method = runner.run_method

    def forgetful(method, task, items, done, *args, **kwargs):
        return run_method(method, task, items, set(sorted(done)[:-1]), *args, **kwargs)

    patch.setattr(runner, "run_method", forgetful)


# ------------------------------------------------------------------------------------------ scoring and sandbox

def first_boxed(patch):
    r"""The scorer reads the first \boxed{} of the output instead of the last."""
    import utils

    last_boxed = utils.last_boxed

    def first(text):
        if text:
            starts = [m.start() for m in re.finditer(r"\\(?:boxed|fbox)", text)]
            text = text[:starts[1]] if len(starts) > 1 else text
        return last_boxed(text)

    patch.setattr(utils, "last_boxed", first)


def thousands_separator_cuts_numbers(patch):
    """Numbers read up to their first comma: "#### 2,125" becomes 2 (the reference's GSM8K gold regex)."""
    import utils

    parse_number = utils.parse_number
    patch.setattr(utils, "parse_number", lambda text: parse_number(text.split(",")[0] if text else text))


def unboxed_choice_lost(patch):
    """A multiple-choice answer counts only inside \\boxed{} (the reference lost "The answer is (C).")."""
    import utils

    with_rule = utils.extract_choice_with_rule

    def boxed_only(text, letters="ABCD", options=None):
        found = with_rule(text, letters, options)
        return found if found.rule == "choice_boxed" else utils.Extraction(None, "none")

    patch.setattr(utils, "extract_choice_with_rule", boxed_only)


def sandbox_passes_on_exit_code_zero(patch):
    """A sandboxed program passes on exit code 0 alone, so sys.exit(0) before its tests passes them."""
    import sandbox

    class ExitCodeIsEnough(sandbox.SandboxResult):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.ok = self.ok or (self.returncode == 0 and not self.timed_out)

    patch.setattr(sandbox, "SandboxResult", ExitCodeIsEnough)


def thinking_not_stripped(patch):
    """The answer read from the whole output, thinking included: a box inside the thinking wins over the final
    answer, and thinking cut off at the budget is credited from the last number it mentioned."""
    import dataclasses

    import data
    import utils

    read = utils.read_output
    patch.setattr(data, "read_output", lambda text, prompt="", cut_at_budget=False, whole_text=False:
                  dataclasses.replace(read(text, prompt, cut_at_budget, whole_text), answer_text=text or ""))


def budget_cut_outputs_credited(patch):
    """The last-number / last-line / bold-letter fallbacks also credit outputs cut at the token budget."""
    import utils

    patch.setattr(utils.Reading, "fallbacks_allowed", property(lambda self: True))


def harness_reachable_by_the_candidate(patch):
    """Candidate and tests run as one program (the reference's way), so the candidate can rebind what the tests
    use: every harness is taken for one of plain asserts."""
    import code_check

    patch.setattr(code_check, "parse_harness", lambda tests: None)


# ------------------------------------------------------------------------------- the paper's experimental setting

def one_stream_for_all_rows(patch):
    """Every row of a batch draws from one random stream (the first row's), so what an item samples depends on the
    rows around it and on the batch size."""
    import models

    pick = models.pick_tokens
    patch.setattr(models, "pick_tokens", lambda scores, do_sample, generators=None:
                  pick(scores, do_sample, None if generators is None else [generators[0]] * len(generators)))


def thinking_forced_off(patch):
    """Every prompt rendered in the template's non-thinking mode (Qwen3's empty think block), whatever was asked."""
    from models import ModelWrapper

    patch.setattr(ModelWrapper, "render_chat", lambda self, messages: self.tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True, enable_thinking=False))


def realignment_over_padded_rows(patch):
    """W_a and the norm target computed over every embedding row, the never-trained padding rows included."""
    from models import ModelWrapper

    patch.setattr(ModelWrapper, "real_vocab_size",
                  lambda self: min(self.model.get_output_embeddings().weight.shape[0],
                                   self.model.get_input_embeddings().weight.shape[0]))


def generation_config_ignored(patch):
    """Sampling from the flags alone: the model's top_k (Qwen3: 20), min_p and the like are dropped."""
    from transformers import GenerationConfig

    from models import ModelWrapper

    def flags_only(self, temperature=0.0, top_p=None, top_k=None):
        flags = {"do_sample": temperature > 0}
        if temperature > 0:
            flags.update(temperature=temperature, top_p=top_p, top_k=top_k or 0)
        return GenerationConfig(**flags)

    patch.setattr(ModelWrapper, "sampling_config", flags_only)


def think_token_dropped(patch):
    """--think does nothing: no think-opening token after the latent_mas agents' prompts."""
    from methods.base import Method

    patch.setattr(Method, "prompt_suffix", property(lambda self: ""))


# -------------------------------------------------------------------------------------------------- test models

def constant_tiny_model(patch):
    """The tied tiny Qwen3 that wrote "\\n\\n" whatever the prompt: the output guard must fail text tests on it.
    (Its catchers must build their model in the test, make_tiny_wrapper: tiny_model_dir is built once a session.)"""
    import tiny_model

    patch.setattr(tiny_model, "TIE", True)


# ------------------------------------------------------------------------------------------------ prompts

def answer_format_with_an_example_answer(patch):
    """The old format line: an example value ("e.g. \\boxed{42}", "\\boxed{B}") that small models copy."""
    import prompts

    formats = dict(prompts.ANSWER_FORMATS)
    formats["number"] = formats["number"].rstrip(".") + ", e.g. \\boxed{42}."
    formats["choice"] = formats["choice"].rstrip(".") + ", e.g. \\boxed{B}."
    patch.setattr(prompts, "ANSWER_FORMATS", formats)



# ------------------------------------------------------------------------------------------- settings reach the run

def ridge_lambda_never_reaches_the_realignment(patch):
    """The realignment solved with the default ridge penalty whatever --realign_lambda says."""
    import flags
    import models

    solve = models.ridge_realignment
    patch.setattr(models, "ridge_realignment", lambda chunks, lam: solve(chunks, flags.default("realign_lambda")))


def text_mas_context_keeps_the_start(patch):
    """--text_mas_context_length keeps the first tokens of the earlier work instead of the most recent ones."""
    from methods.text_mas import TextMASMethod

    def context(self, entries):
        text = "\n\n".join(f"[{name}]\n{output.strip()}" for name, output in entries)
        limit = self.settings.text_mas_context_length
        if limit > 0 and text:
            ids = self.model.tokenizer(text, add_special_tokens=False)["input_ids"]
            text = self.model.tokenizer.decode(ids[:limit])
        return text

    patch.setattr(TextMASMethod, "_context", context)


# Field of the methods' settings for a flag, where the names differ.
METHOD_FIELD = {"prompt": "topology"}


def setting_ignored(name: str):
    """A fault for one result-changing setting read by the methods: the setting keeps its default (flags.py) whatever
    the run asks for."""
    def apply(patch):
        import flags
        from methods.base import MethodSettings

        init, field = MethodSettings.__init__, METHOD_FIELD.get(name, name)

        def ignoring(self, *args, **kwargs):
            init(self, *args, **kwargs)
            object.__setattr__(self, field, flags.default(name))

        patch.setattr(MethodSettings, "__init__", ignoring)

    apply.__doc__ = f"--{name} never reaches the methods"
    return apply


def setting_faults() -> list[Fault]:
    """One "ignored" fault per result-changing setting of flags.py that the methods read and whose default is a
    value (not "resolved later"), each caught by its probe in tests/test_settings.py: the configuration's list drives
    them, so a new result-changing setting of the methods gets its fault without an entry here."""
    import dataclasses

    import flags
    from methods.base import MethodSettings

    fields = {f.name for f in dataclasses.fields(MethodSettings)}
    return [Fault(f"--{name} ignored (keeps its default)", setting_ignored(name),
                  (f"tests/test_settings.py::test_result_setting_changes_the_run[{name}]",))
            for name in flags.RESULT_SCOPES
            if METHOD_FIELD.get(name, name) in fields and flags.default(name) is not None
            and not isinstance(flags.default(name), list)]

# ------------------------------------------------------------------------------------------------- the engines

def vllm_judger_in_reference_layout(patch):
    """The vLLM judger always re-prefilled in the reference's splice, where the `kv` layout is exact."""
    import vllm_backend

    patch.setattr(vllm_backend, "judger_layout", lambda requested, exact: "reference")


def vllm_rows_unseeded(patch):
    """vLLM requests sent without their rows' stream seeds: what a row samples depends on its batch."""
    from vllm_backend import VLLMEngine

    params = VLLMEngine._params
    patch.setattr(VLLMEngine, "_params", lambda self, rows, max_new_tokens, sampling, streams:
                  params(self, rows, max_new_tokens, sampling, None))


def vllm_greedy_sampled(patch):
    """vLLM handed other sampling values than the run's: greedy decoding sent as sampling at temperature 1."""
    import vllm_backend

    values = vllm_backend.vllm_sampling_values
    patch.setattr(vllm_backend, "vllm_sampling_values", lambda config: {**values(config), "temperature": 1.0}
                  if config is None or not config.do_sample else values(config))


FAULTS = [
    Fault("memory mask all ones (the reference's padding bug)", memory_mask_all_ones, (
        "tests/test_cli.py::test_batch_size_does_not_change_greedy_outputs[sequential]",
        "tests/test_latent_core.py::test_batch_invariance_three_agents_and_judger[True]")),
    Fault("judger given no memory", judger_without_memory, (
        "tests/test_methods.py::test_judger_always_gets_the_memory[0]",
        "tests/test_methods.py::test_judger_always_gets_the_memory[3]")),
    Fault("positions not continued per row across agents", positions_not_continued_per_row, (
        "tests/test_latent_core.py::test_batch_invariance_three_agents_and_judger[False]",
        "tests/test_cli.py::test_batch_size_does_not_change_greedy_outputs[hierarchical]")),
    Fault("text_mas agents not given earlier outputs", text_mas_without_earlier_outputs, (
        "tests/test_methods.py::test_text_mas_sequential_pastes_earlier_outputs",)),
    Fault("hierarchical specialists seeing each other", specialists_see_each_other, (
        "tests/test_methods.py::test_text_mas_hierarchical_specialists_do_not_see_each_other",
        "tests/test_methods.py::test_latent_hierarchical_specialists_start_from_the_question_alone")),
    Fault("latent step fed the hidden state before the final norm", pre_norm_hidden_state, (
        "tests/test_latent_core.py::test_latent_thoughts_come_from_the_state_the_lm_head_reads",)),
    Fault("scorer reading the first \\boxed{} instead of the last", first_boxed, (
        "tests/test_scoring.py::test_number[First \\\\boxed{3}, then corrected: \\\\boxed{4}-4-4-True]",)),
    Fault("sandboxed program passing by sys.exit(0) before its tests", sandbox_passes_on_exit_code_zero, (
        "tests/test_sandbox.py::test_exit_before_the_tests[sys.exit]",)),
    Fault("resumed run repeating an item", resume_repeats_an_item, (
        "tests/test_cli.py::test_killed_run_resumes_without_loss_or_duplicates",)),
    # Beyond the list: defects this code could plausibly regress into.
    Fault("right padding (hidden states read at pads)", right_padding, (
        "tests/test_latent_core.py::test_generate_is_batch_invariant_and_counts_tokens",)),
    Fault("thoughts not rescaled to the embedding norm", thoughts_not_norm_matched, (
        "tests/test_latent_core.py::test_tied_embeddings_give_identity_and_norms_match",)),
    Fault("forwards mutate the caller's memory", input_memory_mutated, (
        "tests/test_latent_core.py::test_inputs_memory_is_not_mutated",)),
    Fault("EOS not counted as an output token", eos_not_counted, (
        "tests/test_latent_core.py::test_generation_stops_at_eos_and_counts_it",)),
    Fault("ablations keep the whole memory", ablation_trims_ignored, (
        "tests/test_methods.py::test_ablations_trim_the_memory",)),
    Fault("numbers cut at a thousands separator", thousands_separator_cuts_numbers, (
        "tests/test_scoring.py::test_reference_helpers",)),
    Fault("multiple-choice answer without a box lost", unboxed_choice_lost, (
        "tests/test_scoring.py::test_choice[The answer is (C).-C]",)),
    Fault("one random stream shared by all rows", one_stream_for_all_rows, (
        "tests/test_fidelity.py::test_sampled_outputs_do_not_depend_on_batching[latent_mas-sequential-chain]",
        "tests/test_fidelity.py::test_sampled_outputs_do_not_depend_on_batching[baseline-sequential-chain]")),
    Fault("thinking mode forced off", thinking_forced_off, (
        "tests/test_fidelity.py::test_default_prompts_are_the_templates_own_rendering[baseline-sequential-chain]",)),
    Fault("realignment over the padded rows", realignment_over_padded_rows, (
        "tests/test_fidelity.py::test_padded_embedding_rows_do_not_move_the_realignment[True]",
        "tests/test_latent_core.py::test_realignment_solves_the_normal_equations")),
    Fault("the model's generation config ignored in sampling", generation_config_ignored, (
        "tests/test_fidelity.py::test_sampling_config_merges_flags_over_the_generation_config",)),
    Fault("--think token not appended to latent_mas prompts", think_token_dropped, (
        "tests/test_fidelity.py::test_think_adds_exactly_the_think_token_to_latent_mas_agents"
        "[latent_mas-sequential-chain]",)),
    Fault("thinking not stripped before scoring", thinking_not_stripped, (
        "tests/test_scoring.py::test_what_is_read[box inside the thinking]",
        "tests/test_scoring.py::test_what_is_read[thinking ended without closing]")),
    Fault("outputs cut at the token budget credited by a fallback", budget_cut_outputs_credited, (
        "tests/test_scoring.py::test_what_is_read[cut mid-sentence]",
        "tests/test_scoring.py::test_records_carry_thinking_and_the_budget_cut_and_summary_counts_cuts")),
    Fault("test harness reachable by the candidate", harness_reachable_by_the_candidate, (
        "tests/test_scoring.py::test_the_harness_is_out_of_the_candidates_reach[comparison helper rebound]",
        "tests/test_scoring.py::test_the_harness_is_out_of_the_candidates_reach[builtin zip rebound]")),
    Fault("tiny model with constant outputs (tied embeddings)", constant_tiny_model, (
        "tests/test_api.py::test_same_model_hierarchical_equals_method",)),
    Fault("answer format with an example answer", answer_format_with_an_example_answer, (
        "tests/test_prompts.py::test_no_prompt_holds_an_answer_the_scorer_accepts[gsm8k]",
        "tests/test_prompts.py::test_no_prompt_holds_an_answer_the_scorer_accepts[gpqa]")),
    Fault("ridge lambda never reaches the realignment", ridge_lambda_never_reaches_the_realignment, (
        "tests/test_settings.py::test_result_setting_changes_the_run[realign_lambda]",)),
    Fault("text_mas context limit keeps the start of the earlier work", text_mas_context_keeps_the_start, (
        "tests/test_settings.py::test_result_setting_changes_the_run[text_mas_context_length]",)),
    *setting_faults(),
    Fault("vLLM judger in the reference layout where kv is exact", vllm_judger_in_reference_layout, (
        "tests/test_vllm_backend.py::test_kv_layout_replays_the_kv_hand_off[sequential]",), (
        "tests/test_vllm_backend.py::test_vllm_kv_layout_judger_equals_the_hf_kv_path[sequential]",)),
    Fault("vLLM rows sent without their stream seeds", vllm_rows_unseeded, (
        "tests/test_vllm_backend.py::test_vllm_engine_calls_and_conversions",), (
        "tests/test_vllm_backend.py::test_vllm_sampled_rows_do_not_depend_on_batching",)),
    Fault("vLLM greedy decoding sent as sampling", vllm_greedy_sampled, (
        "tests/test_vllm_backend.py::test_vllm_engine_calls_and_conversions",), (
        "tests/test_vllm_backend.py::test_vllm_decodes_token_prompts_like_hf[baseline]",)),
]

BY_NAME = {fault.name: fault for fault in FAULTS}
TABLE: list[str] = []  # the last table tests/test_faults.py made, printed at the end of the session (conftest.py)


def apply(name: str, patch) -> None:
    BY_NAME[name].apply(patch)
