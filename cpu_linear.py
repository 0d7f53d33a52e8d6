"""CPU small batches: fp32 nn.Linear layers whose 2..64-row inputs are multiplied as W @ x^T (see FewRowsLinear)."""

from __future__ import annotations

import torch


class FewRowsLinear(torch.nn.Linear):
    """nn.Linear that multiplies inputs of 2..MAX_ROWS rows (decode and latent steps of a small batch) as W @ x^T.

    On CPU, MKL's fp32 GEMM for x [M, K] @ W^T with small M > 1 runs 2-3x slower than the same product taken as
    W @ x^T (one Qwen2.5-Coder-0.5B decode step at batch 4, 2-core AVX2 machine: 493 ms -> 267 ms; at batch 1:
    195 ms), which made batching useless on CPU. One row keeps F.linear (bit-identical unbatched runs) and so do
    long segments (prefill), where F.linear is as fast or faster (measured up to 1024 rows)."""

    MAX_ROWS = 64

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.numel() // x.shape[-1]
        if not 1 < rows <= self.MAX_ROWS:
            return super().forward(x)
        y = torch.mm(self.weight, x.reshape(rows, x.shape[-1]).T).T.contiguous()  # [rows, out]
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*x.shape[:-1], self.out_features)


def use_few_rows_linear(model: torch.nn.Module) -> int:
    """Turn the fp32 CPU nn.Linear layers of `model` into FewRowsLinear (same weights, same results up to float
    rounding). Returns how many layers changed."""
    changed = 0
    for module in model.modules():
        if type(module) is torch.nn.Linear and module.weight.device.type == "cpu" \
                and module.weight.dtype == torch.float32:
            module.__class__ = FewRowsLinear
            changed += 1
    return changed


