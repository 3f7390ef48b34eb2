"""The audio model, its guidance, the training recipe and the synth / continue pipelines end to end.

A tiny model is trained for a few steps by the shared trainer on segments made here (sine-synth audio of
known notes), saved as a checkpoint, and driven through the notebook functions and the CLI."""

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from click.testing import CliRunner
from polydiff.audio.baseline import sine_synth
from polydiff.audio.codec import N_MELS, SEGMENT_FRAMES, START_FADE, audio_to_mel, write_wav
from polydiff.audio.model import AudioDiffusion, audio_loss, denoiser, guided_denoiser, token_times
from polydiff.audio.notes import VOCAB, Note, encode_segments, pad_tokens, write_midi
from polydiff.audio.pipeline import Sampling, continue_, load_model, synth
from polydiff.audio.plugin import cli
from polydiff.audio.train import trim_collate
from polydiff.core.train import TrainConfig, fit

TINY = {"channels": 16, "channel_mult": [1, 2], "heads": 2, "cond_dim": 32, "note_depth": 1, "context_depth": 1,
        "context_stride": 16, "max_tokens": 64}
FAST = ["--steps", "2"]
# the shipped model puts 0.80 of the demo tune's chroma energy in its 6 pitch classes (the earlier template
# model 0.67-0.73; FluidSynth 0.79, chance 0.5)
CHROMA_SHARE_BOUND = 0.6


pytestmark = pytest.mark.usefixtures("one_thread")


def tune(n_notes=12, program=0, base=60):
    return [Note(0.4 * i, 0.4 * i + 0.35, base + (2 * i) % 12, 60 + 5 * (i % 4), program) for i in range(n_notes)]


def segments_of(notes, seconds):
    """(mel, tokens, context) triples of a piece, as AudioSegments yields them."""
    mel = audio_to_mel(torch.from_numpy(sine_synth(notes, seconds)))
    n = mel.shape[-1] // SEGMENT_FRAMES
    mel = mel[:, : n * SEGMENT_FRAMES].reshape(N_MELS, n, SEGMENT_FRAMES).permute(1, 0, 2)
    tokens = torch.from_numpy(pad_tokens(encode_segments(notes, n), 64)[0].astype(np.int64))
    return [(mel[i], tokens[i], mel[i - 1] if i else torch.full_like(mel[0], -1.0)) for i in range(n)]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("audio_run")
    data = segments_of(tune(26), 10.24) + segments_of(tune(26, program=40, base=55), 10.24)
    cfg = TrainConfig(out_dir=str(out), steps=4, batch_size=4, lr=1e-3, warmup_steps=0, checkpoint_every=4,
                      log_every=1, device="cpu")
    result = fit(AudioDiffusion(**TINY), data, audio_loss, cfg, collate_fn=trim_collate)
    assert all(np.isfinite(result.losses))
    return result.checkpoint


@pytest.fixture(scope="module")
def model(checkpoint):
    return load_model(checkpoint)


def test_checkpoint_rebuilds_the_trained_model_with_its_ema_weights(checkpoint, model):
    import json

    meta = json.loads((checkpoint / "config.json").read_text())
    assert meta["class"] == "polydiff.audio.model:AudioDiffusion" and meta["config"]["channels"] == 16
    from safetensors.torch import load_file

    ema = load_file(str(checkpoint / "ema.safetensors"))
    assert all(torch.equal(ema[k], v) for k, v in model.state_dict().items())


def test_token_times_follow_the_time_tokens():
    notes = [Note(0.0, 1.0, 60, 80), Note(1.37, 2.0, 64, 80), Note(4.0, 6.0, 67, 80)]
    toks = torch.tensor(encode_segments(notes, 2)[0])[None]
    times = token_times(toks, 8)[0]
    pitch = (toks[0] >= VOCAB.pitch_offset) & (toks[0] < VOCAB.pitch_offset + 128)
    # onsets at steps 0, 137, 400 and offsets at 100, 200 (the tie section is time 0): bins of 8 steps
    assert times[pitch].tolist() == [0, 100 // 8, 137 // 8, 200 // 8, 400 // 8]


def dit_model():
    torch.manual_seed(0)
    model = AudioDiffusion(backbone="dit", dim=32, depth=1, heads=2, patch=16, cond_dim=32, context_stride=16,
                           max_tokens=64).eval()
    for p in model.parameters():             # the DiT starts as the identity: give its zero layers weights
        if p.ndim >= 2 and p.abs().max() == 0:
            torch.nn.init.normal_(p, std=0.02)
    return model


@pytest.mark.parametrize("backbone", ["unet", "dit"])
def test_cfg_scales_of_one_are_the_conditional_model_and_others_follow_the_formula(model, backbone):
    model = model if backbone == "unet" else dit_model()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, N_MELS, SEGMENT_FRAMES, generator=g)
    sigma = torch.tensor([0.7, 3.0])
    tokens = torch.from_numpy(pad_tokens(encode_segments(tune(), 1) * 2, 64)[0].astype(np.int64))
    context = torch.rand(2, N_MELS, SEGMENT_FRAMES, generator=g) * 2 - 1
    D = denoiser(model)
    on, off = torch.ones(2, dtype=torch.bool), torch.zeros(2, dtype=torch.bool)
    with torch.no_grad():
        d = {(n, c): D(x, sigma, tokens=tokens, context=context, use_notes=on if n else off,
                       use_context=on if c else off) for n in (0, 1) for c in (0, 1)}
        assert torch.equal(guided_denoiser(model, tokens, context, 1.0, 1.0)(x, sigma), d[1, 1])
        two = guided_denoiser(model, tokens, context, 2.5, 1.5)(x, sigma)
        ref = d[0, 0] + 1.5 * (d[0, 1] - d[0, 0]) + 2.5 * (d[1, 1] - d[0, 1])
        torch.testing.assert_close(two, ref, atol=1e-5, rtol=1e-5)
        notes_only = guided_denoiser(model, tokens, context, 3.0, 1.0)(x, sigma)
        torch.testing.assert_close(notes_only, d[0, 1] + 3.0 * (d[1, 1] - d[0, 1]), atol=1e-5, rtol=1e-5)
        free = guided_denoiser(model, tokens, context, 2.0, 2.0, use_notes=False)(x, sigma)
        torch.testing.assert_close(free, d[0, 0] + 2.0 * (d[0, 1] - d[0, 0]), atol=1e-5, rtol=1e-5)
        # a dropped condition is really gone: other notes / context change nothing
        other = D(x, sigma, tokens=tokens.flip(0), context=-context, use_notes=off, use_context=off)
        assert torch.equal(other, d[0, 0]) and not torch.equal(d[1, 1], d[0, 0])


def test_synth_renders_every_segment_and_streams_the_same_audio(model, tmp_path):
    notes = tune(16)                                                      # 6.35 s: two segments
    whole = synth(notes, model=model, steps=2, gl_iters=2)
    # windows: the tiny model reads 64 tokens and the first window's notes take 78, all there up to
    # frame 200: it keeps 192 new frames (CUT_MARGIN before that), then 224 after a 16-frame overlap,
    # then the last 96 (that window moved back to end with the piece)
    assert whole.mel.shape == (N_MELS, 2 * SEGMENT_FRAMES)
    assert whole.seams == pytest.approx([192 * 0.02, 416 * 0.02])
    assert whole.mel.min() >= -1 and whole.mel.max() <= 1
    streamed = synth(notes, model=model, steps=2, gl_iters=2, stream=True)
    streamed.save(tmp_path / "s.wav")
    audio, sr = sf.read(tmp_path / "s.wav", dtype="float32")
    assert sr == 16000 and len(audio) == 2 * SEGMENT_FRAMES * 320
    np.testing.assert_allclose(audio, np.clip(whole.audio, -1, 1), atol=1 / 32000)


def test_cli_synth_and_continue_end_to_end_keep_the_start_exactly(checkpoint, tmp_path):
    mid = tmp_path / "tune.mid"
    write_midi(tune(10), mid)
    run = CliRunner().invoke
    ck = ["--checkpoint", str(checkpoint), *FAST]
    res = run(cli, ["synth", str(mid), "-o", str(tmp_path / "song.wav"), "--spectrogram",
                    str(tmp_path / "song.png"), *ck])
    assert res.exit_code == 0, res.output
    song, _ = sf.read(tmp_path / "song.wav", dtype="int16")
    assert len(song) == SEGMENT_FRAMES * 320 and (tmp_path / "song.png").stat().st_size > 1000
    start = tmp_path / "start.wav"
    write_wav(start, song[: 16000 * 3 + 123].astype(np.float32) / 32768)    # not a whole number of frames
    for extra in ([], ["--notes", str(mid)]):
        out = tmp_path / f"more{len(extra)}.wav"
        res = run(cli, ["continue", str(start), "--seconds", "6", "-o", str(out), *extra, *ck])
        assert res.exit_code == 0, res.output
        given, _ = sf.read(start, dtype="int16")
        more, _ = sf.read(out, dtype="int16")
        assert len(more) == len(given) + 6 * 16000
        # the start, sample for sample but its last 0.2 s (cross-faded into the continuation)
        assert np.array_equal(more[: len(given) - START_FADE], given[: len(given) - START_FADE])
        assert np.abs(more[len(given):].astype(float)).max() > 0           # and something after it


@pytest.mark.parametrize("n_frames,known", [(512, 0), (1000, 0), (300, 37), (5, 3), (700, 600)])
def test_windows_cover_the_frames_once_and_fit_the_model(n_frames, known):
    from polydiff.audio.pipeline import block_lengths

    blocks = block_lengths(n_frames, known, overlap=8)
    assert sum(n for _, n in blocks) == n_frames
    done = 0
    for i, (ov, n) in enumerate(blocks):
        assert 0 <= ov <= known + done and n > 0
        assert ov >= min(8, known + done)                          # every join past the first overlaps
        # the window's last 8 frames are left out, unless it ends the piece
        assert ov + n + 8 <= SEGMENT_FRAMES or (i == len(blocks) - 1 and ov + n <= SEGMENT_FRAMES)
        done += n


@pytest.mark.parametrize("budget,n_notes", [(64, 100), (256, 480)])
def test_every_window_keeps_the_notes_of_the_frames_it_makes(budget, n_notes):
    """Dense writing (24 notes a second for 256 tokens: 400+ in a window): cut to the model's budget, each
    window's tokens still carry every note starting in the frames it keeps and CUT_MARGIN after them
    (decoded back from the cut row), where plain `block_lengths` windows would lose notes. With room
    for every token the plan is `block_lengths`."""
    from polydiff.audio.notes import decode_segments, window_tokens
    from polydiff.audio.pipeline import CUT_MARGIN, block_lengths, window_plan

    rng = np.random.default_rng(0)
    notes = [Note(float(t), float(t) + 0.15, int(p), 90, int(g)) for t, p, g in
             zip(np.sort(rng.uniform(0, 20, n_notes)).round(2), rng.integers(40, 90, n_notes), rng.integers(0, 3, n_notes))]

    def lost(plan):
        missing, done = 0, 0
        for ov, n in plan:
            start = 2 * (done - ov)                                           # 10 ms steps
            row = pad_tokens([window_tokens(notes, start)], budget)[0][0].tolist()
            heard = {(round(m.onset * 100), m.pitch, m.program) for m in decode_segments([row])}
            want = {(round(m.onset * 100) - start, m.pitch, m.program) for m in notes
                    if start <= round(m.onset * 100) < start + 2 * (ov + n + CUT_MARGIN)}
            missing += len(want - heard)
            done += n
        return missing

    plan = window_plan(1000, 0, 16, notes, budget)
    assert sum(n for _, n in plan) == 1000 and all(n > 0 for _, n in plan)
    assert lost(plan) == 0 and lost(block_lengths(1000, 0, 16)) > n_notes // 5
    assert window_plan(1000, 0, 16, notes, 10**6) == block_lengths(1000, 0, 16)


def test_window_offset_makes_joins_continuous_and_fades_out(model, monkeypatch):
    """With a stand-in sampler whose every window is one constant level, the emitted frames are known in
    closed form: a window's first new frame continues the frame before it exactly, and `fade` frames
    later the window's own level is back."""
    import polydiff.audio.pipeline as pl

    levels = iter([0.3, -0.5, 0.1, 0.6])
    monkeypatch.setattr(pl, "sample_segment", lambda model, tok, ctx, *a, **k: torch.full_like(ctx, next(levels)))
    opts = Sampling(overlap=8, fade=25)
    known = torch.full((N_MELS, 40), -0.2)
    blocks = list(pl.windows(model, None, known, 600, opts, None))
    assert [b.shape[-1] for b in blocks] == [240, 240, 120]
    prev = -0.2
    for b, level in zip(blocks, [0.3, -0.5, 0.1]):
        torch.testing.assert_close(b[:, 0], torch.full((N_MELS,), prev))            # continuous join
        torch.testing.assert_close(b[:, 12], torch.full((N_MELS,), prev + (level - prev) * 12 / 25))
        torch.testing.assert_close(b[:, 25:], torch.full_like(b[:, 25:], level))   # its own level
        prev = level


def test_default_temperature_is_the_mean_with_notes_and_a_sample_without(model):
    """Sampling(temperature=None): 0 where notes lead (the seed changes nothing), 1 for free continuation."""
    notes = tune(10)
    a, b = (synth(notes, model=model, steps=1, gl_iters=2, seed=s).mel for s in (0, 1))
    assert torch.equal(a, b)
    start = sine_synth(tune(8), 3.0)
    f0, f1 = (continue_(start, 1.0, model=model, steps=1, gl_iters=2, seed=s).mel for s in (0, 1))
    assert not torch.equal(f0, f1)
    hot = synth(notes, model=model, steps=1, gl_iters=2, seed=1, temperature=1.0).mel
    assert not torch.equal(a, hot)


def test_continue_with_notes_differs_from_free_continuation(model):
    start = sine_synth(tune(8), 3.0)
    free = continue_(start, 2.0, model=model, steps=2, gl_iters=2).mel
    led = continue_(start, 2.0, notes=tune(6, base=48), model=model, steps=2, gl_iters=2).mel
    assert free.shape == led.shape == (N_MELS, 100) and not torch.equal(free, led)


@pytest.mark.parametrize("case", ["empty_midi", "text_midi", "empty_wav", "text_wav", "negative", "zero"])
def test_bad_inputs_give_one_clear_error_and_no_file(checkpoint, tmp_path, case):
    import pretty_midi

    good_wav = tmp_path / "good.wav"
    write_wav(good_wav, sine_synth(tune(4), 2.0))
    out = tmp_path / "out.wav"
    ck = ["-o", str(out), "--checkpoint", str(checkpoint), *FAST]
    if case == "empty_midi":
        path = tmp_path / "empty.mid"
        pretty_midi.PrettyMIDI().write(str(path))
        args, says = ["synth", str(path), *ck], "no notes"
    elif case == "text_midi":
        path = tmp_path / "song.mid"
        path.write_text("these are not the notes you are looking for\n")
        args, says = ["synth", str(path), *ck], "not a readable Standard MIDI File"
    elif case == "empty_wav":
        path = tmp_path / "start.wav"
        path.write_bytes(b"")
        args, says = ["continue", str(path), "--seconds", "2", *ck], "empty"
    elif case == "text_wav":
        path = tmp_path / "start.wav"
        path.write_text("RIFF? no, just text\n" * 20)
        args, says = ["continue", str(path), "--seconds", "2", *ck], "not a readable audio file"
    else:
        secs = "-3" if case == "negative" else "0"
        args, says = ["continue", str(good_wav), "--seconds", secs, *ck], "positive number of seconds"
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 1 and says in res.output, res.output
    assert "Traceback" not in res.output
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(("out", ".out"))) == []


def test_missing_checkpoint_says_how_to_train_one(tmp_path):
    from polydiff.core.checkpoint import CheckpointError

    with pytest.raises(CheckpointError, match="polydiff train audio"):
        load_model(tmp_path)


def test_piano_roll_marks_each_note_at_its_pitch_and_frames():
    from polydiff.audio.model import piano_roll

    notes = [Note(0.0, 1.0, 60, 127), Note(1.0, 1.5, 64, 64), Note(4.9, 7.0, 67, 127), Note(2.0, 2.1, 38, 100, 0, True)]
    rows = encode_segments(notes, 2)
    roll = piano_roll(torch.from_numpy(pad_tokens(rows, 64)[0].astype(np.int64)))    # (2, 128, 256)
    on = roll > 0
    assert on[0].any(1).nonzero().flatten().tolist() == [38, 60, 64, 67]
    assert on[0, 60].nonzero().flatten().tolist() == list(range(50))              # 0-1 s at 50 frames/s
    assert on[0, 67].nonzero().flatten().tolist() == list(range(245, 256))           # crosses the boundary
    assert on[1, 67].nonzero().flatten().tolist() == list(range(94))              # tied into segment 2
    assert on[0, 38].nonzero().flatten().tolist() == [100, 101]                      # a drum: its onset
    assert roll[0, 60, 0] > roll[0, 60, 10] > 0                                       # onsets stand out
    assert roll[0, 60, 0] > roll[0, 64, 50]                                           # louder is larger
    assert roll[1, 67, 0] == roll[1, 67, 10] > 0              # a tied note sustains; its onset was before


def test_mel_template_draws_each_note_at_its_harmonics_in_the_mel_bins():
    from polydiff.audio.codec import mel_filters
    from polydiff.audio.model import mel_template, note_rolls

    notes = [Note(0.0, 1.0, 69, 127), Note(2.0, 2.1, 38, 100, 0, True)]                # A4 = 440 Hz, a drum
    tokens = torch.from_numpy(pad_tokens(encode_segments(notes, 1), 64)[0].astype(np.int64))
    pitched, drums = note_rolls(tokens)
    t = mel_template(pitched, drums)[0]                                                  # (128 mel, 256)
    centre = mel_filters().argmax(0)                                        # each mel bin's peak STFT bin
    hz = centre * 16000 / 1024
    peak = t[:, 10].argmax()
    assert abs(hz[peak] - 440) < 16 and abs(hz[t[:, 10][peak + 3:].argmax() + peak + 3] - 880) < 32
    assert torch.all(t[:, 60:100] == -1)                                     # silence between the notes
    assert t[:, 100].min() > -1 and t[:, 100].std() < t[:, 10].std()        # the drum: broadband, flat
    assert t[peak, 0] > t[peak, 10] > -1                                     # the onset stands out


def test_init_weights_widens_the_input_and_keeps_the_function(checkpoint, model):
    """A model with the template channels added, started from a checkpoint without them, is the same
    denoiser until it trains (the new input weights are zero)."""
    from polydiff.audio.train import init_weights

    wide = AudioDiffusion(**{**TINY, "template": True}).eval()
    assert init_weights(wide, checkpoint) == ["net.conv_in.weight"]
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, N_MELS, SEGMENT_FRAMES, generator=g)
    tokens = torch.from_numpy(pad_tokens(encode_segments(tune(), 1) * 2, 64)[0].astype(np.int64))
    context = torch.rand(2, N_MELS, SEGMENT_FRAMES, generator=g) * 2 - 1
    with torch.no_grad():
        a = denoiser(model)(x, torch.tensor([0.3, 4.0]), tokens=tokens, context=context)
        b = denoiser(wide)(x, torch.tensor([0.3, 4.0]), tokens=tokens, context=context)
    torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="shape"):
        init_weights(AudioDiffusion(**{**TINY, "channels": 32}), checkpoint)


def test_export_ships_the_ema_weights_in_half_precision(checkpoint, model, tmp_path):
    from polydiff.audio.train import export

    shipped = load_model(export(checkpoint, tmp_path / "base"))
    assert (tmp_path / "base" / "model.safetensors").stat().st_size < 0.6 * (checkpoint / "ema.safetensors").stat().st_size
    for (k, a), b in zip(model.state_dict().items(), shipped.state_dict().values()):
        assert b.dtype == a.dtype and torch.allclose(a, b, rtol=1e-3, atol=1e-4), k


@pytest.mark.skipif(not (Path(__file__).parents[1] / "audio/checkpoints/bank/config.json").is_file(),
                    reason="no shipped audio checkpoint")
def test_shipped_model_renders_a_tune_from_outside_the_corpus_in_its_own_pitch_classes():
    import librosa
    from polydiff.audio.demo import demo_notes

    tune = demo_notes()                                         # flute + cello in C major, written here
    audio = synth(tune, steps=Sampling.steps).audio
    audio = audio[: int(16000 * max(n.offset for n in tune))]  # the tune, not the silence padding its last window
    chroma = librosa.feature.chroma_stft(y=audio, sr=16000, n_fft=2048, hop_length=320, norm=None)
    pcs = sorted({n.pitch % 12 for n in tune})                  # 6 of the 12 pitch classes
    share = chroma[pcs].sum() / chroma.sum()
    assert share > CHROMA_SHARE_BOUND, share                    # chance: 0.5


def test_audio_demo_writes_synthesis_and_both_continuations_keeping_the_start(checkpoint, tmp_path):
    from polydiff.audio.demo import demo

    arts = demo(tmp_path, checkpoint=checkpoint)
    wavs = {a.path.name: sf.read(a.path, dtype="float32")[0] for a in arts if a.kind == "audio"}
    assert {"audio_synth.wav", "audio_continue.wav", "audio_continue_notes.wav"} <= set(wavs)
    assert all(a.path.is_file() for a in arts if a.kind == "image")
    song = wavs["audio_synth.wav"]
    assert len(song) == SEGMENT_FRAMES * 320                               # the 4.8 s tune: one segment
    n = 16000 * 4
    for name in ("audio_continue.wav", "audio_continue_notes.wav"):
        assert len(wavs[name]) == n + round(5.12 * 16000)
        np.testing.assert_allclose(wavs[name][: n - START_FADE], song[: n - START_FADE], atol=1 / 16000)
    assert not np.allclose(wavs["audio_continue.wav"][n:], wavs["audio_continue_notes.wav"][n:], atol=1e-3)


def test_long_work_shows_a_progress_bar_over_the_windows(model, capsys, monkeypatch):
    monkeypatch.setenv("POLYDIFF_PROGRESS", "1")
    synth(tune(16), model=model, steps=1, gl_iters=2)                      # three windows (see above)
    err = capsys.readouterr().err
    assert "audio windows" in err and "0/3 " in err                        # the bar knows the total
