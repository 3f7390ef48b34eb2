"""The motion part of `polydiff demo`: two sentences through the shipped checkpoint, each written as a
BVH (download), a GLB with a poster image (3D model) and a GIF preview. Fast on a CPU: 4 s clips, one
batch for both sentences, the GIF previews at 10 fps."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .preview import render_frames

SENTENCES = ("a person walks forward then waves the right hand", "someone jumps forward twice")
SECONDS = 4.0
PREVIEW_FPS = 10.0


def _poster(path: Path, joints: np.ndarray, title: str) -> Path:
    """One PNG frame from the middle of the motion (the 3D viewer's poster)."""
    from PIL import Image

    frame = render_frames(joints[len(joints) // 2: len(joints) // 2 + 1], size=320, title=title)[0]
    tmp = path.with_name(f".{path.name}.tmp.png")
    Image.fromarray(frame).save(tmp)
    tmp.replace(path)
    return path


def demo(folder, device="cpu", seed: int = 0, checkpoint=None) -> list:
    """Write the demo files into `folder`; returns the `polydiff.core.report.Artifact`s."""
    from polydiff.core.report import Artifact

    from .pipeline import generate_batch

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    motions = generate_batch(list(SENTENCES), SECONDS, seed=seed, device=device, checkpoint=checkpoint)
    artifacts = []
    for i, (sentence, motion) in enumerate(zip(SENTENCES, motions)):
        stem = f"motion_{i}"
        bvh = motion.save(folder / f"{stem}.bvh")[0]
        glb = motion.save(folder / f"{stem}.glb")[0]
        gif = motion.save(folder / f"{stem}.gif", fps=PREVIEW_FPS)[0]
        poster = _poster(folder / f"{stem}_poster.png", motion.joints[0], sentence)
        artifacts += [
            Artifact("model", glb, f"\u201c{sentence}\u201d", "skinned stick rig (glTF), foot-locked", poster=poster),
            Artifact("image", gif, f"\u201c{sentence}\u201d (preview)", f"{SECONDS:g} s, stick figure"),
            Artifact("download", bvh, f"{bvh.name}", "BVH for Blender / MotionBuilder"),
        ]
    return artifacts
