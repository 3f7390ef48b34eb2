"""Our contrastive evaluator's metrics against closed forms: R-precision of perfect and of
unrelated embeddings, the Frechet distance of identical and of shifted Gaussian sets, and the encoder's padding mask."""

import numpy as np
import torch
from polydiff.motion.evaluator import MotionTextEvaluator, frechet_distance, r_precision


def test_r_precision_bounds():
    rng = np.random.default_rng(0)
    e = rng.standard_normal((64, 8))
    assert np.allclose(r_precision(e, e), 1.0)            # every motion is nearest to its own caption
    # captions unrelated to the motions: top-k is chance, k / 32
    chance = r_precision(rng.standard_normal((3000, 8)), rng.standard_normal((3000, 8)))
    assert np.allclose(chance, np.arange(1, 4) / 32, atol=0.015)


def test_frechet_distance_closed_form():
    rng = np.random.default_rng(1)
    a = rng.standard_normal((4000, 3))
    assert abs(frechet_distance(a, a)) < 1e-8
    shift = np.array([1.0, -2.0, 0.5])
    # same covariance, shifted mean: the distance is |shift|^2 exactly
    assert abs(frechet_distance(a, a + shift) - (shift**2).sum()) < 1e-6


def test_motion_encoder_ignores_padding():
    torch.manual_seed(0)
    ev = MotionTextEvaluator(dim=16, embed_dim=8).eval()
    x = torch.randn(1, 24, 263)
    padded = torch.cat([x, torch.randn(1, 8, 263) * 100], dim=1)
    mask = torch.arange(32)[None] < 24
    with torch.no_grad():
        a, b = ev.encode_motion(x), ev.encode_motion(padded, mask)
    assert torch.allclose(a, b, atol=1e-5)
