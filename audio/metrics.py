"""Metrics of generated (or vocoded) audio against ground truth (the FluidSynth render of the same notes).

All take float mono audio at 16 kHz (numpy or torch); pred and ref are cut to the shorter length.

* mel_l1: mean |mel_pred - mel_ref| on the codec's [-1, 1] log-mel (1.0 = 50 dB).
* log_spectral_distance: per-frame RMS of the dB difference of STFT power (floored at -80 dB), averaged.
* multi_resolution_stft: spectral convergence + log-magnitude L1, averaged over three STFT sizes
  (Yamamoto et al. 2020, Parallel WaveGAN).
* chroma_cosine: frame-wise cosine of librosa chroma, averaged over frames where the reference sounds.
* onset_f1: librosa onsets of both, matched by mir_eval within 50 ms.
* seam_ratio: the median over joins of (spectral flux at the join / median flux away from the joins),
  both fluxes taken as the maximum over the same 4-frame window, so a seamless stationary signal scores
  about 1. Medians on both sides: a musical onset that happens to fall on a join is an outlier of the
  joins just as onsets are of the interior, so neither side is pulled by a few of them (`join_ratios`
  gives the per-join values, for pooling the joins of several pieces before taking the median). Music
  is not stationary: the ground truth scored at the same joins is the reference, not 1.
* velocity_loudness_correlation: Pearson r between note velocities and the audio's level at the onsets.
"""

from __future__ import annotations

import numpy as np
import torch

from .codec import FRAMES_PER_SECOND, SAMPLE_RATE, audio_to_mel
from .notes import Note

ONSET_WINDOW = 0.05


def _np(x) -> np.ndarray:
    return np.asarray(torch.as_tensor(x).detach().cpu(), dtype=np.float32).reshape(-1)


def _pair(pred, ref) -> tuple[np.ndarray, np.ndarray]:
    pred, ref = _np(pred), _np(ref)
    n = min(len(pred), len(ref))
    return pred[:n], ref[:n]


def mel_l1(pred, ref) -> float:
    pred, ref = _pair(pred, ref)
    return float((audio_to_mel(pred) - audio_to_mel(ref)).abs().mean())


def _power(x: np.ndarray, n_fft: int, hop: int) -> torch.Tensor:
    x = torch.from_numpy(x)
    spec = torch.stft(x, n_fft, hop, window=torch.hann_window(n_fft), return_complex=True)
    return spec.abs() ** 2                                           # (n_fft // 2 + 1, frames)


def log_spectral_distance(pred, ref) -> float:
    pred, ref = _pair(pred, ref)
    p, r = (10 * torch.log10(_power(x, 1024, 320).clamp_min(1e-8)) for x in (pred, ref))
    return float(((p - r) ** 2).mean(0).sqrt().mean())


def multi_resolution_stft(pred, ref, resolutions=((512, 128), (1024, 256), (2048, 512))) -> float:
    pred, ref = _pair(pred, ref)
    total = 0.0
    for n_fft, hop in resolutions:
        p, r = _power(pred, n_fft, hop).sqrt(), _power(ref, n_fft, hop).sqrt()
        sc = (r - p).norm() / r.norm().clamp_min(1e-8)
        mag = (torch.log(r.clamp_min(1e-5)) - torch.log(p.clamp_min(1e-5))).abs().mean()
        total += float(sc + mag)
    return total / len(resolutions)


def chroma_cosine(pred, ref, floor_db: float = 60.0) -> float:
    import librosa

    pred, ref = _pair(pred, ref)
    cp, cr = (librosa.feature.chroma_stft(y=x, sr=SAMPLE_RATE, n_fft=2048, hop_length=320, norm=None)
              for x in (pred, ref))
    energy = cr.sum(0)
    sounding = energy > energy.max() * 10 ** (-floor_db / 10) if energy.max() > 0 else energy > 0
    if not sounding.any():
        return float("nan")
    cos = (cp * cr).sum(0) / (np.linalg.norm(cp, axis=0) * np.linalg.norm(cr, axis=0) + 1e-12)
    return float(cos[sounding].mean())


def onsets(audio) -> np.ndarray:
    """Onset times (s) by librosa's spectral-flux detector with backtracking off."""
    import librosa

    return librosa.onset.onset_detect(y=_np(audio), sr=SAMPLE_RATE, hop_length=160, units="time")


def onset_f1(pred, ref, window: float = ONSET_WINDOW) -> float:
    import mir_eval

    pred, ref = _pair(pred, ref)
    est, gt = onsets(pred), onsets(ref)
    if len(gt) == 0 and len(est) == 0:
        return 1.0
    if len(gt) == 0 or len(est) == 0:
        return 0.0
    return float(mir_eval.onset.f_measure(gt, est, window=window)[0])


def note_onset_f1(audio, notes: list[Note], window: float = ONSET_WINDOW) -> float:
    """Onsets detected in the audio against the notes' own onsets (alignment of audio with notes)."""
    import mir_eval

    gt = np.unique(np.round([n.onset for n in notes], 2))
    est = onsets(audio)
    if len(gt) == 0 or len(est) == 0:
        return 0.0
    return float(mir_eval.onset.f_measure(gt, est, window=window)[0])


def spectral_flux(audio) -> np.ndarray:
    """(T,) mean |mel[t] - mel[t-1]| over mel bins on the codec's log-mel; flux[0] = 0."""
    mel = audio_to_mel(_np(audio)).numpy()
    flux = np.zeros(mel.shape[1], np.float32)
    flux[1:] = np.abs(np.diff(mel, axis=1)).mean(0)
    return flux


def join_ratios(audio, seam_times, window: int = 4) -> np.ndarray:
    """(n_joins,) windowed flux at each join / median windowed flux away from every join. A join at frame
    j can disturb frames j-1..j+1 (the 1024-sample window spans it), so flux is max-pooled over frames
    j-1..j+2, and the interior is pooled the same way for a like-for-like comparison."""
    flux = spectral_flux(audio)
    T = len(flux)
    pooled = np.array([flux[max(0, t - 1): t - 1 + window].max() for t in range(1, T - window + 2)])
    joins = [round(s * FRAMES_PER_SECOND) for s in seam_times]
    joins = [j for j in joins if 1 <= j < len(pooled)]
    if not joins:
        raise ValueError("seam_ratio: no seam time falls inside the audio.")
    near = np.zeros(len(pooled), bool)
    for j in joins:
        near[max(0, j - 1 - window): j + window] = True
    inside = pooled[~near]
    return pooled[[j - 1 for j in joins]] / max(float(np.median(inside)), 1e-8)


def seam_ratio(audio, seam_times, window: int = 4) -> float:
    """Median over the joins of `join_ratios`: about 1 where joins look like any other frame."""
    return float(np.median(join_ratios(audio, seam_times, window)))


def velocity_loudness_correlation(audio, notes: list[Note], window: float = 0.08) -> float:
    """Pearson r between the loudest velocity at each onset (pitched notes grouped per 20 ms) and the
    RMS level (dB) of the audio in the `window` seconds after it; nan with fewer than 3 onsets or a
    constant velocity."""
    audio = _np(audio)
    groups: dict[int, int] = {}
    for n in notes:
        if not n.is_drum:
            k = round(n.onset * 50)
            groups[k] = max(groups.get(k, 0), n.velocity)
    vel, level = [], []
    w = int(window * SAMPLE_RATE)
    for k, v in sorted(groups.items()):
        s = int(k / 50 * SAMPLE_RATE)
        seg = audio[s: s + w]
        if len(seg) < w // 2:
            continue
        vel.append(v)
        level.append(10 * np.log10(np.mean(seg.astype(np.float64) ** 2) + 1e-10))
    if len(vel) < 3 or np.std(vel) == 0 or np.std(level) == 0:
        return float("nan")
    return float(np.corrcoef(vel, level)[0, 1])


def all_metrics(pred, ref, notes: list[Note] | None = None, seam_times=None) -> dict[str, float]:
    """Every metric of `pred` against `ref` (and the notes / seams when given) in one dict."""
    out = {"mel_l1": mel_l1(pred, ref), "lsd_db": log_spectral_distance(pred, ref),
           "mr_stft": multi_resolution_stft(pred, ref), "chroma_cos": chroma_cosine(pred, ref),
           "onset_f1": onset_f1(pred, ref)}
    if notes is not None:
        out["vel_loud_r"] = velocity_loudness_correlation(pred, notes)
    if seam_times:
        out["seam_joins"] = join_ratios(pred, seam_times)
        out["seam_ratio"] = float(np.median(out["seam_joins"]))
    return out
