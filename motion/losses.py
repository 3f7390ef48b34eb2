"""Geometric losses on HumanML3D features (MDM, Tevet et al. 2023, section 3): positions, velocities and
foot contact, computed on joints recovered from the features by the differentiable `features_to_joints`.

    L_pos  = mean |J(x_hat) - J(x)|^2                              joint positions
    L_vel  = mean |dJ(x_hat) - dJ(x)|^2                            frame-to-frame joint displacements
    L_foot = mean |J(x_hat)[t+1, f] - J(x_hat)[t, f]|^2 * c_f(t)  predicted feet that move while the
                                                                   ground truth says they are planted
with J the recovered joints (metres), f the four foot joints (left ankle, left toe, right ankle, right
toe) and c_f the ground truth's contact channels. Means run over valid frames only (mask), so padding
never contributes. Inputs may be normalised: pass `mean` / `std` to undo it first.
"""

from __future__ import annotations

import torch

from .features import FOOT_CONTACT, features_to_joints

FOOT_JOINTS = (7, 10, 8, 11)  # the order of the contact channels


def _masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of x (B, T, ...) over entries whose frame is valid in mask (B, T)."""
    m = mask.to(x.dtype).reshape(mask.shape + (1,) * (x.ndim - 2)).expand_as(x)
    return (x * m).sum() / m.sum().clamp_min(1.0)


def geometric_losses(
    pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None, mean=None, std=None
) -> dict[str, torch.Tensor]:
    """pred, target: features (B, T, 263); mask: (B, T) True on real frames. Returns {pos, vel, foot}."""
    if mean is not None:
        mean = torch.as_tensor(mean, dtype=pred.dtype, device=pred.device)
        std = torch.as_tensor(std, dtype=pred.dtype, device=pred.device)
        pred, target = pred * std + mean, target * std + mean
    if mask is None:
        mask = torch.ones(pred.shape[:2], dtype=torch.bool, device=pred.device)
    jp, jt = features_to_joints(pred), features_to_joints(target)  # (B, T, 22, 3)
    pair = mask[:, 1:] & mask[:, :-1]
    vp, vt = jp[:, 1:] - jp[:, :-1], jt[:, 1:] - jt[:, :-1]
    contact = target[:, :-1, FOOT_CONTACT]  # (B, T-1, 4)
    foot_vel = (vp[:, :, list(FOOT_JOINTS)] ** 2).sum(-1)  # (B, T-1, 4)
    return {
        "pos": _masked_mean(((jp - jt) ** 2).sum(-1), mask),
        "vel": _masked_mean(((vp - vt) ** 2).sum(-1), pair),
        "foot": _masked_mean(foot_vel * contact, pair),
    }
