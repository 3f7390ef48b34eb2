"""The results page opens from the file system in headless Chromium: every asset loads, no console
errors, and the 3D viewer draws a non-blank model. Leaves a screenshot beside the page."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import trimesh
from PIL import Image

from polydiff.core.report import Artifact, find_model_viewer, write_index

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def make_page(d: Path) -> Path:
    sf.write(d / "tone.wav", 0.3 * np.sin(2 * np.pi * 440 * np.arange(8000) / 16000), 16000)
    Image.fromarray(np.linspace(0, 255, 64 * 96, dtype=np.uint8).reshape(64, 96)).save(d / "spec.png")
    frames = [Image.fromarray(np.full((32, 32, 3), 60 * i, np.uint8)) for i in range(4)]
    frames[0].save(d / "anim.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    box = trimesh.creation.box()
    box.visual.vertex_colors = np.tile([220, 30, 30, 255], (len(box.vertices), 1))
    box.export(d / "red box.glb")  # a space in the name: links must be escaped properly
    (d / "walk.bvh").write_text("HIERARCHY\n")
    return write_index(d, {
        "Audio": [Artifact("audio", d / "tone.wav", "A tone"), Artifact("image", d / "spec.png", "Mel")],
        "Motion": [Artifact("image", d / "anim.gif", "walk </script> preview"),
                   Artifact("download", d / "walk.bvh", "BVH")],
        "3D": [Artifact("model", d / "red box.glb", "a red cube", poster=d / "spec.png")],
    })


def test_missing_artifact_writes_nothing(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing written"):
        write_index(tmp_path, {"x": [Artifact("audio", tmp_path / "none.wav", "gone")]})
    assert not (tmp_path / "index.html").exists()
    with pytest.raises(ValueError, match="kind 'sound' unknown"):
        Artifact("sound", tmp_path / "a.wav", "a")


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (scripts/test.sh installs it)")
@pytest.mark.skipif(find_model_viewer() is None, reason="model-viewer not installed (scripts/bootstrap.sh)")
def test_page_loads_every_asset_in_headless_chromium(tmp_path):
    playwright = pytest.importorskip("playwright.sync_api")
    index = make_page(tmp_path)
    messages = []
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--enable-unsafe-swiftshader", "--use-angle=swiftshader"])
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 1300})
            page.on("console", lambda m: messages.append((m.type, m.text)))
            page.on("pageerror", lambda e: messages.append(("pageerror", str(e))))
            page.goto(index.as_uri())
            page.wait_for_function("document.getElementById('asset-status').dataset.done === 'true'",
                                   timeout=60_000)
            status = json.loads(page.inner_text("#asset-status"))
            viewer = page.query_selector("model-viewer")
            page.wait_for_function("document.querySelector('model-viewer').loaded === true", timeout=60_000)
            page.wait_for_timeout(500)
            pixels = np.asarray(Image.open(__import__("io").BytesIO(viewer.screenshot())).convert("RGB"))
            page.screenshot(path=str(tmp_path / "screenshot.png"), full_page=True)
        finally:
            browser.close()
    assert status == {"total": 4, "ok": 4, "failed": [], "errors": []}, status
    errors = [m for m in messages if m[0] in ("error", "pageerror")]
    assert not errors, errors
    # the red box is drawn: many pixels far more red than green/blue, and the view is not uniform
    red = (pixels[..., 0].astype(int) - pixels[..., 1:].max(-1)) > 80
    assert red.mean() > 0.05 and pixels.std() > 10
    assert (tmp_path / "screenshot.png").stat().st_size > 10_000
