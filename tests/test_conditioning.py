"""Conditions, conditioners, the learned null condition and CFG condition dropout."""

import math

import pytest
import torch
from polydiff.core.conditioning import (
    ClassConditioner,
    Condition,
    FrameConditioner,
    NullCondition,
    TokenConditioner,
    condition_dropout,
    masked_mean,
)
from polydiff.core.transformer import DiT


pytestmark = pytest.mark.usefixtures("one_thread")


def cond(b=4, length=3, dim=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(b, length, generator=g) < 0.7
    mask[:, 0] = True
    return Condition(torch.randn(b, length, dim, generator=g), mask, torch.randn(b, dim, generator=g))


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_dropout_rate_is_within_binomial_bounds(p):
    n = 20_000
    c = Condition(torch.zeros(n, 1, 2), torch.ones(n, 1, dtype=torch.bool), torch.zeros(n, 2))
    null = NullCondition(2)
    with torch.no_grad():
        null.pooled.fill_(1.0)
    out = condition_dropout(c, null, p, torch.Generator().manual_seed(0))
    dropped = (out.pooled[:, 0] == 1.0).sum().item()
    assert abs(dropped - n * p) < 5 * math.sqrt(n * p * (1 - p))


def test_dropout_edges_and_determinism():
    c, null = cond(), NullCondition(6)
    assert condition_dropout(c, null, 0.0) is c
    all_null = condition_dropout(c, null, 1.0)
    assert all_null.mask[:, 1:].sum() == 0 and torch.equal(all_null.tokens[:, 0], null.tokens[0].expand(4, -1))
    a = condition_dropout(cond(64), null, 0.5, torch.Generator().manual_seed(7))
    b = condition_dropout(cond(64), null, 0.5, torch.Generator().manual_seed(7))
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.mask, b.mask)
    with pytest.raises(ValueError, match="probability"):
        condition_dropout(c, null, 1.5)


def test_dropped_samples_get_the_whole_null_condition_and_kept_ones_stay():
    c = cond(b=200, length=4)
    null = NullCondition(6, length=2)
    out = condition_dropout(c, null, 0.5, torch.Generator().manual_seed(1))
    dropped = (out.pooled == null.pooled).all(-1)
    assert 0 < dropped.sum() < 200
    # dropped: null tokens, null mask (its own tokens masked out), null pooled -- all three together
    assert torch.equal(out.tokens[dropped, :2], null.tokens.detach().expand(int(dropped.sum()), -1, -1))
    assert out.mask[dropped, :2].all() and not out.mask[dropped, 2:].any()
    # kept: untouched
    assert torch.equal(out.tokens[~dropped], c.tokens[~dropped]) and torch.equal(out.mask[~dropped], c.mask[~dropped])
    assert torch.equal(out.pooled[~dropped], c.pooled[~dropped])


def test_null_condition_is_learned_through_dropout():
    null = NullCondition(6, length=1)
    net = DiT(3, dim=16, depth=1, heads=2, cond_dim=6, pooled_dim=6)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    c = condition_dropout(cond(), null, 1.0)
    net(torch.randn(4, 3, 5), torch.zeros(4), c).square().mean().backward()
    assert null.tokens.grad.abs().sum() > 0 and null.pooled.grad.abs().sum() > 0


def test_condition_cat_select_and_validation():
    a, b = cond(2, 3), cond(3, 5, seed=1)
    both = Condition.cat([a, b])
    assert both.tokens.shape == (5, 5, 6)
    assert torch.equal(both.select(slice(0, 2)).tokens[:, :3], a.tokens) and not both.mask[:2, 3:].any()
    assert torch.equal(both.select(slice(2, 5)).tokens, b.tokens)
    with pytest.raises(ValueError, match="tokens"):
        Condition(torch.zeros(2, 3, 4), torch.ones(2, 4, dtype=torch.bool), torch.zeros(2, 4))


def test_masked_mean_is_the_mean_of_real_tokens():
    t = torch.tensor([[[1.0], [3.0], [100.0]], [[2.0], [4.0], [6.0]]])
    m = torch.tensor([[True, True, False], [True, True, True]])
    assert torch.equal(masked_mean(t, m), torch.tensor([[2.0], [4.0]]))


def test_class_conditioner():
    cc = ClassConditioner(5, 6)
    out = cc(torch.tensor([0, 3, 0]))
    assert out.tokens.shape == (3, 1, 6) and out.mask.all()
    assert torch.equal(out.tokens[0], out.tokens[2]) and torch.equal(out.pooled[:, None], out.tokens)
    with pytest.raises(ValueError, match=r"\[0, 5\)"):
        cc(torch.tensor([5]))


def test_token_conditioner_ignores_padding_and_sums_fields():
    torch.manual_seed(0)
    tc = TokenConditioner([12, 4], dim=8, depth=1, heads=2).eval()
    ids = torch.stack([torch.randint(0, 12, (2, 7)), torch.randint(0, 4, (2, 7))], -1)  # (B, L, 2)
    mask = torch.arange(7)[None] < torch.tensor([4, 7])[:, None]
    out = tc(ids, mask)
    other = ids.clone()
    other[0, 4:] = 0
    out2 = tc(other, mask)
    assert torch.allclose(out.tokens, out2.tokens, atol=1e-6) and torch.allclose(out.pooled, out2.pooled, atol=1e-6)
    assert torch.allclose(out.pooled, masked_mean(out.tokens, mask), atol=1e-6)
    assert torch.equal(out.tokens[0, 4:], torch.zeros(3, 8))
    with pytest.raises(ValueError, match="fields"):
        tc(ids[..., 0])


def test_token_conditioner_mask_from_pad_id():
    torch.manual_seed(0)
    tc = TokenConditioner(10, dim=8, depth=1, heads=2, pad_id=0).eval()
    ids = torch.tensor([[5, 3, 7, 0, 0], [1, 2, 3, 4, 9]])
    out = tc(ids)
    assert out.mask.tolist() == [[True, True, True, False, False], [True] * 5]
    assert torch.allclose(out.tokens[:1, :3], tc(ids[:1, :3]).tokens, atol=1e-5)


def test_frame_conditioner_strides_and_ignores_padding():
    torch.manual_seed(0)
    fc = FrameConditioner(5, dim=8, depth=1, heads=2, stride=4).eval()
    frames = torch.randn(2, 5, 18)
    mask = torch.arange(18)[None] < torch.tensor([9, 18])[:, None]
    out = fc(frames, mask)
    assert out.tokens.shape == (2, 5, 8)  # ceil(18 / 4) tokens
    assert out.mask.tolist() == [[True, True, True, False, False], [True] * 5]
    noisy = torch.where(mask[:, None], frames, torch.randn_like(frames) * 10)
    assert torch.allclose(fc(noisy, mask).tokens, out.tokens, atol=1e-5)
