"""A tiny regression run through `polydiff.core.train.fit`, launched by tests/test_ddp.py either in
process (1 process) or under `torchrun --nproc_per_node 2` (DDP on CPU with gloo).

    python -m torch.distributed.run --nproc_per_node 2 tests/ddp_worker.py OUT_DIR STEPS BATCH ACCUM
"""

from __future__ import annotations

import sys

import torch

from polydiff.core.checkpoint import ModelMixin
from polydiff.core.train import TrainConfig, fit


class TinyRegressor(ModelMixin):
    def __init__(self, dim: int = 3, hidden: int = 16):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(dim, hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, 1))

    def forward(self, x):  # x: (B, dim) -> (B,)
        return self.net(x).squeeze(-1)


def dataset(n: int = 64, dim: int = 3) -> torch.utils.data.TensorDataset:
    g = torch.Generator().manual_seed(1234)
    x = torch.randn(n, dim, generator=g)
    y = torch.sin(x).sum(-1) + 0.1 * x[:, 0] * x[:, 1]
    return torch.utils.data.TensorDataset(x, y)


def mse(model, batch, generator):
    x, y = batch
    return ((model(x) - y) ** 2).mean()


def run(out_dir, steps: int, batch_size: int, grad_accum: int):
    torch.manual_seed(0)  # the same initial weights in every process and every run
    model = TinyRegressor()
    cfg = TrainConfig(out_dir=str(out_dir), steps=steps, batch_size=batch_size, grad_accum=grad_accum,
                      lr=2e-2, warmup_steps=5, grad_clip=1.0, log_every=1, checkpoint_every=steps,
                      device="cpu", resume="never", ema_decay=0.9)
    return fit(model, dataset(), mse, cfg)


if __name__ == "__main__":
    out, steps, batch, accum = sys.argv[1], *map(int, sys.argv[2:5])
    run(out, steps, batch, accum)
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
