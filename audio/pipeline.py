"""The two jobs, as functions a notebook calls and the CLI wraps:

    result = polydiff.audio.synth("song.mid")                  # notes -> music
    result.save("song.wav", spectrogram="song.png")
    result = polydiff.audio.continue_("start.wav", seconds=10)  # start + 10 s more, free or on notes
    result.save("more.wav")

Both run window by window (5.12 s each): a window is sampled by a core sampler from the two-scale
CFG denoiser of `model.guided_denoiser`, conditioned on its notes and on the 5.12 s of mel before it
(just generated, or the end of the given start). Windows overlap: each one starts `overlap` frames
before the end of what is already there and re-generates those frames, and the level difference
between them and the frames already there (per mel bin) is added to the window's new frames, fading
out over `fade` frames (`windows`). Without it each window would start at its own level, a step at
every join. A window's last `overlap` frames are left out too: frames at either edge of a window
come out off, as the network's convolutions see padding there. A window whose notes need more tokens
than the model reads (`max_tokens`, 256 for the shipped model; dense piano writing takes 400+ in
5.12 s) keeps only the frames whose notes all fit and the next window starts there (`window_plan`):
cut tokens would be notes never sounded (a Schumann polonaise on the val split lost up to 40 % of each
window's notes; its onset F1 went from 0.77 to 0.97 with the cut-aware windows, a sampling loop with
the benchmark's metrics, 2026-11-30). Only the last two windows' frames are kept while sampling, and the mel is vocoded as one
stream by the chunked Griffin-Lim (`GriffinLim.stream`), so the vocoder adds no seam either and memory
stays constant however long the piece is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from polydiff.core.checkpoint import CheckpointError, load_pretrained
from polydiff.core.progress import progress
from polydiff.core.runtime import randn
from polydiff.core.samplers import METHODS, sample
from polydiff.core.schedules import karras_sigmas

from .attacks import attack_plan, shape_attacks
from .codec import (
    HOP,
    N_MELS,
    SEGMENT_FRAMES,
    AudioError,
    GriffinLim,
    audio_to_mel,
    load_audio,
    write_wav_stream,
)
from .model import SILENCE, AudioDiffusion, guided_denoiser
from .notes import VOCAB, MidiError, n_segments, pad_tokens, read_midi, window_tokens

CUT_MARGIN = 8     # frames kept clear of the point where a window's tokens run out (`window_plan`)
MIN_NEW = 8        # new frames a window makes at least, however dense its notes
DEFAULT_CHECKPOINT = Path(__file__).parent / "checkpoints" / "bank"     # sharp, its renderer drawing from a note bank
SEGMENT_SECONDS = SEGMENT_FRAMES * HOP / 16000
# `continue_`'s default texture pass (`sample_segment`). With the shipped model on the 8 val pieces, continue
# with notes after the real first 5.12 s, texture 0 / 0.05 / 0.1: start-join seam 1.51 / 0.95 / 0.93 (the
# real music at that join 0.95), chroma 0.880 / 0.873 / 0.859, onset F1 0.773 / 0.738 / 0.721; synth with
# texture 0.1 scored onset F1 0.733 against 0.800 without (benchmarks/audio_eval.py --split val --pieces 8
# --also texture=0 --also texture=0.1, 2026-11-30).
CONTINUE_TEXTURE = 0.05


@dataclass
class Sampling:
    """How each window is sampled. Defaults are the ones the benchmark's figures use (chosen on the val
    split, not the test pieces).

    One step from sigma_max at temperature 0 where notes are given: D(0, sigma_max), the model's
    conditional mean of the mel given the notes and the context. Why not a longer sampler: the shipped
    models (CPU-trained, mostly at high noise) denoise well at high noise but not at the low-noise end,
    so a multi-step trajectory ends with noise still in it, heard as hiss: for the shipped timbre model,
    8 steps at temperature 1 on 4 val pieces gave chroma 0.762 and mel L1 0.299 against 0.888 and
    0.157 for one step (benchmarks/audio_eval.py --split val --also steps=8,temperature=1, 2026-11-30).
    cfg_notes 1: on the val pieces guidance 1.5 lowered chroma (0.811 vs 0.876) and onset F1."""

    sampler: str = "dpmpp_2m"
    steps: int = 1
    cfg_notes: float = 1.0
    cfg_context: float = 1.0
    sigma_min: float = 0.002
    sigma_max: float = 10.0
    seed: int = 0
    gl_iters: int = 32               # Griffin-Lim iterations of the vocoder
    temperature: float | None = None  # scale of the starting noise; None: 0 with notes, 1 without (see `sample_segment`)
    texture: float | None = None     # noise level of a last texture pass (see `sample_segment`); None: 0 for
                                     # synth, CONTINUE_TEXTURE for continue
    overlap: int = 16                # frames a window re-generates before the join / leaves out at its end
    fade: int = 25                   # frames over which the level offset at a join fades out
    attack: float = 0.1              # strength of the note-timed attack shaping (`audio.attacks`; 0 = off)

    def check(self) -> None:
        if not 0 <= self.overlap < SEGMENT_FRAMES // 2 or self.fade < 1:
            raise ValueError(f"need 0 <= overlap < {SEGMENT_FRAMES // 2} and fade >= 1, got {self.overlap}, "
                             f"{self.fade}")
        if self.sampler not in METHODS:
            raise ValueError(f"unknown sampler {self.sampler!r}; use one of {', '.join(METHODS)}")
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if not 0 < self.sigma_min < self.sigma_max:
            raise ValueError(f"need 0 < sigma_min < sigma_max, got {self.sigma_min}, {self.sigma_max}")
        if self.temperature is not None and not 0 <= self.temperature <= 1:
            raise ValueError(f"temperature must be in [0, 1], got {self.temperature}")
        if self.texture is not None and not 0 <= self.texture < self.sigma_max:
            raise ValueError(f"texture must be in [0, sigma_max {self.sigma_max}), got {self.texture}")
        if not 0 <= self.attack <= 0.2:
            raise ValueError(f"attack must be in [0, 0.2], got {self.attack}")
        if self.cfg_notes < 0 or self.cfg_context < 0:
            raise ValueError(f"CFG scales must be >= 0, got notes {self.cfg_notes}, context {self.cfg_context}")


def load_model(checkpoint=None, device="cpu") -> AudioDiffusion:
    """The audio model of a checkpoint folder (the shipped one by default), EMA weights when present."""
    from polydiff.core.runtime import resolve_device

    folder = Path(checkpoint) if checkpoint is not None else DEFAULT_CHECKPOINT
    if not (folder / "config.json").is_file():
        raise CheckpointError(f"{folder}: no audio checkpoint here (config.json missing). Train one with "
                              "`polydiff train audio --config audio/configs/base.yaml` and pass its folder "
                              "(runs/audio/base/checkpoints/step-...) with --checkpoint.")
    ema = (folder / "ema.safetensors").is_file()
    model = load_pretrained(folder, cls=AudioDiffusion, device=resolve_device(device), use_ema=ema)
    return model.eval()


@torch.no_grad()
def sample_segment(model, tokens, context, opts: Sampling, generator, use_notes: bool = True) -> torch.Tensor:
    """One segment's mel (B, 128, 256) in [-1, 1]. tokens: (B, L) ids; context: (B, 128, 256).

    The start is noise * sigma_max * temperature. Why a temperature: one step from sigma_max gives
    D(x, sigma_max), which for an exact denoiser is the conditional mean whatever the noise x; a trained
    net lets part of x through, and in a mel that reads as broadband flicker frame to frame (spurious
    onsets). temperature 0 evaluates D at the noise's mean, x = 0, which removes that part. That is
    the default where notes are given; without notes (free continuation) the conditional mean is a
    static average of the style, so the default there is 1, a sample.

    texture > 0: a last pass that puts back the frame-to-frame texture a mean lacks (on the val pieces
    the median frame-to-frame change of the shipped model's one-step output is about a third of the real
    music's, measured by a sampling loop with `metrics.spectral_flux`, 2026-11-30): the
    result is noised to sigma = texture and denoised again in 2 Euler steps (SDEdit at a low level),
    which keeps the notes and timbre and leaves detail of the size of that noise. Used by `continue_`,
    where generated music follows real audio and a smooth continuation is heard (and measured) as a
    change at the join; not by `synth`, where it costs onset accuracy (numbers at CONTINUE_TEXTURE)."""
    dev = context.device
    sigmas = karras_sigmas(opts.steps, opts.sigma_min, opts.sigma_max).to(dev)
    den = guided_denoiser(model, tokens, context, opts.cfg_notes, opts.cfg_context, use_notes)
    temperature = opts.temperature if opts.temperature is not None else (0.0 if use_notes else 1.0)
    x = randn(context.shape, generator, device=dev) * (sigmas[0] * temperature)
    out = sample(den, x, sigmas, method=opts.sampler, generator=generator, progress=False).clamp(-1, 1)
    if opts.texture:
        low = karras_sigmas(2, min(opts.sigma_min, opts.texture / 2), opts.texture).to(dev)
        x = out + randn(out.shape, generator, device=dev) * opts.texture
        out = sample(den, x, low, method="euler", progress=False).clamp(-1, 1)
    return out


def block_lengths(n_frames: int, known: int, overlap: int) -> list[tuple[int, int]]:
    """(overlap, new frames) of each window that extends `known` frames by `n_frames`. A window
    re-generates min(known so far, overlap) frames at its start and leaves its last `overlap` frames
    out (the next window starts over them): a window's frames at either edge of its 5.12 s come out
    off (the convolutions see padding there). The last window moves back to end exactly at n_frames,
    re-generating more, rather than sampling a mostly unused window."""
    out, done = [], 0
    while done < n_frames:
        left = n_frames - done
        ov = min(known + done, max(overlap, SEGMENT_FRAMES - left))
        n = left if left <= SEGMENT_FRAMES - ov else SEGMENT_FRAMES - ov - overlap
        out.append((ov, n))
        done += n
    return out


def windows(model, notes, known: torch.Tensor, n_frames: int, opts: Sampling, generator, lengths=None):
    """Yield mel blocks (128, t) that continue `known` (128, T0) (T0 may be 0) by n_frames frames.

    notes: `Note`s with time 0 at the end of `known` (a window before time 0 has no notes there), or
    None for free continuation (the notes condition dropped). Each window is 256 frames conditioned on
    the 256 frames before it and on its notes (`window_tokens`, notes sounding into it as ties); its
    first `ov` frames lie over frames already there. Why the offset: the model's level in a window is
    its own estimate, and two windows' estimates of the same frames differ; d = (the frame there - the
    window's frame) at the last overlapping frame, per mel bin, is added to its new frames with a
    weight falling linearly from 1 to 0 over `fade` frames, so the first new frame changes from the
    frame before it as the window itself changes there (an onset is kept), and the difference fades
    out. That frame is `overlap` frames into the window, away from its edge. Blocks are yielded with
    their attacks shaped (`audio.attacks`, opts.attack); the context of later windows is the unshaped mel."""
    dev = next(model.parameters()).device
    keep = 2 * SEGMENT_FRAMES                          # the longest overlap plus its context
    hist = known[:, -keep:].to(dev)
    plan = attack_plan(notes) if notes and opts.attack else []
    done = 0
    if lengths is None:                                # (overlap, new frames) of each window
        lengths = window_plan(n_frames, known.shape[-1], opts.overlap, notes, model.max_tokens)
    for ov, n in progress(lengths, desc="audio windows", unit="window"):
        ctx = torch.full((N_MELS, SEGMENT_FRAMES), SILENCE, device=dev)
        before = hist[:, : hist.shape[-1] - ov][:, -SEGMENT_FRAMES:]
        ctx[:, SEGMENT_FRAMES - before.shape[-1]:] = before
        row = window_tokens(notes, 2 * (done - ov)) if notes else [VOCAB.tie, VOCAB.eos]   # 2 steps/frame
        tok = torch.from_numpy(pad_tokens([row], model.max_tokens)[0].astype(np.int64)).to(dev)
        mel = sample_segment(model, tok, ctx[None], opts, generator, use_notes=bool(notes))[0]
        new = mel[:, ov: ov + n]
        if ov:
            d = hist[:, -1:] - mel[:, ov - 1: ov]
            w = (1 - torch.arange(n, device=dev) / opts.fade).clamp(min=0)
            new = (new + d * w).clamp(-1, 1)
        yield shape_attacks(new, plan, done, opts.attack)      # shaped for the ear, not for the context
        hist = torch.cat([hist, new], -1)[:, -keep:]
        done += n


@dataclass
class Generated:
    """A generated piece: the mel blocks (a list, or a one-shot iterator for streaming), audio that goes
    before them unchanged (the start of a continuation), and where windows join (seconds).

    A continuation's blocks begin with `lead` frames that lie inside the start (the start's own last
    frame is not usable: its STFT window reaches past the start's end into zero padding, so it reads
    quieter than the music was); they are vocoded, to carry the audio across the join, but belong to
    neither `mel` nor the written audio."""

    blocks: object
    prefix: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    prefix_mel: torch.Tensor | None = None      # mel of the prefix's last frames: vocoder warm-up
    seams: list[float] = field(default_factory=list)
    gl_iters: int = 32
    lead: int = 0
    _mel: torch.Tensor | None = None

    @property
    def mel(self) -> torch.Tensor:
        """The generated mel (128, T) (materialises a streaming result)."""
        if self._mel is None:
            whole = torch.cat([b.cpu() for b in self.blocks], -1)
            self.blocks = [whole]
            self._mel = whole[:, self.lead:]
        return self._mel

    def _audio_blocks(self):
        gl = GriffinLim(n_iter=self.gl_iters)
        if self.prefix_mel is None or self.prefix_mel.shape[-1] == 0:
            yield self.prefix
            yield from (a.numpy() for a in gl.stream(b.cpu() for b in self.blocks))
            return
        # vocode from inside the start, the audio held to the start's own over the warm-up (and lead)
        # frames, so the continuation grows out of it. The vocoder gives those samples back as the start
        # itself but for its last 0.2 s, cross-faded into the continuation (`GriffinLim.stream`)
        skip = (self.prefix_mel.shape[-1] + self.lead) * HOP
        if len(self.prefix) < skip:
            raise ValueError(f"the start ({len(self.prefix)} samples) is shorter than its warm-up frames")
        yield self.prefix[: len(self.prefix) - skip]
        start = torch.from_numpy(np.ascontiguousarray(self.prefix[len(self.prefix) - skip:]))
        for a in gl.stream(_chain([self.prefix_mel.cpu()], (b.cpu() for b in self.blocks)), start=start):
            yield a.numpy()

    @property
    def audio(self) -> np.ndarray:
        """float32 audio at 16 kHz (prefix + vocoded mel)."""
        self.mel  # noqa: B018  keep the blocks for later saves
        return np.concatenate(list(self._audio_blocks())).astype(np.float32)

    def save(self, path, spectrogram=None) -> Path:
        """Write the WAV (streamed, atomically) and optionally a spectrogram PNG of the generated mel."""
        if spectrogram is not None:
            from .codec import write_spectrogram_png

            mel = self.mel if self.prefix_mel is None else torch.cat([self.prefix_mel.cpu(), self.blocks[0]], -1)
            write_spectrogram_png(spectrogram, mel, title=Path(path).name)
        write_wav_stream(path, self._audio_blocks())
        return Path(path)


def _chain(*its):
    for it in its:
        yield from it


def _opts(sampling, kw) -> Sampling:
    opts = sampling or Sampling(**kw)
    opts.check()
    return opts


def synth(midi, checkpoint=None, device="cpu", sampling: Sampling | None = None, model=None,
          stream: bool = False, **kw) -> Generated:
    """Render a MIDI file (or a list of `Note`s) to music. Keyword arguments set `Sampling` fields
    (sampler, steps, cfg_notes, cfg_context, seed, gl_iters). With stream=True the segments are sampled
    while the result is saved, in constant memory (`.save` once)."""
    opts = _opts(sampling, kw)
    notes = read_midi(midi) if not isinstance(midi, list) else midi
    if not notes:
        raise MidiError("no notes to synthesise; give a MIDI file with at least one note.")
    model = model or load_model(checkpoint, device)
    n_frames = n_segments(notes) * SEGMENT_FRAMES
    gen = torch.Generator(device=next(model.parameters()).device).manual_seed(opts.seed)
    plan = window_plan(n_frames, 0, opts.overlap, notes, model.max_tokens)
    blocks = windows(model, notes, torch.zeros(N_MELS, 0), n_frames, opts, gen, plan)
    result = Generated(blocks, seams=_seams(plan, 0), gl_iters=opts.gl_iters)
    if not stream:
        result.mel  # noqa: B018  sample now
    return result


def covered_frames(row: list[int], max_tokens: int) -> int:
    """How many of a window's first frames keep all their notes when its token row is cut to
    `max_tokens` (`pad_tokens`): the frames before the last time token that survives the cut."""
    if len(row) <= max_tokens:
        return SEGMENT_FRAMES
    lo, hi = VOCAB.time_offset, VOCAB.time_offset + VOCAB.n_time
    times = [tok - lo for tok in row[: max_tokens - 1] if lo <= tok < hi]
    return times[-1] // 2 if times else 0                               # 2 steps of 10 ms a frame


def window_plan(n_frames: int, known: int, overlap: int, notes=None, max_tokens: int | None = None
                ) -> list[tuple[int, int]]:
    """(overlap, new frames) of each window, as `block_lengths`, except where a window's notes need more
    tokens than the model reads (`max_tokens`; dense piano writing: 400+ tokens in 5.12 s): the tokens
    past the budget would be cut and the notes they carry never sounded, so that window keeps only the
    frames whose notes all fit, less CUT_MARGIN, and the next one starts there."""
    out, done = [], 0
    while done < n_frames:
        left = n_frames - done
        ov, n = block_lengths(left, known + done, overlap)[0]
        if notes and max_tokens and len(window_tokens(notes, 2 * (done - ov))) > max_tokens:
            ov = min(known + done, overlap)
            room = covered_frames(window_tokens(notes, 2 * (done - ov)), max_tokens) - CUT_MARGIN
            cap = left if left <= SEGMENT_FRAMES - ov else SEGMENT_FRAMES - ov - overlap
            n = min(cap, max(room - ov, MIN_NEW))
        out.append((ov, n))
        done += n
    return out


def _seams(plan: list[tuple[int, int]], known: int) -> list[float]:
    """Seconds (from the end of `known` frames) where a window of `plan` begins after other frames."""
    starts, done = [], 0
    for _, n in plan:
        if known + done > 0:
            starts.append(done * HOP / 16000)
        done += n
    return starts


def continue_(start, seconds: float, notes=None, checkpoint=None, device="cpu", sampling: Sampling | None = None,
              model=None, stream: bool = False, **kw) -> Generated:
    """The start audio (a file or a float array at 16 kHz) followed by `seconds` of continuation. With
    `notes` (a MIDI file or `Note`s, time 0 = the end of the start) the continuation plays them (a
    `Note` with a negative onset is held over from the start: it sounds on without a new attack);
    without, it continues freely from the start (notes dropped: the context-only model). stream=True as
    for `synth`."""
    if not isinstance(seconds, (int, float)) or not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"seconds must be a positive number of seconds to add, got {seconds!r}.")
    opts = _opts(sampling, kw)
    if opts.texture is None:
        opts = replace(opts, texture=CONTINUE_TEXTURE)
    audio = load_audio(start) if not isinstance(start, np.ndarray) else np.asarray(start, np.float32)
    # frames aligned to the END of the start (a partial frame is left out at its beginning), so the
    # continuation's first frame follows the start's last sample
    mel = audio_to_mel(torch.from_numpy(audio[len(audio) % HOP:]))       # (128, T)
    if mel.shape[-1] < 2:
        raise AudioError(f"{start if not isinstance(start, np.ndarray) else 'start audio'}: shorter than two "
                         "20 ms frames; give a longer start.")
    # the last frame's window reaches past the end (zero padding): it is generated again (one lead
    # frame), and the notes' time 0 (the end of the start) is one frame into the generated frames
    known, lead = mel[:, :-1], 1
    note_list = None
    if notes is not None:
        note_list = read_midi(notes) if not isinstance(notes, list) else notes
        note_list = [replace(n, onset=n.onset + lead * HOP / 16000, offset=n.offset + lead * HOP / 16000)
                     for n in note_list]
    model = model or load_model(checkpoint, device)
    n_frames = round(seconds * 16000 / HOP)
    gen = torch.Generator(device=next(model.parameters()).device).manual_seed(opts.seed)
    plan = window_plan(n_frames + lead, known.shape[-1], opts.overlap, note_list or None, model.max_tokens)
    blocks = windows(model, note_list or None, known, n_frames + lead, opts, gen, plan)
    t0 = len(audio) / 16000
    seams = [t0 + max(s - lead * HOP / 16000, 0.0) for s in _seams(plan, known.shape[-1])]
    result = Generated(blocks, prefix=audio, prefix_mel=known[:, -min(known.shape[-1], 100):], gl_iters=opts.gl_iters,
                       seams=seams, lead=lead)
    if not stream:
        result.mel  # noqa: B018  sample now
    return result
