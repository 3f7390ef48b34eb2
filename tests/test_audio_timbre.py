"""The learned note renderer (audio/timbre.py): its harmonic table against the codec's mel of a real sine,
how notes add, ties and drums, that fitting finds a known renderer again, and that a model built on it
keeps it frozen through training and checkpoints; the sharp training loss and the texture pass of the
sampler, each checked against the sampling path or a closed form."""

import itertools

import numpy as np
import pytest
import torch
from polydiff.audio.codec import N_MELS, SEGMENT_FRAMES, audio_to_mel, unit_to_db
from polydiff.audio.notes import Note, encode_segments, pad_tokens
from polydiff.audio.timbre import (
    DRUM_FRAMES,
    SHARED,
    TIED_FRAMES,
    Timbre,
    fit_timbre,
    harmonic_mel_table,
    segment_notes,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def tokens_of(notes, n_segments=1):
    return torch.from_numpy(pad_tokens(encode_segments(notes, n_segments), 128)[0].astype(np.int64))


def test_harmonic_table_is_the_codec_mel_of_a_real_sine():
    """A sine of amplitude a at pitch m has STFT magnitude a * N / 4 * (the Hann main lobe) around its
    frequency: the table's row for harmonic 1, times 256 a, is the codec's own mel of that sine."""
    a, table = 0.05, harmonic_mel_table()
    for pitch in (45, 69, 88):
        f0 = 440.0 * 2 ** ((pitch - 69) / 12)
        t = np.arange(16000) / 16000
        mel = audio_to_mel(torch.from_numpy((a * np.sin(2 * np.pi * f0 * t)).astype(np.float32)))
        measured = 10 ** (unit_to_db(mel[:, 25]) / 20)                      # linear mel magnitude, mid-sound
        predicted = 256 * a * table[pitch, 0]
        top = predicted > 0.1 * predicted.max()
        assert top.sum() >= 1
        rel = (measured[top] - predicted[top]).abs() / predicted[top]
        assert rel.max() < 0.05, (pitch, rel)


def test_notes_add_linearly_and_no_notes_is_silence():
    torch.manual_seed(0)
    tim = Timbre()
    with torch.no_grad():
        for p in tim.parameters():
            p.add_(0.1 * torch.randn_like(p))
    one = [(10.0, 60.0, 60, 100, 0, False, False)]
    two = [(30.0, 90.0, 67, 50, 40, False, False), (120.0, 121.0, 38, 90, 0, True, False)]
    with torch.no_grad():
        both = tim.linear([one + two])
        torch.testing.assert_close(both, tim.linear([one]) + tim.linear([two]), rtol=1e-5, atol=1e-9)
        assert torch.all(both[..., :10] == 0) and both[..., 10].sum() > 0        # nothing before the onset
        assert torch.all(tim(tokens_of([]))[None] == -1)                            # the codec's silence


def test_ties_start_in_the_sustain_and_drums_end_with_their_envelope():
    tim = Timbre()
    notes = [Note(4.0, 6.0, 60, 100, 0), Note(5.5, 5.6, 38, 100, 0, True)]        # crosses the 5.12 s boundary
    rows = segment_notes(tokens_of(notes, 2))
    tied = [n for n in rows[1] if not n[5]]
    assert len(tied) == 1 and tied[0][6] and tied[0][0] == 0                       # no onset in segment 2
    with torch.no_grad():
        lin = tim.linear(rows)
    level = lin.sum(1)        # the tied note: the shared envelope TIED_FRAMES on, at the tie velocity
    v_on, v_tied = rows[0][0][3], tied[0][3]
    with torch.no_grad():
        expected = torch.exp(tim.env[SHARED, 2 + TIED_FRAMES] - tim.env[SHARED, 2]) * (v_tied / v_on) ** 2
    torch.testing.assert_close(level[1, 2] / level[0, 200 + 2], expected, rtol=1e-4, atol=0)
    with torch.no_grad():
        drum = tim.linear([[(20.0, 30.0, 38, 100, 0, True, False)]])[0].sum(0)         # a drum alone
    assert drum[20] > 0 and drum[20 + DRUM_FRAMES:].max() < 1e-9 * drum[20]             # over after its envelope


def test_subframe_attacks_match_on_the_frame_and_interpolate_between_frames():
    """subframe=True reads the envelope at the exact onset: an onset on a frame renders as the frame-rounded
    renderer does; one half a frame later is read half a frame earlier in its envelope at every frame (the
    log-envelope interpolated; before its first value, a -20 floor)."""
    torch.manual_seed(1)
    plain, exact = Timbre(), Timbre(subframe=True)
    with torch.no_grad():
        for p in plain.parameters():
            p.add_(0.2 * torch.randn_like(p))
    exact.load_state_dict(plain.state_dict())
    note = (10.0, 80.0, 64, 90, 0, False, False)
    with torch.no_grad():
        torch.testing.assert_close(exact.linear([[note]]), plain.linear([[note]]), rtol=1e-5, atol=0)
        half = exact.linear([[(10.5, 80.0, *note[2:])]])[0].sum(0)
        on = exact.linear([[note]])[0].sum(0)
        env = plain.env[SHARED] + plain.env[0]
    assert half[9] == 0 and on[9] == 0                                     # silent a whole frame before
    ratio = lambda log_level: torch.exp(log_level - env[0])                # level relative to the onset frame
    torch.testing.assert_close(half[10] / on[10], ratio((-20.0 + env[0]) / 2), rtol=1e-4, atol=0)   # half in
    torch.testing.assert_close(half[11] / on[10], ratio((env[0] + env[1]) / 2), rtol=1e-4, atol=0)


def segment_dataset(truth, pieces):
    """(mel, tokens, context) segments whose mels are `truth`'s renders of the pieces' notes."""
    out = []
    for notes in pieces:
        tok = tokens_of(notes, 2)
        with torch.no_grad():
            mel = truth(tok)
        out += [(mel[i], tok[i], torch.full((N_MELS, SEGMENT_FRAMES), -1.0)) for i in range(2)]
    return out


def test_fitting_finds_a_known_renderer_again():
    """Targets drawn by a renderer whose program 40 differs from the start (other harmonics, slower
    attack, quieter): the fit brings the mel error down to a small part of where it starts."""
    truth = Timbre()
    with torch.no_grad():
        truth.harm[40] = torch.linspace(0.5, -2.0, 16)
        truth.env[40, :8] = torch.linspace(-3.0, 0.0, 8)
        truth.level[40] = -0.7
    pieces = [[Note(0.3 * i, 0.3 * i + 0.5, 50 + (5 * i) % 19, 40 + 7 * (i % 8), 40) for i in range(30)],
              [Note(0.25 * i, 0.25 * i + 0.2, 60 + (3 * i) % 12, 100, 40) for i in range(36)]]
    data = segment_dataset(truth, pieces)
    target = torch.stack([m for m, _, _ in data])
    toks = torch.stack([t for _, t, _ in data])
    fitted = fit_timbre(data, steps=150, batch=4, lr=0.05, progress=False)
    with torch.no_grad():
        before = (Timbre()(toks) - target).abs().mean()
        after = (fitted(toks) - target).abs().mean()
    assert after < 0.05 * before, (float(before), float(after))


def test_a_model_on_the_learned_template_keeps_it_frozen_through_training_and_checkpoints(tmp_path):
    from polydiff.audio.model import AudioDiffusion, audio_loss
    from polydiff.audio.pipeline import load_model
    from polydiff.audio.train import trim_collate
    from polydiff.core.train import TrainConfig, fit

    tiny = {"channels": 16, "channel_mult": [1, 2], "heads": 2, "cond_dim": 32, "context_stride": 16,
            "max_tokens": 64, "timbre": True}
    model = AudioDiffusion(**tiny)
    with torch.no_grad():
        model.timbre.harm[0] = torch.linspace(1.0, -1.0, 16)                       # "fitted"
    fitted = {k: v.clone() for k, v in model.timbre.state_dict().items()}
    notes = [Note(0.4 * i, 0.4 * i + 0.3, 60 + i % 12, 90, 0) for i in range(24)]
    data = segment_dataset(model.timbre, [notes])
    data = [(m, t[:64], c) for m, t, c in data]
    cfg = TrainConfig(out_dir=str(tmp_path), steps=3, batch_size=2, lr=1e-2, warmup_steps=0, checkpoint_every=3,
                      log_every=1, device="cpu")
    result = fit(model, data, audio_loss, cfg, collate_fn=trim_collate)
    loaded = load_model(result.checkpoint)
    for k, v in fitted.items():
        torch.testing.assert_close(model.timbre.state_dict()[k], v)                # not trained
        torch.testing.assert_close(loaded.timbre.state_dict()[k], v)               # saved and loaded back
    with torch.no_grad():
        _, notes_in = loaded.condition(data[0][1][None], data[0][2][None])
    torch.testing.assert_close(notes_in[0, 128:], loaded.timbre(data[0][1][None])[0] + 1)   # the template channels


TINY_RESIDUAL = {"channels": 16, "channel_mult": [1, 2], "heads": 2, "cond_dim": 32, "context_stride": 16,
                 "max_tokens": 64, "timbre": True, "residual": True, "sigma_data": 0.25}


def zero_residual(**extra):
    """A tiny residual model whose network outputs zero (D = its mean plus c_skip times the rest), and
    the tokens of 12 notes (one segment)."""
    from polydiff.audio.model import AudioDiffusion

    model = AudioDiffusion(**{**TINY_RESIDUAL, **extra}).eval()
    torch.nn.init.zeros_(model.net.conv_out.weight)
    torch.nn.init.zeros_(model.net.conv_out.bias)
    notes = [Note(0.4 * i, 0.4 * i + 0.3, 60 + i % 12, 90, 0) for i in range(12)]
    return model, tokens_of(notes)[:, :64]


def test_a_residual_model_is_centred_on_its_template():
    """residual=True: the denoiser is template + the network's residual, so a network that outputs zero
    gives back the template at high noise, in training targets and through the sampling pipeline."""
    from polydiff.audio.model import AudioDiffusion, denoiser
    from polydiff.audio.pipeline import Sampling, sample_segment

    model, tok = zero_residual()
    ctx = torch.full((1, N_MELS, SEGMENT_FRAMES), -1.0)
    with torch.no_grad():
        sketch = model.timbre(tok)
        x = torch.randn(1, N_MELS, SEGMENT_FRAMES)
        d = denoiser(model)(x, torch.tensor([1e6]), tokens=tok, context=ctx)
        mel = sample_segment(model, tok, ctx, Sampling(), torch.Generator().manual_seed(0))
        dropped = denoiser(model)(x, torch.tensor([1e6]), tokens=tok, context=ctx, use_notes=torch.tensor([False]))
    torch.testing.assert_close(d, sketch, atol=1e-4, rtol=0)
    c_skip = 0.25 ** 2 / (10.0 ** 2 + 0.25 ** 2)               # one step from x = 0 at sigma_max 10
    torch.testing.assert_close(mel, (sketch * (1 - c_skip)).clamp(-1, 1), atol=1e-5, rtol=0)
    torch.testing.assert_close(dropped, torch.full_like(x, -1.0), atol=1e-4, rtol=0)       # no notes: silence
    with pytest.raises(ValueError, match="template"):
        AudioDiffusion(**{**TINY_RESIDUAL, "timbre": False})
    # context_mean: without notes, centred on each mel bin's level over the context's last half second
    held, _ = zero_residual(context_mean=True)
    ctx = torch.rand(1, N_MELS, SEGMENT_FRAMES) * 2 - 1
    with torch.no_grad():
        free = denoiser(held)(x, torch.tensor([1e6]), tokens=tok, context=ctx, use_notes=torch.tensor([False]))
        mel = sample_segment(held, tok, ctx, Sampling(temperature=0.0), torch.Generator(), use_notes=False)
    level = ctx[..., -25:].mean(-1, keepdim=True).expand_as(ctx)
    torch.testing.assert_close(free, level, atol=1e-4, rtol=0)
    torch.testing.assert_close(mel, level * (1 - c_skip), atol=1e-5, rtol=0)


def test_the_sharp_loss_is_l1_on_exactly_what_the_default_sampler_returns():
    """sharp_weight > 0 adds sharp_weight x (|D - mel| + sharp_flux |D's frame changes - the mel's| +
    sharp_onset |D's onset envelope - the mel's|) to the EDM loss, with D the one-step, temperature-0 output the pipeline samples (computed here through
    the sampling path, `guided_denoiser` at x = 0, not through the training code)."""
    from polydiff.audio.model import AudioDiffusion, audio_loss, guided_denoiser

    tiny = {**TINY_RESIDUAL, "context_mean": True, "p_drop_notes": 0.0, "p_drop_context": 0.0}
    notes = [Note(0.3 * i, 0.3 * i + 0.25, 55 + 3 * i % 14, 70 + i, 0) for i in range(16)]
    tok = tokens_of(notes)[:, :64].repeat(2, 1)
    mel = torch.rand(2, N_MELS, SEGMENT_FRAMES) * 2 - 1
    ctx = torch.rand(2, N_MELS, SEGMENT_FRAMES) * 2 - 1
    torch.manual_seed(0)
    plain = AudioDiffusion(**tiny)
    sharp = AudioDiffusion(**tiny, sharp_weight=0.7, sharp_flux=3.0, sharp_sigma=10.0, sharp_onset=5.0)
    sharp.load_state_dict(plain.state_dict())
    losses = [audio_loss(m, (mel, tok, ctx), torch.Generator().manual_seed(1)) for m in (plain, sharp)]
    with torch.no_grad():
        d = guided_denoiser(sharp, tok, ctx)(torch.zeros_like(mel), torch.tensor(10.0))
    err = d - mel
    expected = err.abs().mean() + 3.0 * (err[..., 1:] - err[..., :-1]).abs().mean()
    rise = lambda m: np.maximum(np.diff(m.numpy(), axis=-1), 0).mean(-2)
    expected += 5.0 * float(np.abs(rise(d) - rise(mel)).mean())
    torch.testing.assert_close((losses[1] - losses[0]).detach() / 0.7, expected, rtol=1e-4, atol=1e-6)
    assert expected > 0.1                   # a random network is far from random mels: the check has teeth


def test_texture_pass_renoises_the_one_step_output_and_denoises_it_in_two_euler_steps():
    """Sampling(texture=t): the one-step output is noised to sigma t and taken back down by 2 Euler
    steps. With a zero network the residual denoiser is mean + c_skip(sigma) (x - mean), so each Euler step
    from sigma to sigma' scales x - mean by 1 + (sigma' - sigma)(1 - c_skip(sigma)) / sigma: the result is
    checked against that closed form, with the noise drawn as the pipeline draws it."""
    from polydiff.audio.pipeline import Sampling, sample_segment
    from polydiff.core.runtime import randn
    from polydiff.core.schedules import karras_sigmas

    model, tok = zero_residual()
    ctx = torch.full((1, N_MELS, SEGMENT_FRAMES), -1.0)
    with torch.no_grad():
        mean = model.timbre(tok)
        out = sample_segment(model, tok, ctx, Sampling(texture=0.05), torch.Generator().manual_seed(3))
        plain = sample_segment(model, tok, ctx, Sampling(texture=0.0), torch.Generator().manual_seed(3))
    c_skip = lambda s: 0.25 ** 2 / (s ** 2 + 0.25 ** 2)
    gen = torch.Generator().manual_seed(3)
    randn(ctx.shape, gen)                                            # the first pass's draw (temperature 0)
    x = (mean * (1 - c_skip(10.0))).clamp(-1, 1) + 0.05 * randn(ctx.shape, gen)
    torch.testing.assert_close(plain, (mean * (1 - c_skip(10.0))).clamp(-1, 1), atol=1e-5, rtol=0)
    s = karras_sigmas(2, 0.002, 0.05).tolist()                      # [0.05, 0.002, 0]
    for a, b in itertools.pairwise(s):
        x = mean + (x - mean) * (1 + (b - a) * (1 - c_skip(a)) / a)
    torch.testing.assert_close(out, x.clamp(-1, 1), atol=1e-5, rtol=0)
    assert (out - plain).abs().mean() > 1e-3                         # the pass leaves detail behind
    with pytest.raises(ValueError, match="texture"):
        Sampling(texture=20.0).check()
