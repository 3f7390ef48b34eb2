"""DDP on CPU (gloo): a 2-process run under torchrun equals a 1-process run with the same global batch.

The trainer cuts every global batch into per-process micro-batches of one seeded sample stream, so the
2-process run sees exactly the samples of the 1-process run; DDP averages the two halves' gradients,
which is the full batch's mean gradient. The 2-process run also accumulates over 2 micro-steps (micro
batch 4 per process), so DDP's no_sync path is exercised too.
"""

import csv
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.ddp_worker import run

ROOT = Path(__file__).resolve().parents[1]
STEPS, BATCH = 30, 16


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_ddp_matches_one_process(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(free_port()), str(ROOT / "tests" / "ddp_worker.py"),
           str(tmp_path / "ddp"), str(STEPS), str(BATCH), "2"]
    try:
        proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=240)
    except subprocess.TimeoutExpired as err:
        pytest.fail(f"torchrun did not finish in time:\n{err.stdout}\n{err.stderr}")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    single = run(tmp_path / "one", STEPS, BATCH, 1)
    ddp_losses = [float(r["loss"]) for r in csv.DictReader(open(tmp_path / "ddp" / "log.csv"))]
    assert len(ddp_losses) == STEPS
    assert ddp_losses == pytest.approx(single.losses, rel=1e-5, abs=1e-6)
    assert sum(single.losses[-5:]) < 0.25 * sum(single.losses[:5])  # it did train

    name = f"checkpoints/step-{STEPS:09d}"
    ckpt = tmp_path / "ddp" / name
    assert sorted(p.name for p in ckpt.glob("rng-rank*")) == ["rng-rank0.safetensors", "rng-rank1.safetensors"]
    for weights in ("model.safetensors", "ema.safetensors"):
        a, b = load_file(str(ckpt / weights)), load_file(str(tmp_path / "one" / name / weights))
        for k in a:
            torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)
