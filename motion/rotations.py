"""Rotation utilities, batched torch: quaternions (w, x, y, z), 6D, axis-angle, matrices, Euler angles.

Conventions: matrices act on column vectors (`v' = R @ v`); a quaternion q rotates v as q v q*, so
`quat_to_matrix(q) @ v == quat_rotate(q, v)`. The 6D representation (Zhou et al. 2019) is the first two
columns of the matrix concatenated, `[R[:, 0], R[:, 1]]`, which is also HumanML3D's `cont6d` layout.
All functions take leading batch dimensions `(...)` and are differentiable.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

_EPS = 1e-12


# -- quaternions --------------------------------------------------------------------------------
def quat_mul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Hamilton product a * b: (..., 4)."""
    aw, ax, ay, az = a.unbind(-1)
    bw, bx, by, bz = b.unbind(-1)
    return torch.stack(
        [
            aw * bw - ax * bx - ay * by - az * bz,
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
        ],
        dim=-1,
    )


def quat_conj(q: torch.Tensor) -> torch.Tensor:
    """Inverse of a unit quaternion: (..., 4)."""
    return q * q.new_tensor([1.0, -1.0, -1.0, -1.0])


def quat_normalize(q: torch.Tensor) -> torch.Tensor:
    return q / q.norm(dim=-1, keepdim=True).clamp_min(_EPS)


def quat_rotate(q: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Rotate vectors v (..., 3) by unit quaternions q (..., 4)."""
    w, u = q[..., :1], q[..., 1:]
    t = 2.0 * torch.cross(u, v, dim=-1)
    return v + w * t + torch.cross(u, t, dim=-1)


def quat_between(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """The shortest-arc rotation taking direction u to direction v: (..., 3) -> (..., 4).

    For opposite directions the arc is not unique; any axis perpendicular to u is used."""
    u = F.normalize(u, dim=-1, eps=_EPS)
    v = F.normalize(v, dim=-1, eps=_EPS)
    w = 1.0 + (u * v).sum(-1, keepdim=True)
    axis = torch.cross(u, v, dim=-1)
    # opposite vectors: pick an axis perpendicular to u (cross with x, or with y if u is along x)
    alt = torch.cross(u, torch.zeros_like(u).index_fill_(-1, torch.tensor(0, device=u.device), 1.0), dim=-1)
    alt2 = torch.cross(u, torch.zeros_like(u).index_fill_(-1, torch.tensor(1, device=u.device), 1.0), dim=-1)
    alt = torch.where(alt.norm(dim=-1, keepdim=True) > 1e-6, alt, alt2)
    opposite = w < 1e-9
    q = torch.cat([w, axis], dim=-1)
    q = torch.where(opposite, torch.cat([torch.zeros_like(w), F.normalize(alt, dim=-1)], dim=-1), q)
    return quat_normalize(q)


def quat_canonical(q: torch.Tensor) -> torch.Tensor:
    """The representative with w >= 0 (q and -q are the same rotation)."""
    return torch.where(q[..., :1] < 0, -q, q)


# -- matrices -----------------------------------------------------------------------------------
def quat_to_matrix(q: torch.Tensor) -> torch.Tensor:
    """(..., 4) -> (..., 3, 3)."""
    q = quat_normalize(q)
    w, x, y, z = q.unbind(-1)
    m = torch.stack(
        [
            1 - 2 * (y * y + z * z),
            2 * (x * y - w * z),
            2 * (x * z + w * y),
            2 * (x * y + w * z),
            1 - 2 * (x * x + z * z),
            2 * (y * z - w * x),
            2 * (x * z - w * y),
            2 * (y * z + w * x),
            1 - 2 * (x * x + y * y),
        ],
        dim=-1,
    )
    return m.reshape(q.shape[:-1] + (3, 3))


def matrix_to_quat(m: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) -> (..., 4) with w >= 0. Shepperd's method: pick the largest of the four squared
    components to divide by, so no branch loses precision."""
    m00, m01, m02 = m[..., 0, 0], m[..., 0, 1], m[..., 0, 2]
    m10, m11, m12 = m[..., 1, 0], m[..., 1, 1], m[..., 1, 2]
    m20, m21, m22 = m[..., 2, 0], m[..., 2, 1], m[..., 2, 2]
    sq = torch.stack(
        [1 + m00 + m11 + m22, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22], dim=-1
    ).clamp_min(0.0)
    r = torch.sqrt(sq.clamp_min(1e-20))  # 2|w|, 2|x|, 2|y|, 2|z|
    cands = torch.stack(
        [
            torch.stack([r[..., 0] ** 2, m21 - m12, m02 - m20, m10 - m01], -1) / (2 * r[..., 0:1]),
            torch.stack([m21 - m12, r[..., 1] ** 2, m10 + m01, m02 + m20], -1) / (2 * r[..., 1:2]),
            torch.stack([m02 - m20, m10 + m01, r[..., 2] ** 2, m12 + m21], -1) / (2 * r[..., 2:3]),
            torch.stack([m10 - m01, m20 + m02, m21 + m12, r[..., 3] ** 2], -1) / (2 * r[..., 3:4]),
        ],
        dim=-2,
    )  # (..., 4 candidates, 4)
    best = sq.argmax(dim=-1)
    q = torch.gather(cands, -2, best[..., None, None].expand(best.shape + (1, 4))).squeeze(-2)
    return quat_canonical(quat_normalize(q))


def matrix_to_6d(m: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) -> (..., 6): first column then second column (HumanML3D's cont6d)."""
    return torch.cat([m[..., :, 0], m[..., :, 1]], dim=-1)


def sixd_to_matrix(d6: torch.Tensor) -> torch.Tensor:
    """(..., 6) -> (..., 3, 3) by Gram-Schmidt; exact inverse of `matrix_to_6d` on rotations."""
    a1, a2 = d6[..., :3], d6[..., 3:]
    b1 = F.normalize(a1, dim=-1, eps=_EPS)
    b2 = F.normalize(a2 - (b1 * a2).sum(-1, keepdim=True) * b1, dim=-1, eps=_EPS)
    b3 = torch.cross(b1, b2, dim=-1)
    return torch.stack([b1, b2, b3], dim=-1)


def quat_to_6d(q: torch.Tensor) -> torch.Tensor:
    return matrix_to_6d(quat_to_matrix(q))


def sixd_to_quat(d6: torch.Tensor) -> torch.Tensor:
    return matrix_to_quat(sixd_to_matrix(d6))


# -- axis-angle ---------------------------------------------------------------------------------
def axis_angle_to_quat(aa: torch.Tensor) -> torch.Tensor:
    """Rotation vectors (..., 3) (axis * angle in radians) -> (..., 4)."""
    angle = aa.norm(dim=-1, keepdim=True)
    half = 0.5 * angle
    # sin(half)/angle, with its Taylor series near 0 so the gradient stays finite
    small = angle < 1e-6
    k = torch.where(small, 0.5 - angle * angle / 48.0, torch.sin(half) / angle.clamp_min(1e-6))
    return torch.cat([torch.cos(half), aa * k], dim=-1)


def quat_to_axis_angle(q: torch.Tensor) -> torch.Tensor:
    """(..., 4) -> rotation vectors (..., 3) with angle in [0, pi]."""
    q = quat_canonical(quat_normalize(q))
    s = q[..., 1:].norm(dim=-1, keepdim=True)
    angle = 2.0 * torch.atan2(s, q[..., :1])
    small = s < 1e-6
    k = torch.where(small, 2.0 + angle * angle / 12.0, angle / s.clamp_min(1e-6))
    return q[..., 1:] * k


def axis_angle_to_matrix(aa: torch.Tensor) -> torch.Tensor:
    return quat_to_matrix(axis_angle_to_quat(aa))


def matrix_to_axis_angle(m: torch.Tensor) -> torch.Tensor:
    return quat_to_axis_angle(matrix_to_quat(m))


# -- Euler angles (BVH channels) ----------------------------------------------------------------
def _elementary(axis: str, angle: torch.Tensor) -> torch.Tensor:
    c, s = torch.cos(angle), torch.sin(angle)
    o, z = torch.ones_like(angle), torch.zeros_like(angle)
    rows = {
        "X": [o, z, z, z, c, -s, z, s, c],
        "Y": [c, z, s, z, o, z, -s, z, c],
        "Z": [c, -s, z, s, c, z, z, z, o],
    }[axis]
    return torch.stack(rows, dim=-1).reshape(angle.shape + (3, 3))


def euler_to_matrix(angles: torch.Tensor, order: str = "ZXY") -> torch.Tensor:
    """Intrinsic Euler angles (radians) (..., 3), `angles[..., i]` about axis `order[i]`:
    R = R_order[0] @ R_order[1] @ R_order[2] (the BVH convention: channels listed left to right)."""
    m = _elementary(order[0], angles[..., 0])
    for i in (1, 2):
        m = m @ _elementary(order[i], angles[..., i])
    return m


def matrix_to_euler(m: torch.Tensor, order: str = "ZXY") -> torch.Tensor:
    """Inverse of `euler_to_matrix` for the six Tait-Bryan orders; the middle angle lies in
    [-pi/2, pi/2]. At gimbal lock (middle angle +-pi/2) the first angle is set to 0."""
    i, j, k = ("XYZ".index(a) for a in order)
    # parity: +1 when (i, j, k) is a cyclic permutation of (0, 1, 2)
    sign = 1.0 if (j - i) % 3 == 1 else -1.0
    # For R = R_i(a) R_j(b) R_k(c): R[i, k] = sign * sin(b)
    sb = (sign * m[..., i, k]).clamp(-1.0, 1.0)
    b = torch.asin(sb)
    cb = torch.sqrt((1 - sb * sb).clamp_min(0.0))
    a = torch.atan2(-sign * m[..., j, k], m[..., k, k])
    c = torch.atan2(-sign * m[..., i, j], m[..., i, i])
    # gimbal lock: only a + c (or a - c) is defined; put it all in c
    locked = cb < 1e-7
    c_locked = torch.atan2(sign * m[..., j, i], m[..., j, j])
    a = torch.where(locked, torch.zeros_like(a), a)
    c = torch.where(locked, c_locked, c)
    return torch.stack([a, b, c], dim=-1)


def rot_y(angle: torch.Tensor) -> torch.Tensor:
    """Rotation about +Y (the up axis) by `angle` radians, (...) -> (..., 3, 3); +angle turns +Z to +X,
    i.e. a body facing +Z turns to its left."""
    return _elementary("Y", angle)
