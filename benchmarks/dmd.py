"""DMD on a 2D toy, from scratch: teacher training, distillation, quality, mode coverage and speed-up.

    .venv/bin/python benchmarks/dmd.py            # a few minutes on a CPU
    .venv/bin/python benchmarks/dmd.py --quick    # smaller, for a smoke run

1. Train a `ToyDenoiser` teacher on the 8-mode Gaussian ring (`GaussianMixture.ring`: radius 2, std 0.2)
   with the shared trainer.
2. Distil it (polydiff.core.distill.distill, through the same trainer) into a one-step student with
   regression + distribution matching, and for the ablation with regression only and with distribution
   matching only; plus a 2-step DMD2 student (no regression). All use the two-time-scale update (3).
3. Sliced W2 to fresh data samples for each, against the teacher's 50-NFE dpmpp_2m samples; the
   finite-sample floor (data vs data) is printed too. Mode coverage: the fraction of samples each mode
   gets (core.testbed component assignment, within 3 std) over its true weight, must lie in [0.5, 2].
4. Speed-up: one student call vs the teacher's 50-step dpmpp_2m at equal batch, best of several runs,
   timed in this run.

Ends with one line: `dmd: student_sw2/teacher_sw2=R speedup=S modes_ok=K/8`.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import tempfile
import time
from pathlib import Path

import torch

from polydiff.core.distill import DistillRun, DMDConfig, Teacher, distill, generate, student_sigmas
from polydiff.core.distill_toy import train_toy_teacher
from polydiff.core.samplers import sample
from polydiff.core.schedules import karras_sigmas
from polydiff.core.testbed import GaussianMixture, sliced_wasserstein
from polydiff.core.train import TrainConfig

SIGMA_MIN, SIGMA_MAX = 0.002, 80.0


def sw2(x, ref):
    return float(sliced_wasserstein(x, ref, n_projections=512, generator=torch.Generator().manual_seed(123)))


def best_time(fn, repeats: int = 5) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer steps and samples (smoke run)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (0: torch's default; 1 suits these tiny MLPs on a shared CPU)")
    ap.add_argument("--work", type=Path, default=None, help="folder for the runs (default: a temp folder)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    logging.getLogger("polydiff").setLevel(logging.WARNING)
    work = args.work or Path(tempfile.mkdtemp(prefix="dmd-bench-"))
    teacher_steps = 600 if args.quick else 2500
    distill_steps = 200 if args.quick else 1200
    n_eval = 4000 if args.quick else 10000

    gmm = GaussianMixture.ring(8, radius=2.0, std=0.2)
    data = gmm.sample(50000, torch.Generator().manual_seed(args.seed)).float()
    ref = gmm.sample(n_eval, torch.Generator().manual_seed(args.seed + 1)).float()
    floor = sw2(gmm.sample(n_eval, torch.Generator().manual_seed(args.seed + 2)).float(), ref)

    t0 = time.perf_counter()
    teacher = train_toy_teacher(data, work / "teacher", steps=teacher_steps, hidden=128, depth=3, seed=args.seed)
    t_teacher = time.perf_counter() - t0
    z = torch.randn(n_eval, 2, generator=torch.Generator().manual_seed(args.seed + 3))
    sig50 = karras_sigmas(50, SIGMA_MIN, SIGMA_MAX)
    with torch.no_grad():
        x_teacher = sample(teacher, z * SIGMA_MAX, sig50, "dpmpp_2m", progress=False)
    teacher_sw = sw2(x_teacher, ref)

    spec = Teacher(teacher, shape=(2,), sigma_min=SIGMA_MIN, sigma_max=SIGMA_MAX, sigma_data=teacher.sigma_data)
    train = TrainConfig(steps=distill_steps, batch_size=256, lr=1e-3, warmup_steps=50, ema_decay=0.99,
                        checkpoint_every=distill_steps, keep_last=1, log_every=50, grad_clip=0.0,
                        seed=args.seed, device="cpu", resume="never")
    # Every variant uses DMD2's two-time-scale update (3 fake-score steps per generator step): with one,
    # the fake score lags the student and distribution matching alone collapses modes on this toy.
    variants = {
        "regression + DM": DMDConfig(fake_steps_per_gen=3),
        "regression only": DMDConfig(fake_steps_per_gen=3, dm_weight=0.0),
        "DM only": DMDConfig(fake_steps_per_gen=3, regression_weight=0.0),
        "DMD2 2-step (no regression)": DMDConfig(steps=2, fake_steps_per_gen=3, regression_weight=0.0),
    }
    rows, students = [], {}
    for name, cfg in variants.items():
        cfg = dataclasses.replace(cfg, pairs=4096 if args.quick else 8192)
        t0 = time.perf_counter()
        steps = distill_steps * cfg.fake_steps_per_gen
        folder, result = distill(spec, work / name.split()[0].lower().replace("+", "") / str(len(rows)),
                                 DistillRun(dmd=cfg, train=dataclasses.replace(train, steps=steps)))
        student = result.model.student
        result.ema.copy_to(result.model)
        student.eval()
        sigmas = student_sigmas(cfg.steps, SIGMA_MAX, cfg.student_sigma_min, cfg.rho)
        with torch.no_grad():
            x = generate(student, z, sigmas, generator=torch.Generator().manual_seed(9))
        students[name] = (student, x)
        modes = (gmm.mode_histogram(x) / gmm.log_weights.exp()).tolist()
        rows.append((name, cfg.steps, sw2(x, ref), modes, time.perf_counter() - t0))

    # speed: the one-step student vs the teacher's 50-NFE dpmpp_2m at equal batch
    one_step = students["regression + DM"][0]
    with torch.no_grad():
        t_teacher_sample = best_time(lambda: sample(teacher, z * SIGMA_MAX, sig50, "dpmpp_2m", progress=False))
        t_student = best_time(lambda: generate(one_step, z, student_sigmas(1, SIGMA_MAX)))
    speedup = t_teacher_sample / t_student

    print(f"\nDMD on the 8-mode Gaussian ring (radius 2, std 0.2); {n_eval} samples; sliced W2 to fresh data")
    print(f"teacher: ToyDenoiser MLP 128x3, {teacher_steps} steps ({t_teacher:.0f} s); students: {distill_steps} "
          f"generator steps x 3 fake-score steps, batch 256, EMA 0.99; torch threads {torch.get_num_threads()}\n")
    print(f"| {'sampler':<36} | NFE | sliced W2 | / teacher | min..max mode weight ratio | train s |")
    print(f"|{'-' * 38}|-----|-----------|-----------|----------------------------|---------|")
    print(f"| {'data vs data (finite-sample floor)':<36} |   - | {floor:9.4f} | {floor / teacher_sw:9.2f} "
          f"| {'':26} |         |")
    t_modes = (gmm.mode_histogram(x_teacher) / gmm.log_weights.exp()).tolist()
    print(f"| {'teacher dpmpp_2m':<36} |  50 | {teacher_sw:9.4f} | {1:9.2f} | "
          f"{min(t_modes):5.2f}..{max(t_modes):<5.2f}{'':15} |         |")
    for name, nfe, sw, modes, secs in rows:
        print(f"| {'student: ' + name:<36} | {nfe:3d} | {sw:9.4f} | {sw / teacher_sw:9.2f} | "
              f"{min(modes):5.2f}..{max(modes):<5.2f}{'':15} | {secs:7.0f} |")
    print(f"\nsampling {n_eval} points: teacher 50 x dpmpp_2m {t_teacher_sample * 1e3:.1f} ms, "
          f"one-step student {t_student * 1e3:.2f} ms (best of 5, same run)")
    _, _, sw_main, modes_main, _ = rows[0]
    modes_ok = sum(0.5 <= m <= 2.0 for m in modes_main)
    print(f"dmd: student_sw2/teacher_sw2={sw_main / teacher_sw:.2f} speedup={speedup:.1f} modes_ok={modes_ok}/8")


if __name__ == "__main__":
    main()
