"""Device choice and per-sample generators."""

import pytest
import torch

from polydiff.core.runtime import DeviceError, generators, randn, resolve_device, seed_everything


def test_per_sample_generators_make_samples_independent_of_batch():
    big = randn((5, 3, 4), generator=generators(11, 5))
    small = randn((2, 3, 4), generator=generators(11, 2))
    assert torch.equal(big[:2], small)
    assert not torch.equal(big[0], big[1])


def test_generator_count_must_match_batch():
    with pytest.raises(ValueError, match="3 generators for a batch of 2"):
        randn((2, 4), generator=generators(0, 3))


def test_seed_everything_repeats_global_streams():
    seed_everything(3)
    a = torch.randn(6)
    seed_everything(3)
    assert torch.equal(a, torch.randn(6))


def test_device_resolution():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(None).type in ("cpu", "cuda", "mps")
    with pytest.raises(DeviceError, match="unknown device"):
        resolve_device("tpu7")
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="use --device cpu"):
            resolve_device("cuda")


def test_atomic_write_gives_a_normal_mode_and_leaves_nothing_on_failure(tmp_path):
    import os

    from polydiff.core.runtime import atomic_write

    umask = os.umask(0o022)
    try:
        out = atomic_write(tmp_path / "sub" / "a.npz", lambda tmp: tmp.write_bytes(b"abc"))
        assert out.read_bytes() == b"abc" and (out.stat().st_mode & 0o777) == 0o644   # not mkstemp's 0600

        def fail(tmp):
            tmp.write_bytes(b"half")
            raise RuntimeError("boom")

        with pytest.raises(RuntimeError, match="boom"):
            atomic_write(out, fail)
    finally:
        os.umask(umask)
    assert out.read_bytes() == b"abc" and sorted(p.name for p in out.parent.iterdir()) == ["a.npz"]
