"""The built-in image prior: trained by the shared trainer, saved, loaded back, and read through SDS."""

import sys
import types

import numpy as np
import pytest
import torch
from polydiff.core.checkpoint import CheckpointError
from polydiff.core.train import latest_checkpoint
from polydiff.threed.cameras import make_cameras, view_prompts
from polydiff.threed.dataset import caption
from polydiff.threed.primitives import single
from polydiff.threed.prior import DEFAULT_PRIOR, BuiltinPrior, ImageDenoiser, load_prior
from polydiff.threed.sds import ImagePrior

TINY_NET = ["model.resolution=16", "model.channels=16", "model.channel_mult=[1,2]", "model.attn_levels=[1]",
            "model.max_text_tokens=16"]


_TRAINED: dict = {}


pytestmark = pytest.mark.usefixtures("one_thread")


def train_tiny_prior(tmp_path_factory, steps: int = 8):
    """Render 48 views at 16 px, train a tiny prior for `steps` through core.train.fit; returns (run
    folder, last checkpoint). Trained once per test session (test_threed_generate uses it too)."""
    from polydiff.threed.train_prior import train

    if steps in _TRAINED:
        return _TRAINED[steps]
    tmp = tmp_path_factory.mktemp("tiny_prior")

    result = train(None, [*TINY_NET, f"data.root={tmp / 'data'}", "data.images=48", f"train.out_dir={tmp / 'run'}",
                          f"train.steps={steps}", "train.batch_size=8", "train.warmup_steps=1", "train.lr=0.002",
                          "train.checkpoint_every=4", "train.log_every=1", "train.ema_decay=0.5", "train.device=cpu"])
    assert result.step == steps
    _TRAINED[steps] = tmp, latest_checkpoint(tmp / "run")
    return _TRAINED[steps]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return train_tiny_prior(tmp_path_factory)


def _probe(model, prior, seed=0):
    g = torch.Generator().manual_seed(seed)
    x0 = torch.rand(3, 3, 16, 16, generator=g) * 2 - 1
    noise = torch.randn(x0.shape, generator=g)
    t = torch.tensor([50, 400, 900])
    abar = prior.alphas_cumprod[t].reshape(-1, 1, 1, 1)
    return abar.sqrt() * x0 + (1 - abar).sqrt() * noise, t


def test_training_lowers_the_denoising_loss_and_checkpoints_round_trip(trained):
    from polydiff.core.losses import diffusion_loss
    from polydiff.threed.train_prior import PriorImages, text_bank_for

    tmp, ckpt = trained
    trained_net = ImageDenoiser.from_pretrained(ckpt)
    fresh = ImageDenoiser(**trained_net.config)
    data = PriorImages(tmp / "data")
    x0, ids = torch.utils.data.default_collate([data[i] for i in range(32)])
    cond = text_bank_for(data, tmp / "data", fresh)(ids, "cpu")
    kw = {"tokens": cond.tokens, "token_mask": cond.mask, "pooled": cond.pooled}
    g = torch.Generator().manual_seed(1)
    sigma, noise = torch.exp(torch.randn(32, generator=g) * 1.2 - 0.6), torch.randn(x0.shape, generator=g)
    with torch.no_grad():
        before, after = (diffusion_loss(m, x0, kw, sigma=sigma, noise=noise).item() for m in (fresh, trained_net))
    assert after < 0.8 * before
    # load_prior reads a training checkpoint's EMA weights: the same numbers as loading them by hand
    prior = load_prior(ckpt)
    assert isinstance(prior, ImagePrior) and isinstance(prior, BuiltinPrior) and prior.resolution == 16
    ema = ImageDenoiser.from_pretrained(ckpt, use_ema=True)
    x_t, t = _probe(ema, prior)
    emb = prior.encode_text(["a red cube, front view", "a blue ball", "a green cone on a red cube"])
    eps = prior.predict_eps(x_t, t, emb)
    abar = prior.alphas_cumprod[t].reshape(-1, 1, 1, 1)
    sigma = ((1 - abar) / abar).sqrt()
    with torch.no_grad():
        x0 = ema(x_t / abar.sqrt(), sigma.flatten(), **emb)
    assert torch.allclose(eps, (x_t / abar.sqrt() - x0) / sigma, atol=1e-5)


def test_float16_export_is_small_and_predicts_like_the_float32_weights(trained, tmp_path):
    from polydiff.threed.train_prior import export

    tmp, ckpt = trained
    dest = export(tmp / "run", tmp_path / "prior")
    full, half = load_prior(ckpt), load_prior(dest)
    assert (dest / "ema.safetensors").exists() is False
    assert (dest / "model.safetensors").stat().st_size < 0.6 * (ckpt / "ema.safetensors").stat().st_size
    x_t, t = _probe(full.model, full)
    emb = full.encode_text(["a red cube"] * 3)
    a, b = full.predict_eps(x_t, t, emb), half.predict_eps(x_t, t, emb)
    assert (a - b).abs().max() < 1e-2 * a.abs().max()


def test_blank_prompt_is_the_null_condition_also_inside_a_mixed_batch(trained):
    prior = load_prior(trained[1])
    x_t, t = _probe(prior.model, prior)
    null = prior.predict_eps(x_t, t, {"tokens": None, "token_mask": None, "pooled": None})
    blank = prior.predict_eps(x_t, t, prior.encode_text(["", "", ""]))
    assert torch.equal(null, blank)
    mixed = prior.predict_eps(x_t, t, prior.encode_text(["a red cube", "", "a blue ball"]))
    cond = prior.predict_eps(x_t, t, prior.encode_text(["a red cube", "a red cube", "a blue ball"]))
    assert torch.allclose(mixed[1], null[1], atol=1e-5)
    assert torch.allclose(mixed[[0, 2]], cond[[0, 2]], atol=1e-5)
    assert not torch.allclose(cond[0], null[0], atol=1e-4)     # the text reaches the network


def test_load_prior_dispatches_by_folder_layout(tmp_path, monkeypatch):
    with pytest.raises(CheckpointError, match="not found"):
        load_prior(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="model_index.json"):
        load_prior(tmp_path / "empty")
    sd = tmp_path / "sd"
    sd.mkdir()
    (sd / "model_index.json").write_text("{}")
    calls = []
    fake = types.ModuleType("polydiff.threed.sd_prior")
    fake.is_diffusers_folder = lambda path: True
    fake.StableDiffusionPrior = types.SimpleNamespace(from_folder=lambda path, device: calls.append((path, device)) or "sd")
    monkeypatch.setitem(sys.modules, "polydiff.threed.sd_prior", fake)
    monkeypatch.setattr(sys.modules["polydiff.threed"], "sd_prior", fake, raising=False)
    assert load_prior(sd) == "sd" and calls == [(sd, torch.device("cpu"))]


def test_generation_prompts_are_captions_the_prior_was_trained_on():
    """What `generate` feeds the prior ("a red cube, back view") is one of the training captions."""
    rng = np.random.default_rng(0)
    scene = single("cube", "red")
    cams = make_cameras([10.0, 10.0, 10.0, 80.0], [0.0, 90.0, 180.0, 0.0], 2.0, 45.0)
    wanted = set(view_prompts("a red cube", cams))
    assert wanted == {"a red cube, front view", "a red cube, side view", "a red cube, back view",
                      "a red cube, overhead view"}
    seen = {caption(scene, v, rng) for v in ("front", "side", "back", "overhead") for _ in range(1500)}
    assert wanted <= seen


@pytest.mark.skipif(not (DEFAULT_PRIOR / "config.json").is_file(), reason="no shipped prior yet")
def test_shipped_prior_loads_is_small_and_knows_colours():
    size = sum(p.stat().st_size for p in DEFAULT_PRIOR.iterdir())
    assert size <= 25 * 2**20
    prior = load_prior()
    assert prior.resolution == 32
    from polydiff.threed.prior import sample_images

    imgs = sample_images(prior, ["a red cube", "a blue cube"], steps=10, seed=0)      # (2, 3, 32, 32)
    fg = (imgs.mean(1, keepdim=True) < 0.8).expand_as(imgs)                           # not the white ground
    red = imgs[0][fg[0]].reshape(3, -1).mean(1)
    blue = imgs[1][fg[1]].reshape(3, -1).mean(1)
    assert red[0] > red[2] + 0.2 and blue[2] > blue[0] + 0.2
