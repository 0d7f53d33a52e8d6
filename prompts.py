"""Role prompts, composed as role x topology x answer format x how earlier work arrives (latent memory or text).

Every text here is model-agnostic. A user can replace any piece with `--prompt_file` (a JSON object with any of
the keys of DEFAULT_PROMPTS; values are format strings using {question}, {context}, {answer_format}) and the system
line with `--system_prompt`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from errors import PromptError

# No example answer: small models copy an example ("e.g. \boxed{42}" was answered 42, and scored right wherever
# the gold is 42). "\boxed{}" alone names the format; copied, it is empty and extracts to nothing the scorers
# accept (tests/test_prompts.py checks every task's extraction on every rendered prompt).
ANSWER_FORMATS = {
    "number": "Reason step by step, then give the final answer as a number inside \\boxed{}.",
    "integer": "Reason step by step, then give the final answer as an integer inside \\boxed{}.",
    "choice": "Reason step by step, then give the letter of the correct option inside \\boxed{}.",
    "code": "Write the complete solution as one Python function in a single ```python code block, "
            "with any imports it needs and no example usage or tests.",
}

DEFAULT_PROMPTS: dict[str, str] = {
    # One system line for every method, so the single agent and the agents of a system differ only in their roles
    # (the single agent is told of no other agents).
    "system": "You are a helpful assistant that solves problems carefully.",
    # How earlier agents' work reaches this agent.
    "latent_context": "The work of the agents before you is already in your memory as latent thoughts, not as text.",
    "text_context": "Here is the work of the agents before you:\n\n{context}",
    # Sequential topology.
    "planner": "You are the Planner. Outline, step by step, how to solve the question below. "
               "Do not solve it and do not state a final answer.\n\nQuestion: {question}",
    "critic": "You are the Critic. Review the plan for this question: point out mistakes, gaps and risky steps, "
              "and say how to fix them. Do not state a final answer.\n\nQuestion: {question}",
    "refiner": "You are the Refiner. Using the plan and the critic's feedback, write an improved, complete plan for "
               "this question. Do not state a final answer.\n\nQuestion: {question}",
    "judger": "You are the Judger. Using the reasoning available to you, solve the question yourself and check it."
              "\n\nQuestion: {question}\n\n{answer_format}",
    # Hierarchical topology: independent specialists, then one summarizer.
    "math": "You are the Math specialist. Analyse the question below with mathematical and quantitative reasoning "
            "and work towards a solution.\n\nQuestion: {question}\n\n{answer_format}",
    "science": "You are the Science specialist. Analyse the question below with scientific and domain knowledge "
               "and work towards a solution.\n\nQuestion: {question}\n\n{answer_format}",
    "code": "You are the Code specialist. Analyse the question below as a programmer would, with precise, "
            "algorithmic reasoning, and work towards a solution.\n\nQuestion: {question}\n\n{answer_format}",
    "summarizer": "You are the Summarizer. Three specialists (math, science, code) analysed the question "
                  "independently. Weigh their work, resolve disagreements, and give the final solution."
                  "\n\nQuestion: {question}\n\n{answer_format}",
    # Single agent.
    "single": "Question: {question}\n\n{answer_format}",
}


@dataclass
class PromptBook:
    """The prompt texts of one run (defaults, overridden by --prompt_file and --system_prompt)."""

    texts: dict[str, str]

    @classmethod
    def load(cls, prompt_file: str | None = None, system_prompt: str | None = None) -> "PromptBook":
        texts = dict(DEFAULT_PROMPTS)
        if prompt_file:
            texts.update(_read_prompt_file(prompt_file))
        if system_prompt is not None:
            texts["system"] = system_prompt
        return cls(texts)

    def messages(self, role: str, question: str, answer_kind: str, context: str | None = None,
                 latent: bool = False) -> list[dict]:
        """Chat messages for one agent.

        context: earlier agents' text (text_mas) or None; latent: earlier work arrives as latent memory.
        """
        fields = {"question": question.strip(), "answer_format": ANSWER_FORMATS[answer_kind], "context": context or ""}
        body = self.texts[role].format(**fields)
        if latent:
            body = self.texts["latent_context"].format(**fields) + "\n\n" + body
        elif context:
            body = self.texts["text_context"].format(**fields) + "\n\n" + body
        return [{"role": "system", "content": self.texts["system"]}, {"role": "user", "content": body}]


def read_json_file(path: str, what: str, error: type[Exception]) -> object:
    """The parsed JSON of a file the user named; missing, unreadable or invalid files raise `error` in one line."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise error(f"{what} {path} not found") from None
    except json.JSONDecodeError as exc:
        raise error(f"{what} {path}: invalid JSON at line {exc.lineno}: {exc.msg}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise error(f"{what} {path}: cannot read it ({type(exc).__name__})") from None


def _read_prompt_file(path: str) -> dict[str, str]:
    raw = read_json_file(path, "prompt file", PromptError)
    if not isinstance(raw, dict) or not all(isinstance(v, str) for v in raw.values()):
        raise PromptError(f"prompt file {path}: expected a JSON object mapping role names to strings")
    unknown = sorted(set(raw) - set(DEFAULT_PROMPTS))
    if unknown:
        raise PromptError(f"prompt file {path}: unknown keys {unknown}; known: {sorted(DEFAULT_PROMPTS)}")
    for key, text in raw.items():
        try:
            text.format(question="", context="", answer_format="")
        except (KeyError, IndexError, ValueError) as exc:
            raise PromptError(f"prompt file {path}: key '{key}' has a bad placeholder ({exc}); "
                              "use {question}, {context}, {answer_format} and {{ }} for braces") from None
        if "{question}" in DEFAULT_PROMPTS[key] and "{question}" not in text:  # an agent's prompt: else it runs blind
            raise PromptError(f"prompt file {path}: key '{key}' has no {{question}}: the agent would never see the "
                              "question")
    return raw
