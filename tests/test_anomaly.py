"""Anomaly scoring: off-mixture points score higher than on-mixture points; AUROC against sklearn."""

import pytest
import torch
from polydiff.core.anomaly import anomaly_scores, auroc
from polydiff.core.testbed import GaussianMixture
from sklearn.metrics import roc_auc_score


pytestmark = pytest.mark.usefixtures("one_thread")


def gen(seed):
    return torch.Generator().manual_seed(seed)


def test_auroc_matches_sklearn_with_ties():
    normal = torch.randint(0, 6, (300,), generator=gen(0)).double()
    anomalous = torch.randint(2, 9, (200,), generator=gen(1)).double()
    labels = [0] * 300 + [1] * 200
    ref = roc_auc_score(labels, torch.cat([normal, anomalous]).numpy())
    assert abs(auroc(normal, anomalous) - ref) < 1e-12
    assert auroc(torch.zeros(3), torch.ones(2)) == 1.0 and auroc(torch.ones(3), torch.ones(2)) == 0.5


def off_mixture_points(mix, n, generator):
    """Uniform points in the mixture's box whose density is far below any mode's."""
    lo, hi = mix.means.min(0).values - 3, mix.means.max(0).values + 3
    pts = lo + (hi - lo) * torch.rand(20 * n, mix.dim, generator=generator, dtype=torch.float64)
    threshold = mix.log_prob(mix.sample(2000, generator)).quantile(0.01)
    return pts[mix.log_prob(pts) < threshold - 3][:n]


@pytest.mark.parametrize("method", [None, "euler"])
def test_off_mixture_points_score_higher(method):
    mix = GaussianMixture.random(2, 5, gen(2), spread=3.0, std_range=(0.15, 0.4))
    normal = mix.sample(300, gen(3))
    anomalous = off_mixture_points(mix, 300, gen(4))
    assert len(anomalous) == 300
    kw = {"sigmas": (0.3, 0.6), "repeats": 2, "method": method, "steps": 4}
    s_normal = anomaly_scores(mix, normal, generator=gen(5), **kw)
    s_anomalous = anomaly_scores(mix, anomalous, generator=gen(6), **kw)
    assert s_normal.error.shape == normal.shape and s_normal.per_level.shape == (2, 300)
    assert torch.allclose(s_normal.score, s_normal.per_level.mean(0))
    assert auroc(s_normal.score, s_anomalous.score) >= 0.95


def test_scores_are_per_sample_with_per_sample_generators():
    mix = GaussianMixture.random(3, 3, gen(7))
    x = mix.sample(5, gen(8))
    both = anomaly_scores(mix, x, sigmas=(0.5,), generator=[gen(10 + i) for i in range(5)]).score
    alone = anomaly_scores(mix, x[2:3], sigmas=(0.5,), generator=[gen(12)]).score
    assert torch.allclose(both[2:3], alone, atol=1e-14)
    with pytest.raises(ValueError, match="positive"):
        anomaly_scores(mix, x, sigmas=(0.0,))
