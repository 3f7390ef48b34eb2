"""Forward and inverse kinematics on the 22-joint skeleton (SMPL / BVH convention).

A local rotation belongs to a joint and turns everything below it: with `G` the global rotations,
`G[j] = G[parent] @ L[j]` and `p[j] = p[parent] + G[parent] @ offsets[j]`, root `p[0] = root_pos`,
`G[0] = L[0]`. This is the convention of SMPL pose parameters and of BVH files (and differs from the
per-bone rotations inside HumanML3D's features, see features.py).

Inverse kinematics (joint positions -> local rotations), used for export:
1. analytic, joint by joint from the root: a joint with several children (pelvis, spine3) takes the
   least-squares rotation of its children's rest offsets onto the observed ones (Kabsch); a joint with
   one child takes the shortest-arc swing of its bone relative to its parent's frame, so the parent's
   twist is carried down the chain; hips and shoulders instead choose the twist that puts the knee /
   elbow bend in its hinge plane (with a small bias towards the rest bend direction so a straight limb
   has a continuous twist);
2. a few Adam steps on the FK position error, which matter only when the joints are not a rigid motion
   of the skeleton (generated joints whose bone lengths wander).
On joints produced by FK of this skeleton step 1 is already exact (to float64 round-off).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from . import skeleton as sk
from .rotations import axis_angle_to_matrix

# The direction the grandchild bends towards in the rest frame (knee: shin goes back; elbow: forearm
# goes forward); defines the hinge axis of hips and shoulders.
_HINGE_HINT = {1: (0.0, 0.0, -1.0), 2: (0.0, 0.0, -1.0), 16: (0.0, 0.0, 1.0), 17: (0.0, 0.0, 1.0)}
_HINT_WEIGHT = 0.05


def _as_tensor(x, dtype=None, device=None) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.to(dtype=dtype or x.dtype, device=device or x.device)
    return torch.as_tensor(np.asarray(x), dtype=dtype or torch.float64, device=device)


def forward_kinematics(
    local_rot: torch.Tensor,
    root_pos: torch.Tensor,
    offsets=None,
    parents=sk.PARENTS,
    return_global: bool = False,
):
    """Joint positions from local rotations.

    local_rot: (..., J, 3, 3); root_pos: (..., 3); offsets: (J, 3) or (..., J, 3), default the rest
    offsets of `skeleton.OFFSETS`. Returns joints (..., J, 3) [and global rotations (..., J, 3, 3)].
    """
    offsets = _as_tensor(sk.OFFSETS if offsets is None else offsets, local_rot.dtype, local_rot.device)
    glob = [local_rot[..., 0, :, :]]
    pos = [root_pos]
    for j in range(1, len(parents)):
        p = parents[j]
        pos.append(pos[p] + (glob[p] @ offsets[..., j, :, None])[..., 0])
        glob.append(glob[p] @ local_rot[..., j, :, :])
    joints = torch.stack(pos, dim=-2)
    return (joints, torch.stack(glob, dim=-3)) if return_global else joints


def _kabsch(src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """Rotation R minimising sum |R src_k - dst_k|^2; src, dst: (..., K, 3) -> (..., 3, 3)."""
    h = dst.transpose(-1, -2) @ src  # (..., 3, 3) = sum_k dst_k src_k^T
    u, _, vh = torch.linalg.svd(h)
    d = torch.sign(torch.linalg.det(u @ vh))
    diag = torch.ones_like(u[..., 0])
    diag = torch.cat([diag[..., :2], d[..., None]], dim=-1)
    return u @ torch.diag_embed(diag) @ vh


def _swing(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Shortest-arc rotation matrix taking direction a to direction b: (..., 3) -> (..., 3, 3)."""
    a = F.normalize(a, dim=-1, eps=1e-12)
    b = F.normalize(b, dim=-1, eps=1e-12)
    v = torch.cross(a, b, dim=-1)
    c = (a * b).sum(-1)
    zero = torch.zeros_like(c)
    vx = torch.stack(
        [zero, -v[..., 2], v[..., 1], v[..., 2], zero, -v[..., 0], -v[..., 1], v[..., 0], zero], dim=-1
    ).reshape(v.shape[:-1] + (3, 3))
    eye = torch.eye(3, dtype=a.dtype, device=a.device).expand_as(vx)
    # Rodrigues with (1 - c) / s^2 = 1 / (1 + c); near c = -1 fall back to a half turn about any normal
    r = eye + vx + vx @ vx / (1.0 + c).clamp_min(1e-9)[..., None, None]
    perp = torch.cross(a, torch.tensor([1.0, 0.0, 0.0], dtype=a.dtype, device=a.device).expand_as(a), dim=-1)
    perp2 = torch.cross(a, torch.tensor([0.0, 1.0, 0.0], dtype=a.dtype, device=a.device).expand_as(a), dim=-1)
    perp = F.normalize(torch.where(perp.norm(dim=-1, keepdim=True) > 1e-6, perp, perp2), dim=-1)
    half_turn = 2.0 * perp[..., :, None] * perp[..., None, :] - eye
    return torch.where((c < -1 + 1e-9)[..., None, None], half_turn, r)


def _frame(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Orthonormal frame with columns (x, y', x cross y'), y' = y made perpendicular to x."""
    x = F.normalize(x, dim=-1, eps=1e-12)
    y = F.normalize(y - (x * y).sum(-1, keepdim=True) * x, dim=-1, eps=1e-12)
    return torch.stack([x, y, torch.cross(x, y, dim=-1)], dim=-1)


def analytic_ik(joints: torch.Tensor, offsets=None) -> torch.Tensor:
    """Local rotations (..., 22, 3, 3) from joint positions (..., 22, 3); see the module docstring."""
    offsets = _as_tensor(sk.OFFSETS if offsets is None else offsets, joints.dtype, joints.device)
    parents, children = sk.PARENTS, sk.CHILDREN
    glob: list[torch.Tensor] = [None] * len(parents)  # type: ignore[list-item]
    for j in range(len(parents)):
        kids = children[j]
        par = glob[parents[j]] if parents[j] >= 0 else None
        if len(kids) >= 2 or par is None:
            src = torch.stack([offsets[..., c, :].expand_as(joints[..., c, :]) for c in kids], dim=-2)
            dst = torch.stack([joints[..., c, :] - joints[..., j, :] for c in kids], dim=-2)
            glob[j] = _kabsch(src, dst)
            continue
        if not kids:
            glob[j] = par
            continue
        c = kids[0]
        rest = (par @ offsets[..., c, :, None])[..., 0]
        seen = joints[..., c, :] - joints[..., j, :]
        swing = _swing(rest, seen)
        if j in _HINGE_HINT:
            g = children[c][0]
            hint0 = (par @ torch.tensor(_HINGE_HINT[j], dtype=joints.dtype, device=joints.device)[:, None])[
                ..., 0
            ]
            rest_bend = (par @ offsets[..., g, :, None])[..., 0]
            n_rest = torch.cross(rest, F.normalize(rest_bend, dim=-1) + _HINT_WEIGHT * hint0, dim=-1)
            bend = F.normalize(joints[..., g, :] - joints[..., c, :], dim=-1, eps=1e-12)
            hint = (swing @ hint0[..., None])[..., 0]
            n_seen = torch.cross(seen, bend + _HINT_WEIGHT * hint, dim=-1)
            glob[j] = _frame(seen, n_seen) @ _frame(rest, n_rest).transpose(-1, -2) @ par
        else:
            glob[j] = swing @ par
    glob_t = torch.stack(glob, dim=-3)
    par_t = torch.stack([glob[max(p, 0)] for p in parents], dim=-3)
    local = par_t.transpose(-1, -2) @ glob_t
    return torch.cat([glob_t[..., :1, :, :], local[..., 1:, :, :]], dim=-3)


def inverse_kinematics(joints, offsets=None, refine_steps: int = 30, lr: float = 1e-2):
    """Local rotations and root positions that reproduce `joints` (..., 22, 3) through FK.

    Returns (local_rot (..., 22, 3, 3), root_pos (..., 3)) in float64. `refine_steps` Adam steps on the
    mean squared FK error follow the analytic solution; the best iterate is kept, so refining never
    makes the fit worse.
    """
    joints = _as_tensor(joints, torch.float64)
    offsets = _as_tensor(sk.OFFSETS if offsets is None else offsets, torch.float64, joints.device)
    local0 = analytic_ik(joints, offsets)
    root = joints[..., 0, :]
    with torch.no_grad():
        best_err = ((forward_kinematics(local0, root, offsets) - joints) ** 2).sum(-1).mean()
    best = local0
    if refine_steps > 0 and best_err > 1e-12:
        delta = torch.zeros(local0.shape[:-2] + (3,), dtype=torch.float64, requires_grad=True)
        opt = torch.optim.Adam([delta], lr=lr)
        for _ in range(refine_steps):
            local = local0 @ axis_angle_to_matrix(delta)
            err = ((forward_kinematics(local, root, offsets) - joints) ** 2).sum(-1).mean()
            if err.item() < best_err.item():
                best_err, best = err.detach(), local.detach()
            opt.zero_grad()
            err.backward()
            opt.step()
    return best, root


def fit_offsets(joints) -> np.ndarray:
    """Rest offsets (22, 3) with this skeleton's rest directions and the mean bone lengths of `joints`
    (T, 22, 3): the skeleton to export a motion whose bone lengths differ from ours."""
    j = np.asarray(joints, dtype=np.float64).reshape(-1, sk.NUM_JOINTS, 3)
    lengths = np.linalg.norm(j[:, 1:] - j[:, list(sk.PARENTS[1:])], axis=-1).mean(0)
    dirs = sk.OFFSETS[1:] / sk.BONE_LENGTHS[1:, None]
    return np.concatenate([np.zeros((1, 3)), dirs * lengths[:, None]])
