"""vLLM's inputs decoded by the HF model: a test twin of vllm_backend.VLLMEngine that needs no vLLM. Token prompts
go to the HF engine as they are; a latent hand-off becomes the prompt embeddings VLLMEngine would send, in the same
judger layout, decoded by ModelWrapper.generate_embeds."""

from engine import HFEngine
from vllm_backend import handoff_embeds


class EmbedsTwin(HFEngine):
    name = "vllm-twin"

    def __init__(self, model, layout=None):
        super().__init__(model)
        self.layout = layout
        self.calls = []  # ("texts", prompts) / ("embeds", [T_i, d] rows)

    def generate(self, prompts, *, handoff=None, **kw):
        if handoff is None:
            self.calls.append(("texts", list(prompts)))
            return super().generate(prompts, **kw)
        rows = handoff_embeds(handoff, prompts, self.layout)
        self.calls.append(("embeds", rows))
        return self.generate_embeds(rows, **kw)
