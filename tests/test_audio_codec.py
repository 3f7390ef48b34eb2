"""Spectrogram codec: frame rate, range, dB scale, Griffin-Lim keeps pitch, audio files and errors."""

import numpy as np
import pytest
import soundfile as sf
import torch
from polydiff.audio.codec import (
    DB_MAX,
    DB_MIN,
    HOP,
    SAMPLE_RATE,
    SEGMENT_FRAMES,
    AudioError,
    GriffinLim,
    audio_to_mel,
    load_audio,
    write_spectrogram_png,
    write_wav,
)


pytestmark = pytest.mark.usefixtures("one_thread")


def tone(freq, seconds, amp=0.5, sr=SAMPLE_RATE):
    t = np.arange(int(seconds * sr)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_frames_are_exactly_50_per_second_and_in_range():
    assert SAMPLE_RATE / HOP == 50
    assert audio_to_mel(np.zeros(81920, np.float32)).shape == (128, SEGMENT_FRAMES)   # 5.12 s
    for n in (320, 16000, 16319, 33333):
        assert audio_to_mel(np.zeros(n, np.float32)).shape == (128, n // HOP)
    rng = np.random.default_rng(0)
    mel = audio_to_mel(rng.uniform(-1, 1, 16000).astype(np.float32))
    assert mel.min() >= -1 and mel.max() <= 1
    assert torch.all(audio_to_mel(np.zeros(16000, np.float32)) == -1)              # silence = floor
    batch = audio_to_mel(np.stack([tone(440, 1), tone(880, 1)]))
    assert batch.shape == (2, 128, 50) and torch.allclose(batch[1], audio_to_mel(tone(880, 1)))


def test_doubling_amplitude_adds_6_dB():
    lo, hi = audio_to_mel(tone(1000, 1, 0.1)), audio_to_mel(tone(1000, 1, 0.2))
    k = lo[:, 10:-10].mean(1).argmax()
    step = (hi[k, 10:-10] - lo[k, 10:-10]).mean().item()
    assert step == pytest.approx(20 * np.log10(2) / (DB_MAX - DB_MIN) * 2, abs=1e-4)
    assert hi.max() < 1                                      # a loud tone is not clipped at the top


@pytest.mark.parametrize("chunk", [3000, 40])
def test_griffin_lim_keeps_the_pitch_of_a_tone(chunk):
    audio = tone(440, 2.0)
    gl = GriffinLim(n_iter=32, chunk_frames=chunk, overlap=10)
    out = gl.mel_to_audio(audio_to_mel(audio)).numpy()
    assert out.shape == audio.shape
    spec = np.abs(np.fft.rfft(out[1600:-1600] * np.hanning(len(out) - 3200)))
    peak = np.fft.rfftfreq(len(out) - 3200, 1 / SAMPLE_RATE)[spec.argmax()]
    assert abs(peak - 440) / 440 < 0.01                      # well within a semitone (5.9 %)
    # loudness kept: RMS within 2 dB
    rms = lambda x: np.sqrt(np.mean(x[1600:-1600] ** 2))
    assert abs(20 * np.log10(rms(out) / rms(audio))) < 2.0


def test_load_audio_resamples_and_downmixes(tmp_path):
    t = np.arange(44100) / 44100
    stereo = np.stack([0.3 * np.sin(2 * np.pi * 1000 * t)] * 2, 1)
    sf.write(tmp_path / "a.wav", stereo, 44100)
    a = load_audio(tmp_path / "a.wav")
    assert a.dtype == np.float32 and a.ndim == 1 and abs(len(a) - 16000) <= 1
    f = np.fft.rfftfreq(len(a), 1 / 16000)[np.abs(np.fft.rfft(a)).argmax()]
    assert abs(f - 1000) <= 1


@pytest.mark.parametrize("kind", ["empty", "zero_length", "text", "missing"])
def test_bad_audio_files_raise_one_clear_error(tmp_path, kind):
    path = tmp_path / "in.wav"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "zero_length":
        sf.write(path, np.zeros(0, np.float32), 16000)
    elif kind == "text":
        path.write_text("this is not audio\n" * 20)
    with pytest.raises(AudioError) as err:
        load_audio(path)
    assert "in.wav" in str(err.value)


def test_writers_are_atomic_and_leave_no_temp_files(tmp_path):
    audio = tone(440, 0.5, amp=2.0)                          # clipped to [-1, 1] on write
    write_wav(tmp_path / "x.wav", audio)
    back, sr = sf.read(tmp_path / "x.wav")
    assert sr == 16000 and len(back) == len(audio) and np.abs(back).max() <= 1
    write_spectrogram_png(tmp_path / "x.png", audio_to_mel(audio), title="tone")
    assert (tmp_path / "x.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.png", "x.wav"]
    # a failing write leaves nothing behind
    with pytest.raises(ValueError):
        write_wav(tmp_path / "y.wav", np.zeros((2, 2, 2)))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.png", "x.wav"]


def test_chunked_griffin_lim_leaves_no_seams_where_independent_segments_do():
    from polydiff.audio.metrics import seam_ratio

    t = np.arange(int(10.24 * SAMPLE_RATE)) / SAMPLE_RATE
    x = sum(np.sin(2 * np.pi * f * t + 3 * np.sin(2 * np.pi * 0.5 * t)) for f in (220, 277, 330, 440))
    x = (0.1 * x + 0.02 * np.random.default_rng(0).standard_normal(len(t))).astype(np.float32)
    mel = audio_to_mel(x)                                                    # (128, 512)
    chunked = GriffinLim(n_iter=32, chunk_frames=100, overlap=20).mel_to_audio(mel).numpy()
    joins = [80 * k + d for k in range(1, 7) for d in (0, 10, 20)]           # chunk starts, fades, ends
    assert seam_ratio(chunked, [j / 50 for j in joins]) < 1.2
    alone = np.concatenate([GriffinLim(n_iter=32, seed=k).mel_to_audio(mel[:, s: s + 64]).numpy()
                            for k, s in enumerate(range(0, 512, 64))])
    assert seam_ratio(alone, [s / 50 for s in range(64, 512, 64)]) > 1.2


def test_griffin_lim_grows_out_of_given_audio_without_a_click():
    """Vocoding a mel whose first frames stand for known audio, held to it: that audio followed by the
    vocoded rest has no seam at the join, while the same audio followed by independently vocoded audio
    has one (a phase jump). The given audio comes back as it was but for its last 0.2 s (the fade)."""
    from polydiff.audio.codec import HOP, START_FADE
    from polydiff.audio.metrics import seam_ratio

    t = np.arange(int(4.0 * SAMPLE_RATE)) / SAMPLE_RATE
    x = sum(np.sin(2 * np.pi * f * t + 3 * np.sin(2 * np.pi * 0.5 * t)) for f in (220, 277, 330))
    x = (0.1 * x + 0.01 * np.random.default_rng(1).standard_normal(len(t))).astype(np.float32)
    n0 = 60 * HOP
    mel = audio_to_mel(x)
    held = torch.cat(list(GriffinLim(n_iter=16).stream([mel], start=torch.from_numpy(x[:n0])))).numpy()
    np.testing.assert_array_equal(held[: n0 - START_FADE], x[: n0 - START_FADE])
    free = GriffinLim(n_iter=16).mel_to_audio(mel).numpy()
    joins = [n0 / SAMPLE_RATE]
    assert seam_ratio(held, joins) < 1.3
    assert seam_ratio(np.concatenate([x[:n0], free[n0:]]), joins) > 1.8              # 2.08 measured


def test_reconstruct_cli_round_trip_and_bad_inputs(tmp_path):
    from click.testing import CliRunner
    from polydiff.audio.plugin import cli

    sf.write(tmp_path / "a.wav", tone(440, 1.0), 16000)
    out, png = tmp_path / "out.wav", tmp_path / "out.png"
    res = CliRunner().invoke(cli, ["reconstruct", str(tmp_path / "a.wav"), "-o", str(out),
                                   "--spectrogram", str(png), "--iterations", "16"])
    assert res.exit_code == 0, res.output
    back, sr = sf.read(out)
    assert sr == 16000 and len(back) == 16000 and png.stat().st_size > 0
    (tmp_path / "empty.wav").write_bytes(b"")
    sf.write(tmp_path / "zero.wav", np.zeros(0, np.float32), 16000)
    (tmp_path / "text.wav").write_text("hello\n" * 50)
    sf.write(tmp_path / "tiny.wav", np.zeros(100, np.float32), 16000)
    for name, needle in (("empty", "empty"), ("zero", "zero length"), ("text", "not a readable"),
                         ("tiny", "shorter than one")):
        res = CliRunner().invoke(cli, ["reconstruct", str(tmp_path / f"{name}.wav"), "-o",
                                       str(tmp_path / f"{name}_out.wav")])
        assert res.exit_code == 1 and needle in res.output and f"{name}.wav" in res.output
        assert not (tmp_path / f"{name}_out.wav").exists()


def test_streamed_griffin_lim_equals_the_whole_mel_whatever_the_blocking(tmp_path):
    from polydiff.audio.codec import write_wav_stream

    t = np.arange(int(6 * SAMPLE_RATE)) / SAMPLE_RATE
    mel = audio_to_mel((0.3 * np.sin(2 * np.pi * 330 * t)).astype(np.float32))     # (128, 300)
    gl = GriffinLim(n_iter=4, chunk_frames=80, overlap=16)
    whole = gl.mel_to_audio(mel)
    for size in (7, 64, 256, 300):
        blocks = [mel[:, s: s + size] for s in range(0, mel.shape[1], size)]
        parts = list(gl.stream(iter(blocks)))
        assert len(parts) > 1                                                 # audio comes out early
        assert torch.equal(torch.cat(parts), whole)
    n = write_wav_stream(tmp_path / "s.wav", gl.stream([mel]))
    back, _ = sf.read(tmp_path / "s.wav", dtype="float32")
    assert n == len(back) == mel.shape[1] * HOP and np.abs(back - whole.numpy()).max() <= 1 / 32000
    with pytest.raises(RuntimeError):                                         # a failing stream leaves no file
        write_wav_stream(tmp_path / "bad.wav", (_ for _ in ()).throw(RuntimeError("stop")))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.wav"]
