"""Save a motion in the format its file name asks for, and load motions back from files.

    .bvh          BVH rig + animation (bvh.py)
    .glb / .gltf  skinned stick rig with the animation (gltf.py)
    .npz          `joints` (T, 22, 3) metres, `fps`, and `features` (T-1, 263) when given or computable
    .gif          stick-figure preview (preview.py)
    .mp4          the same preview through ffmpeg (on PATH, else imageio-ffmpeg's static build)

Every writer goes through a temporary file beside the target and a rename, so a failure never leaves a
half-written output. `load_motion` reads .npz, .npy (joints (T, 22, 3) or HumanML3D features (T, 263))
and .bvh (joints named as ours) back to joints.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import torch
from polydiff.core.runtime import atomic_write

from . import skeleton as sk
from .bvh import BVHError, export_bvh, read_bvh
from .features import FEATURE_DIM, features_to_joints, joints_to_features
from .gltf import export_gltf
from .preview import render_frames, write_gif

FORMATS = (".bvh", ".glb", ".gltf", ".npz", ".gif", ".mp4")


class MotionFileError(ValueError):
    """An output name we cannot write, or an input file we cannot read as a motion."""


def _check_joints(joints) -> np.ndarray:
    j = np.asarray(joints, dtype=np.float64)
    if j.ndim != 3 or j.shape[1:] != (sk.NUM_JOINTS, 3) or len(j) == 0:
        raise MotionFileError(f"joints must have shape (frames, 22, 3), got {j.shape}")
    if not np.isfinite(j).all():
        raise MotionFileError("joints contain NaN or infinite values")
    return j


def save_motion(
    path, joints, fps: float = 20.0, features=None, clean_feet: bool = True, title: str | None = None
) -> Path:
    """Write joints (T, 22, 3) in metres to `path`; the format follows the extension (see module doc).
    `clean_feet` runs the foot-lock clean-up before BVH / glTF export."""
    path = Path(path)
    ext = path.suffix.lower()
    if ext not in FORMATS:
        raise MotionFileError(
            f"unknown output extension {path.suffix or '(none)'!r} in {path.name!r}; "
            f"use one of {', '.join(FORMATS)}"
        )
    if not fps > 0:
        raise MotionFileError(f"fps must be positive, got {fps}")
    j = _check_joints(joints)
    if ext == ".bvh":
        return export_bvh(path, j, fps=fps, clean_feet=clean_feet)[0]
    if ext in (".glb", ".gltf"):
        return export_gltf(path, j, fps=fps, clean_feet=clean_feet)[0]
    if ext == ".gif":
        return write_gif(path, j, fps=fps, title=title)
    if ext == ".mp4":
        return _write_mp4(path, j, fps, title)
    if features is None and len(j) >= 2:
        features = joints_to_features(j)
    arrays = {"joints": j.astype(np.float32), "fps": np.float32(fps)}
    if features is not None:
        arrays["features"] = np.asarray(features, dtype=np.float32)
    def write(tmp):
        with open(tmp, "wb") as f:              # a file object: np.savez must not append ".npz"
            np.savez(f, **arrays)
    return atomic_write(path, write)


def find_ffmpeg() -> str | None:
    """An ffmpeg executable: the one on PATH, else the static build the `imageio-ffmpeg` wheel carries."""
    exe = shutil.which("ffmpeg")
    if exe is None:
        try:
            import imageio_ffmpeg
            exe = imageio_ffmpeg.get_ffmpeg_exe()
        except (ImportError, RuntimeError):
            return None
    return exe


def _write_mp4(path: Path, joints: np.ndarray, fps: float, title) -> Path:
    ffmpeg = find_ffmpeg()
    if ffmpeg is None:
        raise MotionFileError(
            "writing .mp4 needs ffmpeg (`pip install imageio-ffmpeg` or `apt-get install ffmpeg`); "
            "write a .gif preview instead"
        )
    frames = render_frames(joints, title=title, fps=fps)
    h, w = frames.shape[1:3]
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp.mp4", dir=path.parent)
    os.close(fd)
    try:
        cmd = [
            ffmpeg,
            "-y",
            "-loglevel",
            "error",
            "-f",
            "rawvideo",
            "-pix_fmt",
            "rgb24",
            "-s",
            f"{w}x{h}",
            "-r",
            f"{fps}",
            "-i",
            "-",
            "-vf",
            "pad=ceil(iw/2)*2:ceil(ih/2)*2",
            "-pix_fmt",
            "yuv420p",
            tmp,
        ]
        subprocess.run(cmd, input=frames.tobytes(), check=True)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def load_motion(path) -> tuple[np.ndarray, float]:
    """(joints (T, 22, 3) in metres, fps) from .npz / .npy / .bvh; clear errors for anything else."""
    path = Path(path)
    if not path.is_file():
        raise MotionFileError(f"motion file {path} does not exist")
    ext = path.suffix.lower()
    try:
        if ext == ".bvh":
            data = read_bvh(path)
            missing = [n for n in sk.JOINT_NAMES if n not in data["names"]]
            if missing:
                raise MotionFileError(
                    f"{path}: BVH lacks joints {missing[:4]}...; only BVH files with this "
                    "project's 22 joint names can be read back"
                )
            joints = data["positions"][:, [data["names"].index(n) for n in sk.JOINT_NAMES]]
            return _check_joints(joints), float(data["fps"])
        if ext == ".npz":
            with np.load(path, allow_pickle=False) as z:
                fps = float(z["fps"]) if "fps" in z else 20.0
                if "joints" in z:
                    return _check_joints(z["joints"]), fps
                if "features" in z:
                    return _from_features(z["features"], path), fps
            raise MotionFileError(f"{path}: .npz has neither 'joints' nor 'features'")
        if ext == ".npy":
            a = np.load(path, allow_pickle=False)
            if a.ndim == 2 and a.shape[1] == FEATURE_DIM:
                return _from_features(a, path), 20.0
            return _check_joints(a), 20.0
    except (OSError, ValueError, BVHError) as err:
        if isinstance(err, MotionFileError):
            raise
        raise MotionFileError(f"cannot read motion file {path}: {err}") from None
    raise MotionFileError(f"cannot read {path.name!r}: use .npz, .npy (joints or 263-dim features) or .bvh")


def _from_features(f, path) -> np.ndarray:
    f = np.asarray(f, dtype=np.float64)
    if f.ndim != 2 or f.shape[1] != FEATURE_DIM:
        raise MotionFileError(f"{path}: features must have shape (frames, {FEATURE_DIM}), got {f.shape}")
    return features_to_joints(torch.from_numpy(f)).numpy()
