"""glTF 2.0 export (.glb binary or .gltf with an embedded buffer): a skinned stick rig with the animation.

One node per joint (named after the joint, rest translation = the bone offset, no rest rotation), a mesh
of thin spindles (one per bone, skinned rigidly to the bone's parent joint), a skin whose inverse bind
matrices undo the rest pose, and one animation: a rotation channel per joint (quaternions, LINEAR) and
a translation channel for the pelvis, sampled at the motion's frames. glTF is metres, +Y up, and a
model faces +Z: the skeleton's own conventions, so no axis change is needed. Written atomically.
"""

from __future__ import annotations

import base64
import json
import struct
from pathlib import Path

import numpy as np
import torch
from polydiff.core.runtime import atomic_write

from . import skeleton as sk
from .footlock import foot_lock
from .kinematics import fit_offsets, forward_kinematics, inverse_kinematics
from .rotations import matrix_to_quat

_FLOAT, _USHORT, _UINT = 5126, 5123, 5125
_ARRAY, _ELEMENTS = 34962, 34963


class GLTFError(ValueError):
    """Bad arguments to the glTF exporter."""


def _spindles(rest: np.ndarray, radius: float = 0.025):
    """Vertices (V, 3), joint index per vertex (V,), triangles (F, 3): a 6-vertex spindle per bone."""
    verts, owner, tris = [], [], []
    for c in range(1, sk.NUM_JOINTS):
        p = sk.PARENTS[c]
        a, b = rest[p], rest[c]
        axis = (b - a) / max(np.linalg.norm(b - a), 1e-9)
        helper = np.array([1.0, 0.0, 0.0]) if abs(axis[0]) < 0.9 else np.array([0.0, 0.0, 1.0])
        u = np.cross(axis, helper)
        u /= np.linalg.norm(u)
        v = np.cross(axis, u)
        r = min(radius, 0.25 * np.linalg.norm(b - a))
        ring = [a + 0.2 * (b - a) + r * d for d in (u, v, -u, -v)]
        base = len(verts)
        verts += [a, b] + ring
        owner += [p] * 6
        for k in range(4):
            r0, r1 = base + 2 + k, base + 2 + (k + 1) % 4
            tris += [(base, r1, r0), (base + 1, r0, r1)]
    return np.array(verts, np.float32), np.array(owner), np.array(tris, np.uint16)


def build_gltf(local_rot, root_pos, offsets=None, fps: float = 20.0) -> tuple[dict, bytes]:
    """glTF JSON (without buffer uri) and the binary buffer for a motion given as local rotations
    (T, 22, 3, 3) and root positions (T, 3) in metres."""
    offsets = sk.OFFSETS if offsets is None else np.asarray(offsets, dtype=np.float64)
    local_rot = torch.as_tensor(np.asarray(local_rot), dtype=torch.float64)
    T = local_rot.shape[0]
    quat = matrix_to_quat(local_rot).numpy()[..., [1, 2, 3, 0]].astype(np.float32)  # glTF: x, y, z, w
    quat = _continuous(quat)
    root_pos = np.asarray(root_pos, dtype=np.float32)
    rest = sk.rest_joints(offsets)
    verts, owner, tris = _spindles(rest)

    blob = bytearray()
    views, accessors = [], []

    def add(array: np.ndarray, comp: int, kind: str, target=None, minmax=False) -> int:
        while len(blob) % 4:
            blob.append(0)
        data = np.ascontiguousarray(array).tobytes()
        view = {"buffer": 0, "byteOffset": len(blob), "byteLength": len(data)}
        if target:
            view["target"] = target
        views.append(view)
        blob.extend(data)
        acc = {
            "bufferView": len(views) - 1,
            "componentType": comp,
            "count": int(array.shape[0]),
            "type": kind,
        }
        if minmax:
            flat = array.reshape(array.shape[0], -1)
            acc["min"] = [float(x) for x in flat.min(0)]
            acc["max"] = [float(x) for x in flat.max(0)]
        accessors.append(acc)
        return len(accessors) - 1

    pos_acc = add(verts, _FLOAT, "VEC3", _ARRAY, minmax=True)
    joints4 = np.zeros((len(verts), 4), np.uint16)
    joints4[:, 0] = owner
    weights4 = np.zeros((len(verts), 4), np.float32)
    weights4[:, 0] = 1.0
    j_acc = add(joints4, _USHORT, "VEC4", _ARRAY)
    w_acc = add(weights4, _FLOAT, "VEC4", _ARRAY)
    i_acc = add(tris.reshape(-1), _USHORT, "SCALAR", _ELEMENTS)
    ibm = np.tile(np.eye(4, dtype=np.float32), (sk.NUM_JOINTS, 1, 1))
    ibm[:, :3, 3] = -rest
    ibm_acc = add(ibm.transpose(0, 2, 1).reshape(sk.NUM_JOINTS, 16), _FLOAT, "MAT4")  # column-major
    times = (np.arange(T) / fps).astype(np.float32)
    t_acc = add(times, _FLOAT, "SCALAR", minmax=True)
    samplers, channels = [], []
    for j in range(sk.NUM_JOINTS):
        samplers.append(
            {"input": t_acc, "output": add(quat[:, j], _FLOAT, "VEC4"), "interpolation": "LINEAR"}
        )
        channels.append({"sampler": len(samplers) - 1, "target": {"node": j, "path": "rotation"}})
    samplers.append({"input": t_acc, "output": add(root_pos, _FLOAT, "VEC3"), "interpolation": "LINEAR"})
    channels.append({"sampler": len(samplers) - 1, "target": {"node": 0, "path": "translation"}})

    nodes = []
    for j in range(sk.NUM_JOINTS):
        node = {
            "name": sk.JOINT_NAMES[j],
            "translation": [float(x) for x in (root_pos[0] if j == 0 else offsets[j])],
            "rotation": [float(x) for x in quat[0, j]],
        }
        if sk.CHILDREN[j]:
            node["children"] = list(sk.CHILDREN[j])
        nodes.append(node)
    nodes.append({"name": "stick_rig", "mesh": 0, "skin": 0})
    doc = {
        "asset": {"version": "2.0", "generator": "polydiff.motion"},
        "scene": 0,
        "scenes": [{"nodes": [0, sk.NUM_JOINTS]}],
        "nodes": nodes,
        "meshes": [
            {
                "name": "stick_rig",
                "primitives": [
                    {
                        "attributes": {"POSITION": pos_acc, "JOINTS_0": j_acc, "WEIGHTS_0": w_acc},
                        "indices": i_acc,
                        "material": 0,
                    }
                ],
            }
        ],
        "materials": [
            {
                "name": "bone",
                "pbrMetallicRoughness": {
                    "baseColorFactor": [0.8, 0.55, 0.3, 1.0],
                    "metallicFactor": 0.0,
                    "roughnessFactor": 0.7,
                },
            }
        ],
        "skins": [{"joints": list(range(sk.NUM_JOINTS)), "skeleton": 0, "inverseBindMatrices": ibm_acc}],
        "animations": [{"name": "motion", "samplers": samplers, "channels": channels}],
        "accessors": accessors,
        "bufferViews": views,
        "buffers": [{"byteLength": len(blob)}],
    }
    return doc, bytes(blob)


def _continuous(q: np.ndarray) -> np.ndarray:
    """Flip quaternion signs along time so LINEAR interpolation takes the short way: (T, J, 4)."""
    q = q.copy()
    for t in range(1, len(q)):
        flip = (q[t] * q[t - 1]).sum(-1) < 0
        q[t, flip] *= -1
    return q


def write_gltf(path, local_rot, root_pos, offsets=None, fps: float = 20.0) -> Path:
    """.glb (binary container) or .gltf (JSON with the buffer as a base64 data URI), atomically."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".glb", ".gltf"):
        raise GLTFError(f"glTF output must end in .glb or .gltf, got {path.name!r}")
    if fps <= 0:
        raise GLTFError(f"fps must be positive, got {fps}")
    doc, blob = build_gltf(local_rot, root_pos, offsets, fps)
    if suffix == ".gltf":
        doc["buffers"][0]["uri"] = "data:application/octet-stream;base64," + base64.b64encode(blob).decode()
        payload = json.dumps(doc).encode()
    else:
        js = json.dumps(doc, separators=(",", ":")).encode()
        js += b" " * (-len(js) % 4)
        bin_ = blob + b"\0" * (-len(blob) % 4)
        payload = (
            struct.pack("<4sII", b"glTF", 2, 12 + 8 + len(js) + 8 + len(bin_))
            + struct.pack("<I4s", len(js), b"JSON")
            + js
            + struct.pack("<I4s", len(bin_), b"BIN\0")
            + bin_
        )
    return atomic_write(path, lambda tmp: tmp.write_bytes(payload))


def export_gltf(path, joints, fps: float = 20.0, clean_feet: bool = True, refine_steps: int = 30):
    """Joint positions (T, 22, 3) -> .glb / .gltf. Returns (path, the joints the file encodes)."""
    j = np.asarray(joints, dtype=np.float64)
    if j.ndim != 3 or j.shape[1:] != (sk.NUM_JOINTS, 3) or len(j) < 1 or not np.isfinite(j).all():
        raise GLTFError(f"joints must be a finite array of shape (frames, 22, 3), got {j.shape}")
    if Path(path).suffix.lower() not in (".glb", ".gltf"):
        raise GLTFError(f"glTF output must end in .glb or .gltf, got {Path(path).name!r}")
    if clean_feet:
        j = foot_lock(j, fps=fps)
    offsets = fit_offsets(j)
    local, root = inverse_kinematics(j, offsets=offsets, refine_steps=refine_steps)
    encoded = forward_kinematics(local, root, offsets).numpy()
    return write_gltf(path, local, root.numpy(), offsets, fps), encoded
