"""Backbones and embeddings: shapes, masks, attention maths, symmetries, zero init, checkpoints."""

import math

import pytest
import torch
from polydiff.core.conditioning import Condition
from polydiff.core.embeddings import FourierEmbedding, NoiseEmbedding, sinusoidal, sinusoidal_positions
from polydiff.core.transformer import Attention, DiT
from polydiff.core.unet import UNet1D, UNet2D

C, D = 4, 8  # data channels, condition width


def make(kind, **kw):
    torch.manual_seed(0)
    if kind == "unet1d":
        net = UNet1D(C, channels=16, channel_mult=(1, 2, 2), num_res_blocks=1, attn_levels=(1,), groups=4,
                     cond_dim=D, pooled_dim=D, **kw)
    elif kind == "unet2d":
        net = UNet2D(C, channels=16, channel_mult=(1, 2), num_res_blocks=1, attn_levels=(1,), groups=4,
                     cond_dim=D, pooled_dim=D, **kw)
    elif kind == "dit":
        net = DiT(C, dim=32, depth=2, heads=4, cond_dim=D, pooled_dim=D, **kw)
    elif kind == "dit_image":
        net = DiT(C, dim=32, depth=2, heads=4, patch_size=2, image=True, cond_dim=D, pooled_dim=D, **kw)
    return net.eval()


def randomize(net, scale=0.2):
    """Perturb every parameter so zero-initialised layers take part (a trained net, not a fresh one)."""
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * scale)
    return net


def data(kind, b=2, t=13, h=9, w=11):
    g = torch.Generator().manual_seed(2)
    shape = (b, C, h, w) if kind in ("unet2d", "dit_image") else (b, C, t)
    return torch.randn(shape, generator=g), torch.randn(b, generator=g)


def condition(b=2, length=5, valid=(3, 5)):
    g = torch.Generator().manual_seed(3)
    mask = torch.arange(length)[None] < torch.tensor(valid)[:, None]
    return Condition(torch.randn(b, length, D, generator=g), mask, torch.randn(b, D, generator=g))


KINDS = ["unet1d", "unet2d", "dit", "dit_image"]


pytestmark = pytest.mark.usefixtures("one_thread")


# --- embeddings -------------------------------------------------------------------------------

def test_sinusoidal_matches_closed_form_and_relative_positions():
    x = torch.tensor([0.0, 1.5, -3.0])
    e = sinusoidal(x, 8, max_period=100.0)
    k = torch.arange(4)
    w = 100.0 ** (-k / 4)
    assert torch.allclose(e, torch.cat([torch.cos(x[:, None] * w), torch.sin(x[:, None] * w)], 1), atol=1e-6)
    # <PE(p), PE(p + k)> = sum_j cos(k w_j) depends only on the offset k
    pe = sinusoidal_positions(40, 16)
    dots = (pe[:-5] * pe[5:]).sum(-1)
    assert torch.allclose(dots, dots[0].expand_as(dots), atol=1e-4)


def test_fourier_features_are_fixed_buffers_with_unit_norm_pairs():
    emb = FourierEmbedding(64, scale=16.0)
    assert "freqs" in dict(emb.named_buffers()) and not list(emb.parameters())
    assert torch.equal(emb.freqs, FourierEmbedding(64, scale=16.0).freqs)  # same seed, same features
    e = emb(torch.linspace(-3, 3, 7))
    assert torch.allclose(e[:, :32] ** 2 + e[:, 32:] ** 2, torch.ones(7, 32), atol=1e-5)
    assert abs(emb.freqs.std().item() - 16.0) < 16.0 * 0.5  # bandwidth set by `scale`


def test_noise_embedding_broadcasts_a_scalar_noise_level():
    emb = NoiseEmbedding(16)
    assert torch.allclose(emb(torch.tensor(0.3), batch_size=3), emb(torch.full((3,), 0.3)))


# --- attention --------------------------------------------------------------------------------

def test_attention_matches_naive_softmax_with_key_mask():
    torch.manual_seed(0)
    att = Attention(12, heads=3, context_dim=5)
    x, ctx = torch.randn(3, 4, 12), torch.randn(3, 6, 5)
    key_mask = torch.tensor([[1, 1, 0, 1, 0, 0], [1] * 6, [0] * 6]).bool()  # last sample: no key at all
    out = att(x, ctx, key_mask)

    q = (x @ att.to_q.weight.T + att.to_q.bias).view(3, 4, 3, 4).transpose(1, 2)
    kv = ctx @ att.to_kv.weight.T + att.to_kv.bias
    k, v = (t.view(3, 6, 3, 4).transpose(1, 2) for t in kv.chunk(2, -1))
    logits = q @ k.transpose(-1, -2) / math.sqrt(4) + torch.where(key_mask, 0.0, -math.inf)[:, None, None]
    ref = torch.softmax(logits, -1) @ v
    ref = ref.transpose(1, 2).reshape(3, 4, 12) @ att.to_out.weight.T + att.to_out.bias
    assert torch.allclose(out[:2], ref[:2], atol=1e-5)
    assert torch.equal(out[2], torch.zeros(4, 12))  # nothing to attend to: no update, not NaN


# --- backbones --------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", KINDS)
def test_untrained_output_is_exactly_zero(kind):
    net = make(kind)
    x, c = data(kind)
    assert torch.equal(net(x, c, condition()), torch.zeros_like(x))


@pytest.mark.parametrize("kind,size", [("unet1d", 1), ("unet1d", 7), ("unet1d", 22), ("dit", 13),
                                       ("unet2d", (5, 9)), ("dit_image", (7, 10))])
def test_shapes_for_lengths_not_divisible_by_the_downsampling(kind, size):
    net = randomize(make(kind, patch_size=3) if kind == "dit" else make(kind))
    x, c = data(kind, t=size) if isinstance(size, int) else data(kind, h=size[0], w=size[1])
    y = net(x, c, condition())
    assert y.shape == x.shape and torch.isfinite(y).all()


@pytest.mark.parametrize("kind", ["unet1d", "dit", "dit_patch"])
def test_padded_frames_do_not_reach_real_frames(kind):
    net = randomize(make("dit", patch_size=2) if kind == "dit_patch" else make(kind.replace("_patch", "")))
    x, c = data("dit", t=19)
    mask = torch.arange(19)[None] < torch.tensor([11, 19])[:, None]
    y = net(x, c, condition(), mask)
    x2 = torch.where(mask[:, None], x, 100 * torch.randn_like(x))
    y2 = net(x2, c, condition(), mask)
    assert torch.allclose(y, y2, atol=1e-5)
    assert torch.equal(y[0, :, 11:], torch.zeros(C, 8))  # padding comes out as 0
    # ... and the real frames are what the net gives the sequence alone, unpadded (variable length)
    alone = net(x[:1, :, :11], c[:1], condition().select(slice(0, 1)))
    assert torch.allclose(y[:1, :, :11], alone, atol=1e-4)
    assert (y[0, :, :11] - y[0, :, :11].mean()).abs().max() > 1e-2  # not a trivially constant output


@pytest.mark.parametrize("kind", KINDS)
def test_masked_condition_tokens_have_no_effect(kind):
    net = randomize(make(kind))
    x, c = data(kind)
    cond = condition(valid=(2, 4))
    y = net(x, c, cond)
    changed = cond.tokens.clone()
    changed[0, 2:] += 50.0
    changed[1, 4:] -= 50.0
    assert torch.allclose(net(x, c, Condition(changed, cond.mask, cond.pooled)), y, atol=1e-5)
    changed[0, 0] += 1.0  # control: a real token does matter
    assert not torch.allclose(net(x, c, Condition(changed, cond.mask, cond.pooled)), y, atol=1e-4)


@pytest.mark.parametrize("kind", KINDS)
def test_condition_tokens_are_a_set(kind):
    # Cross-attention carries no position code on the keys: permuting the tokens (with their mask) is a no-op.
    net = randomize(make(kind))
    x, c = data(kind)
    cond = condition(valid=(3, 5))
    perm = torch.tensor([4, 0, 3, 1, 2])
    permuted = Condition(cond.tokens[:, perm], cond.mask[:, perm], cond.pooled)
    assert torch.allclose(net(x, c, cond), net(x, c, permuted), atol=1e-5)


def test_dit_without_positions_is_permutation_equivariant():
    net = randomize(make("dit", positions="none"))
    x, c = data("dit", t=9)
    perm = torch.randperm(9, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(net(x, c, condition())[..., perm], net(x[..., perm], c, condition()), atol=1e-5)
    # with positions the order matters (the same test would fail)
    net = randomize(make("dit"))
    assert not torch.allclose(net(x, c, condition())[..., perm], net(x[..., perm], c, condition()), atol=1e-3)


def test_unet1d_commutes_with_shifts_by_the_downsampling_unit():
    net = randomize(make("unet1d"))  # 3 levels: unit 4 frames
    x, c = data("unet1d", t=12)
    big = torch.zeros(2, C, 28)
    big[..., 8:20] = x
    mask = torch.zeros(2, 28, dtype=torch.bool)
    mask[:, 8:20] = True
    assert torch.allclose(net(big, c, condition(), mask)[..., 8:20], net(x, c, condition()), atol=1e-4)


@pytest.mark.parametrize("kind", KINDS)
def test_samples_do_not_see_each_other(kind):
    net = randomize(make(kind))
    x, c = data(kind, b=3)
    cond = Condition.cat([condition(), condition(b=1, valid=(4,))])
    y = net(x, c, cond)
    assert torch.allclose(y[1:2], net(x[1:2], c[1:2], cond.select(slice(1, 2))), atol=1e-5)


@pytest.mark.parametrize("kind", ["unet1d", "dit"])
def test_pooled_condition_and_noise_level_change_the_output(kind):
    net = randomize(make(kind))
    x, c = data(kind)
    cond = condition()
    y = net(x, c, cond)
    assert not torch.allclose(y, net(x, c + 1.0, cond), atol=1e-4)
    assert not torch.allclose(y, net(x, c, Condition(cond.tokens, cond.mask, cond.pooled + 1.0)), atol=1e-4)


@pytest.mark.parametrize("kind", KINDS)
def test_checkpoint_round_trip(kind, tmp_path):
    net = randomize(make(kind))
    net.save_pretrained(tmp_path / kind)
    loaded = type(net).from_pretrained(tmp_path / kind)
    assert loaded.config == {k: list(v) if isinstance(v, tuple) else v for k, v in net.config.items()}
    x, c = data(kind)
    assert torch.equal(loaded(x, c, condition()), net(x, c, condition()))


def test_one_training_step_moves_a_zero_initialised_net():
    net = make("dit").train()
    x, c = data("dit")
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    ((net(x, c, condition()) - x) ** 2).mean().backward()
    opt.step()
    assert net(x, c, condition()).abs().max() > 0


def test_wrong_input_rank_is_a_clear_error():
    with pytest.raises(ValueError, match="expects a 3-D input"):
        make("unet1d")(torch.zeros(1, C, 4, 4), torch.zeros(1))
    with pytest.raises(ValueError, match="max_len"):
        make("dit", positions="learned", max_len=8)(torch.zeros(1, C, 9), torch.zeros(1))


def test_infinite_noise_level_gives_a_finite_embedding():
    # EDM's c_noise = log(sigma) / 4 is inf at the pure-noise end sigma = inf
    assert torch.isfinite(NoiseEmbedding(16)(torch.tensor([float("inf"), 0.0]))).all()


@pytest.mark.parametrize("kind", ["unet1d", "dit"])
def test_wrapped_by_edm_preconditioning_an_untrained_net_gives_c_skip_x(kind):
    from polydiff.core.precond import EDMPrecond

    denoiser = EDMPrecond(make(kind), sigma_data=0.5)
    x, _ = data(kind)
    sigma = torch.tensor([0.1, 3.0])
    mask = torch.ones(2, x.shape[-1], dtype=torch.bool)
    out = denoiser(x, sigma, cond=condition(), mask=mask)  # the net's keywords pass through
    assert torch.allclose(out, 0.25 / (sigma**2 + 0.25)[:, None, None] * x, atol=1e-6)


def test_masked_group_norm_matches_group_norm_on_the_real_part():
    from polydiff.core.unet import MaskedGroupNorm

    norm = MaskedGroupNorm(2, 6)
    torch.nn.init.normal_(norm.weight)
    torch.nn.init.normal_(norm.bias)
    x = torch.randn(3, 6, 10) * 3 + 1
    assert torch.allclose(norm(x, torch.ones(3, 1, 10)), torch.nn.functional.group_norm(
        x, 2, norm.weight, norm.bias, norm.eps), atol=1e-5)
    m = torch.zeros(3, 1, 10)
    m[..., :7] = 1  # statistics of the first 7 positions only = GroupNorm of the cropped input
    ref = torch.nn.functional.group_norm(x[..., :7], 2, norm.weight, norm.bias, norm.eps)
    assert torch.allclose(norm(x, m)[..., :7], ref, atol=1e-5)


@pytest.mark.parametrize("kind", ["unet1d", "dit"])
def test_bf16_autocast_stays_close_to_fp32(kind):
    net = randomize(make(kind, mid_attention=False) if kind == "unet1d" else make(kind), scale=0.05)
    x, c = data(kind, t=16)
    mask = torch.arange(16)[None] < torch.tensor([11, 16])[:, None]
    y = net(x, c, condition(), mask)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y16 = net(x, c, condition(), mask).float()
    assert torch.isfinite(y16).all()
    assert (y16 - y).norm() < 0.05 * y.norm()


@pytest.mark.parametrize("kind", ["unet1d", "dit"])
def test_cross_attention_alone_carries_a_class_condition(kind):
    # Output must be a class-specific pattern; the class reaches the net only through cross-attention
    # tokens (no pooled vector), so fitting it means the cross-attention path learns.
    from polydiff.core.conditioning import ClassConditioner

    torch.manual_seed(0)
    if kind == "unet1d":
        net = UNet1D(C, channels=16, channel_mult=(1, 2), num_res_blocks=1, attn_levels=(1,), groups=4, cond_dim=D)
    else:
        net = DiT(C, dim=32, depth=2, heads=4, cond_dim=D)
    classes = ClassConditioner(3, D)
    patterns = torch.randn(3, C, 8)
    opt = torch.optim.Adam(list(net.parameters()) + list(classes.parameters()), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(150):
        labels = torch.randint(0, 3, (16,), generator=g)
        loss = (net(torch.randn(16, C, 8, generator=g), torch.zeros(16), classes(labels)) - patterns[labels]).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    labels = torch.arange(3)
    with torch.no_grad():
        err = (net(torch.randn(3, C, 8, generator=g), torch.zeros(3), classes(labels)) - patterns).square().mean()
    assert err < 0.05 * patterns.var()  # the class-blind best (the mean pattern) leaves ~2/3 of the variance
