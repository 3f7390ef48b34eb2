"""The diffusers-layout Stable Diffusion prior (threed.sd_prior), on a tiny random pipeline built here.

Nothing is downloaded: the test builds a UNet2DConditionModel, an AutoencoderKL, a CLIP text encoder and
a CLIP tokenizer (letter vocabulary written below) with random weights and saves them as a diffusers
pipeline folder. References are computed by calling diffusers / transformers directly.
"""

from __future__ import annotations

import json
import shutil

import diffusers
import pytest
import torch
import transformers
from polydiff.core.checkpoint import CheckpointError
from polydiff.threed.cameras import make_cameras
from polydiff.threed.field import RadianceField
from polydiff.threed.prior import load_prior
from polydiff.threed.render import render
from polydiff.threed.sd_prior import (
    StableDiffusionPrior,
    alphas_cumprod_from_config,
    eps_from_prediction,
    is_diffusers_folder,
)
from polydiff.threed.sds import score_distillation

MAX_TOKENS = 12


def tiny_tokenizer():
    # letters and end-of-word letters, no merges: every word is spelt out letter by letter
    letters = "abcdefghijklmnopqrstuvwxyz"
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for tok in [*letters, *(c + "</w>" for c in letters), ",</w>"]:
        vocab[tok] = len(vocab)
    return transformers.CLIPTokenizer(vocab=vocab, merges=[], model_max_length=MAX_TOKENS), len(vocab)


def build_pipeline(folder, prediction_type="epsilon"):
    torch.manual_seed(0)
    tokenizer, vocab_size = tiny_tokenizer()
    text_encoder = transformers.CLIPTextModel(transformers.CLIPTextConfig(
        vocab_size=vocab_size, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
        max_position_embeddings=MAX_TOKENS, projection_dim=16, bos_token_id=0, eos_token_id=1, pad_token_id=1))
    unet = diffusers.UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(8, 16),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=16, attention_head_dim=4, norm_num_groups=4)
    vae = diffusers.AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16), latent_channels=4,
        layers_per_block=1, norm_num_groups=4, sample_size=16)
    scheduler = diffusers.DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                                        prediction_type=prediction_type, clip_sample=False)
    # the layout StableDiffusionPipeline.save_pretrained writes, part by part (importing the pipeline
    # module alone takes seconds)
    parts = {"unet": unet, "vae": vae, "text_encoder": text_encoder, "tokenizer": tokenizer, "scheduler": scheduler}
    for name, part in parts.items():
        part.save_pretrained(folder / name)
    index = {"_class_name": "StableDiffusionPipeline", "_diffusers_version": diffusers.__version__,
             "safety_checker": [None, None], "feature_extractor": [None, None], "requires_safety_checker": False,
             **{name: [type(part).__module__.split(".")[0], type(part).__name__]
                for name, part in parts.items()}}
    (folder / "model_index.json").write_text(json.dumps(index, indent=2))
    return folder


@pytest.fixture(scope="module")
def sd_folder(tmp_path_factory):
    return build_pipeline(tmp_path_factory.mktemp("tiny-sd"))


@pytest.fixture(scope="module")
def prior(sd_folder):
    return StableDiffusionPrior.from_folder(sd_folder, "cpu")


def test_is_diffusers_folder(sd_folder, tmp_path):
    assert is_diffusers_folder(sd_folder)
    empty = tmp_path / "empty"
    empty.mkdir()
    ours = tmp_path / "ours"
    RadianceField(resolutions=(4,), hidden=4).save_pretrained(ours)
    assert (ours / "config.json").is_file()
    assert not is_diffusers_folder(empty)
    assert not is_diffusers_folder(ours)
    assert not is_diffusers_folder(tmp_path / "does-not-exist")
    assert not is_diffusers_folder(sd_folder / "model_index.json")


def test_latents_and_text_match_direct_calls(prior, sd_folder):
    """encode_images / encode_text / predict_eps against the components called by hand."""
    vae = diffusers.AutoencoderKL.from_pretrained(sd_folder / "vae")
    unet = diffusers.UNet2DConditionModel.from_pretrained(sd_folder / "unet")
    tok = transformers.CLIPTokenizer.from_pretrained(sd_folder / "tokenizer")
    enc = transformers.CLIPTextModel.from_pretrained(sd_folder / "text_encoder")
    assert prior.image_size == (16, 16)            # UNet sample 8 x VAE downsampling 2

    g = torch.Generator().manual_seed(1)
    images = torch.rand(2, 3, 16, 16, generator=g)
    with torch.no_grad():
        z_ref = vae.encode(images * 2 - 1).latent_dist.mean * vae.config.scaling_factor
        ids = tok(["a red cube", ""], padding="max_length", max_length=MAX_TOKENS, return_tensors="pt").input_ids
        emb_ref = enc(ids)[0]
    torch.testing.assert_close(prior.encode_images(images), z_ref)
    emb = prior.encode_text(["a red cube", ""])
    torch.testing.assert_close(emb, emb_ref)
    assert emb.shape == (2, MAX_TOKENS, 16)
    assert (emb[0] - emb[1]).abs().max() > 1e-3    # the prompt is not lost to unknown tokens

    x_t = torch.randn(2, 4, 8, 8, generator=g)
    t = torch.tensor([10, 900])
    with torch.no_grad():
        out_ref = unet(x_t, t, encoder_hidden_states=emb_ref).sample
    torch.testing.assert_close(prior.predict_eps(x_t, t, emb), out_ref)   # epsilon model: eps is the output

    # a render of another size is resized to the VAE's input first
    small = torch.rand(1, 3, 8, 8, generator=g)
    up = torch.nn.functional.interpolate(small, size=(16, 16), mode="bilinear", align_corners=False)
    with torch.no_grad():
        torch.testing.assert_close(prior.encode_images(small),
                                   vae.encode(up * 2 - 1).latent_dist.mean * vae.config.scaling_factor)


def test_alphas_cumprod_match_diffusers_schedulers(prior):
    """Our reading of scheduler configs against diffusers' own DDPMScheduler tables."""
    ref = diffusers.DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012).alphas_cumprod
    torch.testing.assert_close(prior.alphas_cumprod, ref.float())
    for cfg in ({"beta_schedule": "linear", "num_train_timesteps": 500},
                {"beta_schedule": "squaredcos_cap_v2"},
                {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012,
                 "rescale_betas_zero_snr": True}):
        torch.testing.assert_close(alphas_cumprod_from_config(cfg),
                                   diffusers.DDPMScheduler(**cfg).alphas_cumprod.float(), atol=1e-6, rtol=1e-5)


def test_prediction_type_conversions_recover_eps():
    """v (from diffusers' get_velocity) and x0 predictions of the true (x0, eps) give back eps exactly."""
    sched = diffusers.DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    g = torch.Generator().manual_seed(2)
    x0, eps = torch.randn(3, 4, 8, 8, generator=g), torch.randn(3, 4, 8, 8, generator=g)
    t = torch.tensor([0, 400, 999])
    x_t = sched.add_noise(x0, eps, t)
    abar = sched.alphas_cumprod[t].float()
    torch.testing.assert_close(eps_from_prediction(sched.get_velocity(x0, eps, t), x_t, abar, "v_prediction"), eps,
                               atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(eps_from_prediction(x0, x_t, abar, "sample"), eps, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(eps_from_prediction(eps, x_t, abar, "epsilon"), eps)


def test_v_prediction_folder(prior, sd_folder, tmp_path):
    """The same UNet read as a v-predictor: eps = sqrt(abar) v + sqrt(1 - abar) x_t, v the raw output."""
    folder = tmp_path / "v"
    shutil.copytree(sd_folder, folder)
    cfg_path = folder / "scheduler" / "scheduler_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg_path.write_text(json.dumps({**cfg, "prediction_type": "v_prediction"}))
    prior_v = StableDiffusionPrior.from_folder(folder, "cpu")
    assert prior_v.prediction_type == "v_prediction"
    g = torch.Generator().manual_seed(3)
    x_t = torch.randn(2, 4, 8, 8, generator=g)
    t = torch.tensor([50, 700])
    emb = prior.encode_text(["a blue sphere"]).expand(2, -1, -1)
    v = prior.predict_eps(x_t, t, emb)                    # the epsilon prior returns the raw UNet output
    abar = prior.alphas_cumprod[t][:, None, None, None]
    torch.testing.assert_close(prior_v.predict_eps(x_t, t, emb), abar.sqrt() * v + (1 - abar).sqrt() * x_t)


def test_sds_step_end_to_end_reaches_the_field(prior):
    """Render -> resize -> VAE encoder -> latent SDS: a finite, non-zero gradient on the field's
    parameters, and none on the frozen prior's."""
    torch.manual_seed(0)
    field = RadianceField(resolutions=(8,), features=2, hidden=8)
    cams = make_cameras([20.0, 10.0], [0.0, 150.0], 2.0, 50.0)
    out = render(field, cams, 8, background=(1.0, 1.0, 1.0), n_samples=12)
    images = out["rgb"].permute(0, 3, 1, 2)                                # (2, 3, 8, 8)
    cond = prior.encode_text(["a red cube, front view", "a red cube, back view"])
    uncond = prior.encode_text(["", ""])
    loss, info = score_distillation(prior, images, cond, uncond, cfg_scale=7.5,
                                    generator=torch.Generator().manual_seed(0))
    loss.backward()
    grads = [p.grad for p in field.parameters()]
    assert all(gr is not None and torch.isfinite(gr).all() for gr in grads)
    assert sum(gr.abs().sum() for gr in grads) > 0
    assert torch.isfinite(info["grad_norm"]).all() and (info["grad_norm"] > 0).all()
    for module in (prior.unet, prior.vae, prior.text_encoder):
        assert all(p.grad is None and not p.requires_grad for p in module.parameters())


def test_vae_checkpointing_gives_the_same_image_gradient(prior, sd_folder):
    """Recomputing the encoder's activations in backward changes memory, not the gradient."""
    plain = StableDiffusionPrior.from_folder(sd_folder, "cpu", vae_checkpointing=False)
    assert prior.vae_checkpointing and not plain.vae_checkpointing
    images = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(4))
    weights = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(5))
    grads = []
    for p in (prior, plain):
        x = images.clone().requires_grad_(True)
        (p.encode_images(x) * weights).sum().backward()
        grads.append(x.grad)
    assert grads[0].abs().sum() > 0
    torch.testing.assert_close(grads[0], grads[1])


def test_incomplete_folder_gives_one_clear_error(sd_folder, tmp_path):
    folder = tmp_path / "no-unet"
    shutil.copytree(sd_folder, folder)
    shutil.rmtree(folder / "unet")
    (folder / "scheduler" / "scheduler_config.json").unlink()
    assert is_diffusers_folder(folder)
    with pytest.raises(CheckpointError) as err:
        StableDiffusionPrior.from_folder(folder, "cpu")
    msg = str(err.value)
    assert str(folder) in msg and "unet/" in msg and "scheduler/scheduler_config.json" in msg
    assert "vae" not in msg                                                # only what is missing is named
    with pytest.raises(CheckpointError, match="unet/"):                    # the same through load_prior
        load_prior(folder)
    assert isinstance(load_prior(sd_folder), StableDiffusionPrior)
