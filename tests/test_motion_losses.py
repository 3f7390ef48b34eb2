"""Geometric losses: zero at the target, closed forms, masked padding, gradients."""

import numpy as np
import torch
from polydiff.motion import procedural
from polydiff.motion.features import features_to_joints, joints_to_features, mean_std
from polydiff.motion.losses import geometric_losses


def batch():
    rng = np.random.default_rng(0)
    feats = [joints_to_features(procedural.perform([a], rng)[0])[:40] for a in ("walk", "wave")]
    return torch.from_numpy(np.stack(feats)).double(), feats


def test_zero_at_target_and_closed_form_for_a_shift():
    x, _ = batch()
    losses = geometric_losses(x, x)
    assert losses["pos"].item() == 0.0 and losses["vel"].item() == 0.0
    # the foot term is the target's own foot motion on contact frames, which HumanML3D's contact rule
    # bounds: a contact is a squared displacement below 0.002 m^2 per frame
    assert 0.0 <= losses["foot"].item() < 0.002
    # the root height channel moves the root joint only (ric heights are absolute): 1 joint of 22
    # off by 10 cm, velocities unchanged
    y = x.clone()
    y[..., 3] += 0.1
    losses = geometric_losses(y, x)
    assert abs(losses["pos"].item() - 0.01 / 22) < 1e-12
    assert losses["vel"].item() < 1e-20


def test_foot_loss_counts_only_ground_truth_contacts():
    x, _ = batch()
    y = x.clone()
    y[..., 4:67] += 0.01 * torch.randn_like(y[..., 4:67])  # jitter every joint
    with_contacts = geometric_losses(y, x)["foot"].item()
    x_free = x.clone()
    x_free[..., 259:263] = 0.0  # ground truth says no foot is planted
    assert with_contacts > 0 and geometric_losses(y, x_free)["foot"].item() == 0.0


def test_padding_is_ignored_and_normalisation_undone():
    x, feats = batch()
    mask = torch.ones(2, 40, dtype=torch.bool)
    mask[1, 30:] = False
    y = x.clone()
    y[1, 30:] += 5.0  # garbage in padded frames
    a = geometric_losses(y, x, mask)
    b = geometric_losses(x, x, mask)
    assert all(abs(a[k].item() - b[k].item()) < 1e-12 for k in a)
    mean, std = (torch.from_numpy(v).double() for v in mean_std(feats))
    xn, yn = (x - mean) / std, (x.clone() * 1.0 - mean) / std
    yn[..., 3] += 0.1 / std[3]
    assert abs(geometric_losses(yn, xn, mean=mean, std=std)["pos"].item() - 0.01 / 22) < 1e-10


def test_gradients_reach_the_features():
    x, _ = batch()
    y = (x + 0.01 * torch.randn_like(x)).requires_grad_(True)
    loss = sum(geometric_losses(y, x).values())
    loss.backward()
    assert torch.isfinite(y.grad).all() and y.grad[..., :67].abs().sum() > 0
    assert features_to_joints(y).shape == (2, 40, 22, 3)
