"""The audio model against ground truth on held-out test pieces, beside the codec ceiling and the sine
baseline; continuation with and without notes; a tune from outside the corpus; speed.

Ground truth is the FluidSynth render of the piece's notes (test split: never seen in training; --split
val scores the validation pieces instead, the ones settings are chosen on).
Rows (means over pieces, first SECONDS of each):
  codec ceiling      ground-truth mel -> Griffin-Lim (what any mel model can reach with this vocoder)
  sine baseline      additive sine synth of the notes
  learned template   (models with a learned renderer) its template of the notes alone -> Griffin-Lim
  synth              the model, every window from its notes and the 5.12 s before it (generated)
  continue + notes   the first segment is given (the real render); the rest follows the notes
  continue free      the same without notes (context only): expected to drift from the reference
Continuation rows are scored on the continued part only, with the seam ratio at its joins (the start
join and the window joins after it). `continue + notes` is given the notes that sound after the join,
those held over it with their negative onsets (see `held_over`).

Seam ratio (polydiff.audio.metrics.join_ratios): at each join, the spectral flux there (max over 4
frames) over the median flux of the same piece away from its joins; the column is the MEDIAN over the
joins of all pieces pooled (how many is printed). The model rows are scored at the model's own joins
(where a window's new frames begin: 4.8 s, then every 4.48 s with the default 16-frame overlap); the
`ground truth` row scores the FluidSynth render at exactly the same times, so it shows what music alone
gives at those joins (an onset can fall on one). A seamless model matches that row, not 1.0. Ceiling and
baseline have no joins; their seam column is at the model's joins too (what a seamless signal scores). The continue rows'
start join (real audio -> model) is also printed on its own: it is one join in four.

Synth against the baseline, paired (every synth row, --also ones too): the mean per-piece difference in
chroma and onset F1 with its 95% bootstrap interval over the pieces (resampled 10,000 times), and on how
many pieces synth is ahead: an interval above 0 is what "clearly above the baseline" is taken to mean, as
the per-piece figures vary a lot (pieces of sustained voices have onsets in the reference that are not
the notes' attacks (part of them the sound font's tremolo, benchmarks/audio_tremolo.py): the share of the
reference's onsets more than 50 ms from every note onset is printed, by family).

Out of corpus: a flute + cello tune written here (polydiff.audio.demo) is synthesised; reported are its
chroma cosine against the FluidSynth render and the share of chroma energy in the tune's 6 pitch
classes (0.5 by chance; the render's own share beside it).

Speed (one run, this machine): real-time factor of `synth` at default settings (sampling + vocoding,
seconds per second of audio), and the time of one segment sampled by 1000-step DDPM over the same model
and guidance against the default sampler.

    .venv/bin/python benchmarks/audio_eval.py --pieces 16 --seconds 20 --also attack=0
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from audio_ceiling import print_table, test_pieces
from polydiff.audio.baseline import sine_synth
from polydiff.audio.codec import SAMPLE_RATE, SEGMENT_FRAMES, GriffinLim, audio_to_mel
from polydiff.audio.metrics import ONSET_WINDOW, all_metrics, onsets
from polydiff.audio.notes import Note, held_over
from polydiff.audio.pipeline import SEGMENT_SECONDS, Sampling, continue_, load_model, synth


def shift(notes: list[Note], t0: float, end: float) -> list[Note]:
    """Notes sounding in [t0, end), moved so that t0 is time 0 (cut at both ends)."""
    out = []
    for n in notes:
        on, off = max(n.onset, t0) - t0, min(n.offset, end) - t0
        if off > on + 0.01 and n.onset < end:
            out.append(Note(on, off, n.pitch, n.velocity, n.program, n.is_drum))
    return out


def template_mel(model, notes: list[Note]) -> torch.Tensor:
    """(128, T): the model's learned renderer (`audio.timbre`) drawing the notes segment by segment, with
    no diffusion: the template the residual model is centred on."""
    from polydiff.audio.notes import encode_segments, pad_tokens

    tok = torch.from_numpy(pad_tokens(encode_segments(notes), model.max_tokens)[0].astype(np.int64))
    with torch.no_grad():
        return torch.cat(list(model.timbre(tok)), -1)


def chroma_share(audio, pitch_classes) -> float:
    import librosa

    c = librosa.feature.chroma_stft(y=np.asarray(audio, np.float32), sr=SAMPLE_RATE, n_fft=2048, hop_length=320,
                                    norm=None)
    return float(c[sorted(pitch_classes)].sum() / max(c.sum(), 1e-12))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", type=Path, default=None, help="model folder [default: the shipped one]")
    ap.add_argument("--pieces", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=20.0, help="seconds of each piece (3 joins)")
    ap.add_argument("--split", choices=("test", "val"), default="test",
                    help="the pieces scored: test (the reported figures) or val (for choosing settings)")
    ap.add_argument("--cache", type=Path, default=None, help="[default: .cache/audio_bench_<split>]")
    ap.add_argument("--steps", type=int, default=Sampling.steps)
    ap.add_argument("--sampler", default=Sampling.sampler)
    ap.add_argument("--cfg-notes", type=float, default=Sampling.cfg_notes)
    ap.add_argument("--cfg-context", type=float, default=Sampling.cfg_context)
    ap.add_argument("--sigma-min", type=float, default=Sampling.sigma_min)
    ap.add_argument("--temperature", type=float, default=Sampling.temperature)
    ap.add_argument("--also", action="append", default=[], metavar="K=V,...",
                    help="extra synth and continue rows with these Sampling fields, e.g. steps=16,overlap=0")
    ap.add_argument("--ddpm-steps", type=int, default=1000, help="0 skips the DDPM speed comparison")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a busy 2-core box)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    opts = Sampling(sampler=args.sampler, steps=args.steps, cfg_notes=args.cfg_notes, cfg_context=args.cfg_context,
                    sigma_min=args.sigma_min, temperature=args.temperature)
    extra = {}
    for spec in args.also:
        kw = {k: (float if getattr(opts, k) is None else type(getattr(opts, k)))(v)
              for k, v in (item.split("=") for item in spec.split(","))}
        extra[f"synth {spec}"] = Sampling(**{**opts.__dict__, **kw})
    model = load_model(args.checkpoint)
    print(f"model: {args.checkpoint or 'shipped'}, {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M "
          f"parameters; sampling {opts}")

    pieces = test_pieces(args.cache or Path(f".cache/audio_bench_{args.split}"), args.pieces, args.seconds,
                         split=args.split)
    rows: dict[str, list[dict]] = {}
    cont: dict[str, list[dict]] = {}
    gl = GriffinLim(n_iter=opts.gl_iters)
    synth_time, synth_secs = 0.0, 0.0
    settings = {"": opts, **{f" {k.removeprefix('synth ')}": o for k, o in extra.items()}}
    for p, ref, notes in pieces:
        print(f"  {p['id']}: {p['family']}, programs {p['programs']}, drums {p.get('drums', False)}", flush=True)
        for tag, o in settings.items():
            t = time.perf_counter()
            res = synth(shift(notes, 0.0, args.seconds), model=model, sampling=o)
            song = res.audio
            if not tag:
                synth_time += time.perf_counter() - t
                synth_secs += len(song) / SAMPLE_RATE
                seams = [s for s in res.seams if s < args.seconds - 0.5]
                systems = [(f"codec ceiling (GL {opts.gl_iters})", gl.mel_to_audio(audio_to_mel(ref)).numpy()),
                           ("sine baseline", sine_synth(notes, args.seconds)), ("ground truth", ref)]
                if hasattr(model, "timbre"):            # the model's learned template alone: what diffusion adds
                    systems.append(("learned template alone", gl.mel_to_audio(template_mel(
                        model, shift(notes, 0.0, args.seconds))).numpy()))
                for name, audio in systems:
                    rows.setdefault(name, []).append(all_metrics(audio[: len(ref)], ref, notes, seams))
            joins = [s for s in res.seams if s < args.seconds - 0.5]
            rows.setdefault(f"synth{tag}", []).append(all_metrics(song[: len(ref)], ref, notes, joins))
            if tag:
                rows.setdefault(f"ground truth at joins of{tag}", []).append(all_metrics(ref, ref, notes, joins))
            # continuation: the real first segment, then the model
            n0 = SEGMENT_FRAMES * 320
            start, rest, more = ref[:n0], ref[n0:], args.seconds - SEGMENT_SECONDS
            later = shift(notes, SEGMENT_SECONDS, args.seconds)                 # scored against
            held = held_over(notes, SEGMENT_SECONDS, args.seconds)              # given to the model
            for name, kw in ((f"continue + notes{tag}", {"notes": held}), (f"continue free{tag}", {})):
                res = continue_(start, more, model=model, sampling=o, **kw)
                out, joins = res.audio, [s for s in res.seams if s < args.seconds - 0.5]
                m = all_metrics(out[n0:][: len(rest)], rest, later)
                m.update({k: v for k, v in all_metrics(out, ref, seam_times=joins).items() if k.startswith("seam")})
                cont.setdefault(name, []).append(m)
            gt = {k: v for k, v in all_metrics(ref, ref, seam_times=joins).items() if k.startswith("seam")}
            cont.setdefault(f"ground truth at joins of continue{tag}", []).append(gt)

    n_joins = {name: sum(len(m.get("seam_joins", ())) for m in ms) for name, ms in {**rows, **cont}.items()}
    print(f"\n{len(pieces)} held-out {args.split} pieces x {args.seconds:.2f} s (synth: whole piece; continue: "
          f"the {args.seconds - SEGMENT_SECONDS:.2f} s after the real first segment); means over pieces, "
          "seam_ratio the median over all joins pooled; lower is better for the first three")
    print_table(rows, width=36)
    print()
    print_table(cont, width=36)
    print(f"joins pooled per seam_ratio: {max(n_joins.values())} ({len(pieces)} pieces); continue rows at "
          "the start join / at the joins after it: " + ", ".join(
              f"{k} {np.median([m['seam_joins'][0] for m in ms]):.2f} / "
              f"{np.median(np.concatenate([m['seam_joins'][1:] for m in ms])):.2f}" for k, ms in cont.items()))

    print("per piece, onset F1 synth / sine baseline (chroma synth / sine):")
    for (p, _, _), a, b in zip(pieces, rows["synth"], rows["sine baseline"]):
        print(f"  {p['id'][:40]:40s} {p['family']:8s} {a['onset_f1']:.2f} / {b['onset_f1']:.2f} "
              f"({a['chroma_cos']:.2f} / {b['chroma_cos']:.2f})")

    # how many of the reference's onsets are not the notes' attacks? Onsets the detector finds in the
    # render more than the onset window from every note onset (part of them the sound font's tremolo,
    # for some programs at the same times after every note-on: benchmarks/audio_tremolo.py)
    far = {}
    for p, ref, notes in pieces:
        gt, at = onsets(ref), np.array(sorted({n.onset for n in notes}))
        f = far.setdefault(p["family"], [0, 0])
        f[0] += int(sum(np.abs(at - t).min() > ONSET_WINDOW for t in gt)) if len(at) else len(gt)
        f[1] += len(gt)
    tot = np.sum(list(far.values()), 0)
    print(f"reference onsets more than {ONSET_WINDOW * 1000:.0f} ms from every note onset: {tot[0] / tot[1]:.3f} "
          f"({tot[0]} of {tot[1]}); by family: " + ", ".join(f"{k} {a / b:.2f}" for k, (a, b) in sorted(far.items())))

    # is synth above the baseline beyond piece-to-piece chance? paired over the same pieces
    rng = np.random.default_rng(0)
    for name, col in ((n, c) for n in rows if n.startswith("synth") for c in ("chroma_cos", "onset_f1")):
        d = np.array([a[col] - b[col] for a, b in zip(rows[name], rows["sine baseline"])])
        boot = d[rng.integers(0, len(d), (10000, len(d)))].mean(1)
        lo, hi = np.percentile(boot, [2.5, 97.5])
        print(f"{name} - sine baseline, {col}: {d.mean():+.3f} (95% paired bootstrap over the {len(d)} pieces "
              f"[{lo:+.3f}, {hi:+.3f}]; synth ahead on {int((d > 0).sum())}, level on {int((d == 0).sum())}, "
              f"behind on {int((d < 0).sum())})")

    # a tune from outside the corpus
    from polydiff.audio.corpus import render_midi
    from polydiff.audio.demo import demo_notes
    from polydiff.audio.notes import write_midi

    tune = demo_notes()
    tmp = Path(".cache/audio_eval_tune.mid")
    write_midi(tune, tmp)
    fs = render_midi(tmp)
    ours = synth(tune, model=model, sampling=opts).audio[: len(fs)]
    pcs = {n.pitch % 12 for n in tune}
    from polydiff.audio.metrics import chroma_cosine

    print(f"\nout-of-corpus tune ({len(tune)} notes, pitch classes {sorted(pcs)}): chroma cosine vs FluidSynth "
          f"{chroma_cosine(ours, fs):.3f} (sine baseline {chroma_cosine(sine_synth(tune, len(fs) / SAMPLE_RATE), fs):.3f}); "
          f"chroma energy in the tune's pitch classes {chroma_share(ours, pcs):.3f} "
          f"(FluidSynth {chroma_share(fs, pcs):.3f}, chance {len(pcs) / 12:.3f})")

    # speed
    rtf = synth_time / synth_secs
    print(f"\nspeed ({args.threads} thread, default settings, {opts.steps} {opts.sampler} steps, "
          f"cfg notes {opts.cfg_notes}): synth real-time factor {rtf:.3f} "
          f"({synth_time:.1f} s for {synth_secs:.1f} s of audio, Griffin-Lim {opts.gl_iters} iterations included)")
    if args.ddpm_steps:
        from polydiff.audio.pipeline import sample_segment

        notes = shift(pieces[0][2], 0.0, SEGMENT_SECONDS)
        from polydiff.audio.notes import encode_segments, pad_tokens

        tok = torch.from_numpy(pad_tokens(encode_segments(notes, 1), model.max_tokens)[0].astype(np.int64))
        ctx = torch.full((1, 128, SEGMENT_FRAMES), -1.0)
        timings = {}
        for name, o in (("default", opts), ("ddpm", Sampling(sampler="ddpm", steps=args.ddpm_steps, temperature=1.0,
                                                             cfg_notes=opts.cfg_notes, cfg_context=opts.cfg_context))):
            gen = torch.Generator().manual_seed(0)
            t = time.perf_counter()
            sample_segment(model, tok, ctx, o, gen)
            timings[name] = time.perf_counter() - t
        print(f"one segment ({SEGMENT_SECONDS} s), sampling only: {opts.sampler} {opts.steps} steps "
              f"{timings['default']:.2f} s (RTF {timings['default'] / SEGMENT_SECONDS:.3f}), {args.ddpm_steps}-step "
              f"DDPM {timings['ddpm']:.1f} s (RTF {timings['ddpm'] / SEGMENT_SECONDS:.2f}): "
              f"{timings['ddpm'] / timings['default']:.0f}x faster")


if __name__ == "__main__":
    main()
