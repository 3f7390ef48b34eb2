"""SMPL export: pose parameters (and optionally per-frame meshes) for joint motion, through `smplx`.

The user supplies the SMPL model files (they are licensed separately and never shipped): a folder with
`SMPL_NEUTRAL.npz` / `SMPL_MALE.npz` / `SMPL_FEMALE.npz` (plain arrays: v_template, shapedirs, posedirs,
J_regressor, weights, kintree_table, f; read with `allow_pickle=False`) or the official `.pkl` files
(read by smplx, which unpickles them: only use files you trust; the official ones may need `chumpy`).

SMPL's first 22 joints are exactly this skeleton's joints, in the same order and tree, so its pose is our
IK (kinematics.py) against SMPL's own rest skeleton (the model's joints at betas = 0): `global_orient`
is the pelvis rotation, `body_pose` the 23 other joints' local rotations (the two hand joints stay at
rest), axis-angle; `transl` is the pelvis position minus SMPL's rest pelvis, since SMPL rotates about
its rest pelvis. Bone lengths are SMPL's, so generated joints with other lengths are matched in
direction, not exactly in position.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from polydiff.core.runtime import atomic_write

from . import skeleton as sk
from .kinematics import inverse_kinematics
from .rotations import matrix_to_axis_angle

GENDERS = ("neutral", "male", "female")
_SMPL_KEYS = ("v_template", "shapedirs", "posedirs", "J_regressor", "weights", "kintree_table", "f")


class SMPLError(ValueError):
    """Missing or malformed SMPL model files."""


def load_smpl(model_dir, gender: str = "neutral"):
    """An `smplx.SMPL` body model from `model_dir` (see module docstring)."""
    import smplx
    from smplx.utils import Struct

    if gender not in GENDERS:
        raise SMPLError(f"gender must be one of {GENDERS}, got {gender!r}")
    model_dir = Path(model_dir)
    candidates = [model_dir / f"SMPL_{gender.upper()}.{ext}" for ext in ("npz", "pkl")]
    if model_dir.is_file():
        candidates = [model_dir]
    path = next((p for p in candidates if p.is_file()), None)
    if path is None:
        raise SMPLError(
            f"no SMPL model file for gender {gender!r}: looked for "
            f"{', '.join(str(p) for p in candidates)}; download SMPL from smpl.is.tue.mpg.de"
        )
    # We read vertices only; the extra keypoints smplx would pick by vertex id are not needed, so point
    # them all at vertex 0 (this also lets small test models load).
    ids = {
        k: 0
        for k in (
            "nose",
            "reye",
            "leye",
            "rear",
            "lear",
            "LBigToe",
            "LSmallToe",
            "LHeel",
            "RBigToe",
            "RSmallToe",
            "RHeel",
            "lthumb",
            "lindex",
            "lmiddle",
            "lring",
            "lpinky",
            "rthumb",
            "rindex",
            "rmiddle",
            "rring",
            "rpinky",
        )
    }
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                missing = [k for k in _SMPL_KEYS if k not in z]
                if missing:
                    raise SMPLError(f"{path} is missing SMPL arrays: {', '.join(missing)}")
                data = Struct(**{k: z[k] for k in z.files})
            model = smplx.SMPL(model_path=str(path), data_struct=data, vertex_ids=ids, num_betas=10)
        else:
            model = smplx.SMPL(model_path=str(path), vertex_ids=ids, num_betas=10)
    except SMPLError:
        raise
    except Exception as err:  # smplx raises many kinds of errors on a bad file
        raise SMPLError(f"cannot load SMPL model {path}: {type(err).__name__}: {err}") from None
    if model.J_regressor.shape[0] != 24:
        raise SMPLError(f"{path}: expected a 24-joint SMPL model, got {model.J_regressor.shape[0]} joints")
    return model


def rest_joints(model) -> np.ndarray:
    """SMPL's 24 rest joint positions (betas = 0): (24, 3)."""
    with torch.no_grad():
        return (model.J_regressor @ model.v_template).double().numpy()


def smpl_params(joints, model, refine_steps: int = 30) -> dict[str, np.ndarray]:
    """SMPL parameters reproducing joints (T, 22, 3) in metres: global_orient (T, 3), body_pose (T, 69),
    transl (T, 3), betas (10,) zeros."""
    j = np.asarray(joints, dtype=np.float64)
    if j.ndim != 3 or j.shape[1:] != (sk.NUM_JOINTS, 3):
        raise SMPLError(f"joints must have shape (frames, 22, 3), got {j.shape}")
    rest = rest_joints(model)
    parents = model.parents.numpy()
    if list(parents[1:22]) != list(sk.PARENTS[1:]):
        raise SMPLError("the SMPL model's kinematic tree does not match the 22-joint skeleton")
    offsets = np.zeros((sk.NUM_JOINTS, 3))
    offsets[1:] = rest[1:22] - rest[parents[1:22]]
    local, root = inverse_kinematics(j, offsets=offsets, refine_steps=refine_steps)
    aa = matrix_to_axis_angle(local).numpy()  # (T, 22, 3)
    T = len(j)
    body = np.zeros((T, 23, 3))
    body[:, :21] = aa[:, 1:]
    return {
        "global_orient": aa[:, 0],
        "body_pose": body.reshape(T, 69),
        "transl": root.numpy() - rest[0],
        "betas": np.zeros(10),
    }


def smpl_vertices(params: dict, model, batch: int = 64) -> np.ndarray:
    """Posed vertices (T, V, 3) from `smpl_params` output."""
    out = []
    with torch.no_grad():
        for s in range(0, len(params["transl"]), batch):
            sl = slice(s, s + batch)
            n = len(params["transl"][sl])
            o = model(
                global_orient=torch.as_tensor(params["global_orient"][sl], dtype=torch.float32),
                body_pose=torch.as_tensor(params["body_pose"][sl], dtype=torch.float32),
                transl=torch.as_tensor(params["transl"][sl], dtype=torch.float32),
                betas=torch.zeros(n, 10),
            )
            out.append(o.vertices.numpy())
    return np.concatenate(out)


def export_smpl(
    path, joints, model_dir, gender: str = "neutral", fps: float = 20.0, meshes: bool = True
) -> Path:
    """Write SMPL parameters to an .npz (AMASS-style `poses` (T, 72), `trans`, `betas`, `gender`,
    `mocap_framerate`, plus smplx's `global_orient` / `body_pose` / `transl`), and with `meshes` the
    posed `vertices` (T, V, 3) and `faces`. Written atomically."""
    path = Path(path)
    if path.suffix.lower() != ".npz":
        raise SMPLError(f"SMPL parameters are written as .npz, got {path.name!r}")
    model = load_smpl(model_dir, gender)
    p = smpl_params(joints, model)
    arrays = dict(
        p,
        poses=np.concatenate([p["global_orient"], p["body_pose"]], 1),
        trans=p["transl"],
        gender=np.array(gender),
        mocap_framerate=np.float64(fps),
    )
    if meshes:
        arrays["vertices"] = smpl_vertices(p, model).astype(np.float32)
        arrays["faces"] = np.asarray(model.faces, dtype=np.int64)
    def write(tmp):
        with open(tmp, "wb") as f:              # a file object: np.savez must not append ".npz"
            np.savez(f, **arrays)
    return atomic_write(path, write)
