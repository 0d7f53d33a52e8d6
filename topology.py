"""Topologies as data: which agents run, in which order, what each one reads and what is kept after it.

A `Plan` is a list of stages. The agents of one stage run side by side from the same input (one batched rollout
or decode over (agent, item) rows) and never see each other; every stage reads what the stages before it kept;
the last stage is the one agent that writes the answer. `Plan.keep` says what a thinking stage leaves behind:
"all" (the memory grows), "latent" (only the stage's latent steps: --latent_only) or "own" (only the stage's own
positions, prompt and latent steps: --sequential_info_only).

Every executor walks a plan with `walk` and its own `StageOps` (what a memory is, how an agent's part is cut out,
how parts are joined): the HF KV hand-off and the vLLM embeddings splice (methods/latent_mas.py), the KV
estimator (`KVShape` here), text_mas (earlier outputs as text) and the mixed-model API (latentmas.py). Adding a
topology means adding a plan in `make_plan`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Generic, Sequence, TypeVar

# Role names per topology: (thinking agents, final agent). Prompts for each role live in prompts.py.
ROLES: dict[str, tuple[tuple[str, ...], str]] = {
    "sequential": (("planner", "critic", "refiner"), "judger"),
    "hierarchical": (("math", "science", "code"), "summarizer"),
}
HIERARCHIES = ("chain", "parallel")


@dataclass(frozen=True)
class Plan:
    stages: tuple[tuple[str, ...], ...]  # roles per stage, in order; the last stage is one role, the answer
    keep: str = "all"                    # what a thinking stage leaves: "all" | "latent" | "own"

    @property
    def thinking_stages(self) -> tuple[tuple[str, ...], ...]:
        return self.stages[:-1]

    @property
    def workers(self) -> list[str]:
        return [role for stage in self.thinking_stages for role in stage]

    @property
    def final_role(self) -> str:
        return self.stages[-1][0]


def make_plan(topology: str, hierarchy: str = "chain", *, latent_only: bool = False,
              sequential_info_only: bool = False, roles: tuple[Sequence[str], str] | None = None) -> Plan:
    """The plan of a topology. sequential: planner -> critic -> refiner -> judger, one stage each. hierarchical:
    "chain" runs the specialists one stage each (the reference's, behind the published numbers); "parallel" runs
    them as one stage (the paper's Figure 2). roles: (thinkers, final) replacing the topology's role names."""
    if topology not in ROLES:
        raise ValueError(f"unknown topology {topology!r}; known: {sorted(ROLES)}")
    if hierarchy not in HIERARCHIES:
        raise ValueError(f"unknown hierarchy {hierarchy!r}; known: {HIERARCHIES}")
    workers, final = roles if roles is not None else ROLES[topology]
    parallel = topology == "hierarchical" and hierarchy == "parallel"
    thinking = (tuple(workers),) if parallel and workers else tuple((role,) for role in workers)
    keep = "latent" if latent_only else "own" if sequential_info_only else "all"
    return Plan(thinking + ((final,),), keep)


M = TypeVar("M")


class StageOps(Generic[M]):
    """What a memory is for one executor. `own(part, added)`: the positions one agent appended to its part (its
    memory after the stage: what it read + `added` new positions); `latent(part)`: its latent steps only (None when
    there are none); `join(memories)`: memories of the same rows side by side."""

    def own(self, part: M, added: int) -> M:
        raise NotImplementedError

    def latent(self, part: M) -> M | None:
        raise NotImplementedError

    def join(self, memories: list[M]) -> M:
        raise NotImplementedError


def after_stage(keep: str, before: M | None, parts: list[M], added: list[int], ops: StageOps[M]) -> M | None:
    """What a thinking stage leaves for the stages after it, from each agent's part (before + its positions)."""
    if keep == "all" and len(parts) == 1:
        return parts[0]  # one agent continuing the memory: nothing to cut out or join
    if keep == "latent":
        kept = [ops.latent(part) for part in parts]
    else:  # "all" and "own": each agent's own positions (the whole part when nothing came before)
        kept = [part if before is None else ops.own(part, n) for part, n in zip(parts, added)]
    if keep == "all" and before is not None:
        kept.insert(0, before)
    kept = [k for k in kept if k is not None]
    return ops.join(kept) if kept else None


def walk(plan: Plan, rollout: Callable[[tuple[str, ...], M | None], tuple[list[M], list[int]]],
         ops: StageOps[M], observe: Callable[[tuple[str, ...], M | None], None] | None = None) -> M | None:
    """Run the thinking stages of `plan`. rollout(stage roles, memory read) -> (one part per role, positions each
    appended); observe(stage roles, memory kept), if given, after every stage. Returns the memory the final agent
    reads (None: nothing)."""
    memory: M | None = None
    for roles in plan.thinking_stages:
        parts, added = rollout(roles, memory)
        memory = after_stage(plan.keep, memory, parts, added, ops)
        if observe is not None:
            observe(roles, memory)
    return memory


# ------------------------------------------------------------------------------------------- the KV estimator

@dataclass(frozen=True)
class KVShape:
    """A memory's shape without tensors: its segments in order, each (padded width, real positions per row)."""

    segments: tuple[tuple[int, tuple[int, ...]], ...]

    @property
    def length(self) -> int:
        return sum(width for width, _ in self.segments)

    def real(self, rows: int) -> list[int]:
        return [sum(real[r] for _, real in self.segments) for r in range(rows)]

    def extend(self, width: int, real: Sequence[int]) -> "KVShape":
        return KVShape(self.segments + ((width, tuple(real)),))

    def last(self, k: int) -> "KVShape | None":
        """The last k columns: whole segments, then the real tail of a left-padded one."""
        kept, left = [], k
        for width, real in reversed(self.segments):
            if left <= 0:
                break
            take = min(width, left)
            kept.append((take, tuple(min(r, take) for r in real)))
            left -= take
        return KVShape(tuple(reversed(kept))) if kept else None


class KVShapeOps(StageOps[KVShape]):
    def __init__(self, latent_steps: int) -> None:
        self.latent_steps = latent_steps

    def own(self, part: KVShape, added: int) -> KVShape:
        return part.last(added)

    def latent(self, part: KVShape) -> KVShape | None:
        return part.last(self.latent_steps)

    def join(self, memories: list[KVShape]) -> KVShape:
        return KVShape(tuple(seg for m in memories for seg in m.segments))


EMPTY = KVShape(())
