"""Stick-figure previews of joint motion: animated GIF (matplotlib + Pillow), written atomically.

The camera follows the pelvis on the floor plane so long walks stay in frame; the floor is a grid, the
left side of the body is drawn in blue, the right in red, the spine in grey, and the pelvis path on the
floor as a thin line. MP4 would need ffmpeg, which is not assumed; GIF needs nothing beyond matplotlib.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from polydiff.core.runtime import atomic_write

from . import skeleton as sk


class PreviewError(ValueError):
    """Bad arguments to the preview writer."""


def _colour(chain) -> str:
    names = [sk.JOINT_NAMES[j] for j in chain[1:]]
    if all(n.startswith("left_") for n in names):
        return "tab:blue"
    if all(n.startswith("right_") for n in names):
        return "tab:red"
    return "0.35"


def render_frames(
    joints,
    size: int = 320,
    title: str | None = None,
    elev: float = 18.0,
    azim: float = -60.0,
    fps: float | None = 20.0,
):
    """RGB frames (T, H, W, 3) uint8 of joints (T, 22, 3) in metres, +Y up."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    j = np.asarray(joints, dtype=np.float64)
    fig = plt.figure(figsize=(size / 80, size / 80), dpi=80)
    ax = fig.add_subplot(projection="3d")
    frames = []
    radius = 1.0
    fps_label = 20.0 if fps is None else fps
    for t in range(len(j)):
        ax.cla()
        cx, cz = j[t, 0, 0], j[t, 0, 2]
        # matplotlib's 3D axes are z-up: plot (x, z, y)
        ax.set_xlim(cx - radius, cx + radius)
        ax.set_ylim(cz - radius, cz + radius)
        ax.set_zlim(0, 2 * radius)
        ax.view_init(elev=elev, azim=azim)
        ax.set_box_aspect((1, 1, 1), zoom=1.5)
        ax.set_axis_off()
        g = np.arange(np.floor(cx - radius), np.ceil(cx + radius) + 0.01, 0.5)
        h = np.arange(np.floor(cz - radius), np.ceil(cz + radius) + 0.01, 0.5)
        for x in g:
            ax.plot([x, x], [h[0], h[-1]], [0, 0], color="0.85", lw=0.6)
        for z in h:
            ax.plot([g[0], g[-1]], [z, z], [0, 0], color="0.85", lw=0.6)
        ax.plot(j[: t + 1, 0, 0], j[: t + 1, 0, 2], 0 * j[: t + 1, 0, 1], color="0.6", lw=0.8)
        for chain in sk.KINEMATIC_CHAIN:
            c = list(chain)
            ax.plot(j[t, c, 0], j[t, c, 2], j[t, c, 1], color=_colour(chain), lw=2.5)
        if title:
            ax.set_title(title, fontsize=8)
        # the clock also keeps still frames distinct (GIF writers merge identical frames)
        ax.text2D(0.02, 0.02, f"{t / fps_label:.2f} s", transform=ax.transAxes, fontsize=7, color="0.4")
        fig.canvas.draw()
        frames.append(np.asarray(fig.canvas.buffer_rgba())[..., :3].copy())
    plt.close(fig)
    return np.stack(frames)


def write_gif(path, joints, fps: float = 20.0, size: int = 320, title: str | None = None) -> Path:
    """Animated GIF of joints (T, 22, 3); written to a temporary file and renamed into place."""
    from PIL import Image

    path = Path(path)
    if path.suffix.lower() != ".gif":
        raise PreviewError(f"preview output must end in .gif, got {path.name!r}")
    j = np.asarray(joints)
    if j.ndim != 3 or j.shape[1:] != (sk.NUM_JOINTS, 3) or len(j) == 0:
        raise PreviewError(f"joints must have shape (frames, 22, 3), got {j.shape}")
    if fps <= 0:
        raise PreviewError(f"fps must be positive, got {fps}")
    frames = render_frames(j, size=size, title=title, fps=fps)
    images = [Image.fromarray(f) for f in frames]
    atomic_write(path, lambda tmp: images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:],
                                                  duration=int(round(1000 / fps)), loop=0))
    return path
