"""The three methods of the paper, sharing one model wrapper, one prompt book and one trace format."""

from .base import AgentTrace, ItemOutput, Method, MethodSettings
from .baseline import BaselineMethod
from .latent_mas import LatentMASMethod
from .text_mas import TextMASMethod

METHODS: dict[str, type[Method]] = {m.name: m for m in (BaselineMethod, TextMASMethod, LatentMASMethod)}

__all__ = ["METHODS", "AgentTrace", "ItemOutput", "Method", "MethodSettings"]
