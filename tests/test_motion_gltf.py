"""glTF / GLB export: an independent parser + FK reproduces the joints; trimesh loads the file."""

import json
import struct

import numpy as np
import pytest
from polydiff.motion import gltf, procedural
from polydiff.motion.features import canonicalize


def parse_glb(path):
    data = path.read_bytes()
    magic, version, length = struct.unpack_from("<4sII", data, 0)
    assert magic == b"glTF" and version == 2 and length == len(data)
    n_json, kind = struct.unpack_from("<I4s", data, 12)
    assert kind == b"JSON"
    doc = json.loads(data[20 : 20 + n_json])
    n_bin, kind = struct.unpack_from("<I4s", data, 20 + n_json)
    assert kind == b"BIN\0"
    return doc, data[28 + n_json : 28 + n_json + n_bin]


def accessor(doc, blob, i):
    acc = doc["accessors"][i]
    view = doc["bufferViews"][acc["bufferView"]]
    width = {"SCALAR": 1, "VEC3": 3, "VEC4": 4, "MAT4": 16}[acc["type"]]
    dtype = {5126: np.float32, 5123: np.uint16}[acc["componentType"]]
    a = np.frombuffer(blob, dtype, acc["count"] * width, view["byteOffset"])
    return a.reshape(acc["count"], width)


def quat_xyzw_to_matrix(q):
    x, y, z, w = q[..., 0], q[..., 1], q[..., 2], q[..., 3]
    return np.stack(
        [
            np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], -1),
            np.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], -1),
            np.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], -1),
        ],
        -2,
    )


def animated_joints(doc, blob):
    """World joint positions per keyframe from the node tree and the animation channels."""
    nodes = doc["nodes"]
    anim = doc["animations"][0]
    rot, trans = {}, {}
    for ch in anim["channels"]:
        out = accessor(doc, blob, anim["samplers"][ch["sampler"]]["output"]).astype(np.float64)
        (rot if ch["target"]["path"] == "rotation" else trans)[ch["target"]["node"]] = out
    T = len(accessor(doc, blob, anim["samplers"][0]["input"]))
    names = [n["name"] for n in nodes]
    parent = {c: i for i, n in enumerate(nodes) for c in n.get("children", [])}
    world_r, world_p = {}, {}
    for i in range(len(nodes) - 1):  # joint nodes are listed parents first
        r = quat_xyzw_to_matrix(rot[i])
        t = trans.get(i, np.tile(nodes[i]["translation"], (T, 1)))
        if i in parent:
            p = parent[i]
            world_r[i] = world_r[p] @ r
            world_p[i] = world_p[p] + np.einsum("tij,tj->ti", world_r[p], t)
        else:
            world_r[i], world_p[i] = r, t
    n = len(nodes) - 1
    return names, np.stack([world_p[i] for i in range(n)], 1), np.stack([world_r[i] for i in range(n)], 1)


@pytest.fixture(scope="module")
def clip():
    rng = np.random.default_rng(5)
    joints, _ = procedural.perform(["jump", ("wave", {"hand": "left"})], rng)
    return canonicalize(joints).numpy()


def test_glb_round_trip_and_loads_in_trimesh(tmp_path, clip):
    path, encoded = gltf.export_gltf(tmp_path / "m.glb", clip, clean_feet=False)
    doc, blob = parse_glb(path)
    names, joints, rots = animated_joints(doc, blob)
    assert names[:2] == ["pelvis", "left_hip"] and len(doc["skins"][0]["joints"]) == 22
    assert np.linalg.norm(joints - clip, axis=-1).mean() < 1e-4  # float32 storage
    assert np.abs(encoded - clip).max() < 1e-6
    times = accessor(doc, blob, doc["animations"][0]["samplers"][0]["input"])[:, 0]
    np.testing.assert_allclose(np.diff(times), 0.05, atol=1e-6)
    # linear-blend skinning of the rig with the skin's inverse bind matrices puts every bone's tip on
    # its child joint in every frame
    prim = doc["meshes"][0]["primitives"][0]
    verts = accessor(doc, blob, prim["attributes"]["POSITION"]).astype(np.float64)
    owner = accessor(doc, blob, prim["attributes"]["JOINTS_0"])[:, 0].astype(int)
    ibm = accessor(doc, blob, doc["skins"][0]["inverseBindMatrices"]).reshape(22, 4, 4).transpose(0, 2, 1)
    tips = verts[1::6]  # each spindle: base, tip, 4 ring vertices
    local = np.einsum("vij,vj->vi", ibm[owner[1::6], :3, :3], tips) + ibm[owner[1::6], :3, 3]
    skinned = np.einsum("tvij,vj->tvi", rots[:, owner[1::6]], local) + joints[:, owner[1::6]]
    assert np.abs(skinned - clip[:, 1:]).max() < 1e-4
    trimesh = pytest.importorskip("trimesh")
    scene = trimesh.load(path)
    assert sum(len(g.vertices) for g in scene.geometry.values()) == 21 * 6


def test_gltf_text_variant_and_bad_extension(tmp_path, clip):
    path, _ = gltf.export_gltf(tmp_path / "m.gltf", clip[:10], clean_feet=False)
    doc = json.loads(path.read_text())
    assert doc["buffers"][0]["uri"].startswith("data:application/octet-stream;base64,")
    with pytest.raises(gltf.GLTFError, match=".glb or .gltf"):
        gltf.export_gltf(tmp_path / "m.obj", clip[:10])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.gltf"]
