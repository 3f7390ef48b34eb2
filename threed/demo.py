"""The 3D part of `polydiff demo`: one prompt distilled through the shipped prior into a coloured mesh,
written as a GLB (3D model, with a poster image) and a turntable GIF. About 2-3 minutes on a 2-core CPU."""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger("polydiff.threed")

PROMPT = "a yellow cone"   # cubes and pyramids are the prior's weakest shapes (README 3D table)
ITERS = None               # generate's default (Settings.iters)


def demo(folder, device="cpu", seed: int = 0, prior=None, iters: int | None = ITERS) -> list:
    """Write the demo files into `folder`; returns the `polydiff.core.report.Artifact`s (none, with a
    warning, when no prior is shipped and none is given)."""
    from polydiff.core.report import Artifact

    from .generate import generate
    from .prior import DEFAULT_PRIOR

    if prior is None and not (DEFAULT_PRIOR / "config.json").is_file():
        log.warning("threed demo skipped: no shipped image prior at %s (train one with `polydiff threed "
                    "train-prior --config threed/configs/prior_small.yaml`)", DEFAULT_PRIOR)
        return []
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    asset = generate(PROMPT, prior=prior, seed=seed, device=device, **({} if iters is None else {"iters": iters}))
    glb, gif, poster = folder / "threed_asset.glb", folder / "threed_asset.gif", folder / "threed_asset.png"
    asset.save(glb)
    asset.turntable(gif, resolution=192)
    asset.turntable(poster, n_frames=1, resolution=256)
    st = asset.stats
    return [Artifact("model", glb, f"Text to 3D: \"{PROMPT}\"",
                     f"Score distillation through the built-in 32x32 image prior ({st['iters']} iterations, "
                     f"{st['seconds_total']:.0f} s on this machine), meshed by marching cubes at the rendered "
                     "surface, vertex colours from the field's albedo.", poster=poster),
            Artifact("image", gif, "Turntable of the radiance field")]
