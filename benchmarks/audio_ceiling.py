"""Codec ceiling and trivial baseline on held-out test pieces of the audio corpus.

For each of a few test-split pieces (built into a small cache if missing), the first SECONDS of the
FluidSynth render are the ground truth. Rows:
  ground truth      the render against itself (sanity: perfect scores)
  codec ceiling     ground-truth mel -> Griffin-Lim (whole piece, no seams) -> audio
  GL per segment    the same, but each 5.12 s segment vocoded alone and concatenated (what seams cost)
  sine baseline     additive sine synth of the notes (audio.baseline)
Metrics as in polydiff.audio.metrics; means over pieces, except the seam ratio at the 5.12 s joins: the
median over the joins of all pieces pooled. An onset that happens to fall on a join counts, so the
ground truth's own ratio at the same joins is the reference a seamless system should match, not 1.0.

    .venv/bin/python benchmarks/audio_ceiling.py --pieces 3 --seconds 20
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from polydiff.audio.baseline import sine_synth
from polydiff.audio.codec import SAMPLE_RATE, SEGMENT_FRAMES, GriffinLim, audio_to_mel, load_audio
from polydiff.audio.corpus import build_data, corpus_piece_ids, split_of
from polydiff.audio.metrics import all_metrics
from polydiff.audio.notes import read_midi

SEGMENT_SECONDS = SEGMENT_FRAMES / 50


COLS = ["mel_l1", "lsd_db", "mr_stft", "chroma_cos", "onset_f1", "seam_ratio", "vel_loud_r"]


def test_pieces(cache: Path, n_pieces: int, seconds: float, split: str = "test"):
    """[(meta, reference audio (first `seconds`), notes starting before `seconds`)] of held-out test
    pieces, built into `cache` if missing (the first test-split music21 pieces at least that long).
    split="val": the same from the validation split (for choosing settings without the test pieces)."""
    ids = [i for i in corpus_piece_ids() if split_of(i) == split][: n_pieces + 3]
    index = build_data(cache, piece_ids=ids, seed=0, max_seconds=max(22.0, seconds + 2), splits=(split,))
    pieces = [p for p in index["pieces"] if p["seconds"] >= seconds][:n_pieces]
    n = int(seconds * SAMPLE_RATE)
    out = []
    for p in pieces:
        key = cache / "pieces" / p["key"]
        notes = [x for x in read_midi(f"{key}.mid") if x.onset < seconds]
        out.append((p, load_audio(f"{key}.flac")[:n], notes))
    return out


def seam_times(seconds: float, start: float = 0.0) -> list[float]:
    """Segment joins (s) inside a stretch of audio, at least half a second from its end."""
    return [start + SEGMENT_SECONDS * k for k in range(1, int(seconds / SEGMENT_SECONDS) + 1)
            if start + SEGMENT_SECONDS * k < start + seconds - 0.5]


def print_table(rows: dict, cols=COLS, width: int = 24) -> None:
    print(f"| {'system':<{width}} | " + " | ".join(f"{c:>10}" for c in cols) + " |")
    print("|" + "-" * (width + 2) + "|" + "|".join("-" * 12 for _ in cols) + "|")
    for name, ms in rows.items():
        vals = [np.nanmean(v) if (v := [m[c] for m in ms if c in m]) else np.nan for c in cols]
        joins = [m["seam_joins"] for m in ms if "seam_joins" in m]
        if "seam_ratio" in cols and joins:              # pooled over pieces: the median of every join
            vals[cols.index("seam_ratio")] = float(np.median(np.concatenate(joins)))
        print(f"| {name:<{width}} | " + " | ".join(f"{v:>10.3f}" for v in vals) + " |")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pieces", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--cache", type=Path, default=Path(".cache/audio_bench_test"))
    ap.add_argument("--gl-iters", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a busy 2-core box)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    pieces = test_pieces(args.cache, args.pieces, args.seconds)
    seams = seam_times(args.seconds)
    rows: dict[str, list[dict]] = {}
    gl = GriffinLim(n_iter=args.gl_iters)
    gl_time = 0.0
    for p, ref, notes in pieces:
        mel = audio_to_mel(ref)
        t = time.perf_counter()
        whole = gl.mel_to_audio(mel).numpy()
        gl_time += time.perf_counter() - t
        per_seg = np.concatenate([gl.mel_to_audio(mel[:, s: s + SEGMENT_FRAMES]).numpy()
                                  for s in range(0, mel.shape[1], SEGMENT_FRAMES)])
        for name, audio in (("ground truth", ref), (f"codec ceiling (GL {args.gl_iters})", whole),
                            ("GL per segment", per_seg), ("sine baseline", sine_synth(notes, args.seconds))):
            rows.setdefault(name, []).append(all_metrics(audio, ref, notes, seams))
        print(f"  {p['id']}: {p['family']}, programs {p['programs']}, tempo x{p['tempo_factor']:.2f}, "
              f"transpose {p['transpose']:+d}, drums {p.get('drums', False)}", flush=True)

    print(f"\n{len(pieces)} held-out test pieces x {args.seconds:.0f} s; means over pieces "
          "(lower is better for the first three)")
    print_table(rows)
    secs = len(pieces) * args.seconds
    print(f"\nGriffin-Lim ({args.gl_iters} iterations, {args.threads} thread): {gl_time:.1f} s for {secs:.0f} s "
          f"of audio, real-time factor {gl_time / secs:.3f}")


if __name__ == "__main__":
    main()
