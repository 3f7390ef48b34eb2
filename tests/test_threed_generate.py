"""Text to mesh end to end: deferred shading against per-sample shading, SDS through a prior whose
answer is known, the tiny trained prior through `generate`, and the CLI's refusals."""

import math

import numpy as np
import pytest
import torch
import trimesh
from click.testing import CliRunner
from polydiff.core.cli import cli
from polydiff.threed.cameras import make_cameras
from polydiff.threed.generate import Settings, deferred_lambertian, generate
from polydiff.threed.metrics import default_lights
from polydiff.threed.render import render
from polydiff.threed.sds import DenoiserPrior

TINY = {"iters": 3, "batch": 1, "resolution": 16, "n_samples": 12, "mesh_resolution": 24, "field_resolutions": (8, 16)}


pytestmark = pytest.mark.usefixtures("one_thread")


class SmoothSphere:
    """k * sigmoid((r - |x|) / s): a sharp ball of one colour."""

    bound = 1.0

    def __init__(self, k=60.0, r=0.5, s=0.01, color=(0.8, 0.2, 0.1)):
        self.k, self.r, self.s, self.color = k, r, s, torch.tensor(color)

    def __call__(self, x):
        return self.density(x), self.color.expand(len(x), 3)

    def density(self, x):
        return self.k * torch.sigmoid((self.r - x.norm(dim=-1)) / self.s)


def test_deferred_shading_matches_per_sample_lambertian_on_a_sphere():
    ball = SmoothSphere()
    cams = make_cameras([10.0, 40.0], [0.0, 120.0], 2.0, 45.0)
    lights = default_lights(cams)
    kw = {"n_samples": 128, "early_stop": -1.0}
    ref = render(ball, cams, 32, background=(1.0, 1.0, 1.0), shading="lambertian", light_pos=lights,
                 ambient=0.35, normal_method="autograd", **kw)
    out = render(ball, cams, 32, background=None, shading="albedo", **kw)
    img = deferred_lambertian(out, cams, lights, 0.35)
    solid = (ref["opacity"] > 0.99).float()[:, None]
    inside = -torch.nn.functional.max_pool2d(-solid, 3, stride=1, padding=1)[:, 0] > 0.5   # 3x3 all solid
    # pixels away from the silhouette: the depth-map normal is the sphere's normal, the shading agrees
    assert inside.sum() > 200
    err = (img - ref["rgb"]).abs().amax(-1)[inside]
    assert err.mean() < 0.02 and err.max() < 0.1
    # background pixels are the white background in both
    empty = ref["opacity"] < 1e-3
    assert torch.allclose(img[empty], torch.ones_like(img[empty]), atol=1e-3)


def test_sds_through_a_point_mass_prior_paints_the_mesh_its_colour():
    """A prior whose every image is one flat red picture (its exact denoiser returns that picture):
    distillation must turn the field's albedo red (the untrained albedo is grey on average)."""
    red = torch.tensor([0.85, 0.1, 0.1]) * 2 - 1
    target = red[None, :, None, None]
    ac = torch.cumprod(1 - torch.linspace(8.5e-4, 0.012, 1000, dtype=torch.float64), 0).float()
    prior = DenoiserPrior(lambda x, sigma: target.expand_as(x), lambda prompts: {}, ac)
    prior.resolution = 16
    asset = generate("a red cube", prior=prior, settings=Settings(**{**TINY, "iters": 60, "batch": 2}),
                     progress_bar=False, lr=0.05)
    rgb = np.asarray(asset.mesh.visual.vertex_colors)[:, :3] / 255.0
    assert rgb[:, 0].mean() > rgb[:, 1].mean() + 0.2 and rgb[:, 0].mean() > rgb[:, 2].mean() + 0.2


@pytest.fixture(scope="module")
def tiny_prior(tmp_path_factory):
    from tests.test_threed_prior import train_tiny_prior

    return train_tiny_prior(tmp_path_factory)[1]


@pytest.mark.parametrize("suffix", [".glb", ".ply"])
def test_generate_with_a_tiny_trained_prior_writes_a_mesh_trimesh_loads(tiny_prior, tmp_path, suffix):
    seen = []
    asset = generate("a red cube", prior=tiny_prior, settings=Settings(**TINY), progress_bar=False,
                     callback=lambda step, info: seen.append(info["loss"]))
    assert len(seen) == TINY["iters"] and all(math.isfinite(v) for v in seen)
    field, mesh = asset
    assert field is asset.field
    path = asset.save(tmp_path / f"cube{suffix}")
    loaded = trimesh.load(path, force="mesh")
    assert len(loaded.faces) == len(mesh.faces) > 0
    assert np.allclose(np.sort(loaded.vertices, 0), np.sort(mesh.vertices, 0), atol=1e-4)
    assert loaded.is_watertight == mesh.is_watertight
    assert list(tmp_path.iterdir()) == [path]
    if suffix == ".glb":
        from PIL import Image

        gif = asset.turntable(tmp_path / "turn.gif", n_frames=3, resolution=16)
        with Image.open(gif) as im:
            assert im.n_frames == 3 and im.size == (16, 16)


def test_cli_generates_a_mesh(tiny_prior, tmp_path):
    out = tmp_path / "sub" / "cube.obj"
    res = CliRunner().invoke(cli, ["-q", "threed", "generate", "a blue ball", "-o", str(out), "--iters", "2",
                                   "--prior", str(tiny_prior), "--mesh-resolution", "24"])
    assert res.exit_code == 0, res.output
    assert len(trimesh.load(out, force="mesh").faces) > 0
    assert sorted(p.name for p in out.parent.iterdir()) == ["cube.obj"]


@pytest.mark.parametrize("args, message", [
    (["", "-o", "{tmp}/x.glb"], "prompt is empty"),
    (["   ", "-o", "{tmp}/x.glb"], "prompt is empty"),
    (["a red cube", "-o", "{tmp}/file.txt/x.glb"], "not a folder"),
    (["a red cube", "-o", "{tmp}/x.stl"], "unsupported file type"),
    (["a red cube", "-o", "/proc/polydiff-test.glb"], "cannot write"),
    (["a red cube", "-o", "{tmp}/x.glb", "--preview", "{tmp}/file.txt/p.gif"], "not a folder"),
])
def test_cli_refuses_bad_input_before_any_work_and_writes_nothing(tmp_path, args, message):
    (tmp_path / "file.txt").write_text("not a folder")
    args = [a.format(tmp=tmp_path) for a in args]
    res = CliRunner().invoke(cli, ["threed", "generate", *args, "--prior", str(tmp_path / "no-such-prior")])
    assert res.exit_code != 0
    assert message in res.output
    assert "Traceback" not in res.output
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["file.txt"]


def test_generate_api_rejects_empty_prompt_and_unknown_settings():
    with pytest.raises(ValueError, match="non-empty"):
        generate("  ", prior=object())
    with pytest.raises(TypeError, match="unknown generate settings"):
        generate("a red cube", prior=object(), iterations=3)
