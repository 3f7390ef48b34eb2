"""DMD distillation: the DM gradient and its surrogate, the fake-score loss, backward simulation, the
two-time-scale update, a short run against an exact (closed-form) teacher, and the exported student."""

import json
import tempfile

import pytest
import torch

from polydiff.core.checkpoint import load_pretrained
from polydiff.core.distill import (DistillRun, DMDConfig, DMDPair, PairSet, Teacher, _pair_loss, backward_simulation,
                                   distill, distribution_matching_loss, dmd_gradient, fake_score_loss, generate,
                                   student_sigmas, surrogate_loss)
from polydiff.core.distill_toy import ToyDenoiser
from polydiff.core.losses import diffusion_loss
from polydiff.core.samplers import sample
from polydiff.core.testbed import GaussianMixture, sliced_wasserstein
from polydiff.core.train import TrainConfig, fit

RING = GaussianMixture.ring(8, radius=2.0, std=0.2)


def gen(seed):
    return torch.Generator().manual_seed(seed)


def test_surrogate_gradient_is_the_dmd_gradient_and_points_along_the_score_difference():
    x = torch.randn(16, 2, generator=gen(0), dtype=torch.float64)
    sigma = torch.rand(16, generator=gen(1), dtype=torch.float64) * 2 + 0.1
    noise = torch.randn(16, 2, generator=gen(2), dtype=torch.float64)
    fake_gmm = GaussianMixture.ring(3, radius=1.0, std=0.5)
    x_t = x + sigma[:, None] * noise
    real_x0, fake_x0 = RING.denoise(x_t, sigma), fake_gmm.denoise(x_t, sigma)

    grad = dmd_gradient(x, real_x0, fake_x0)
    # the formula, written out per sample
    for i in range(16):
        assert torch.allclose(grad[i], (fake_x0[i] - real_x0[i]) / (x[i] - real_x0[i]).abs().mean(), rtol=1e-12)
    # Tweedie: D = x_t + s^2 score, so the gradient is sigma^2 (s_fake - s_real) up to the positive normaliser
    scale = (x - real_x0).abs().mean(1, keepdim=True)
    tweedie = sigma[:, None] ** 2 * (fake_gmm.score(x_t, sigma) - RING.score(x_t, sigma))
    assert torch.allclose(grad * scale, tweedie, atol=1e-9)

    # the surrogate: d sum / dx is grad; the training loss is its mean over elements
    xg = x.clone().requires_grad_(True)
    surrogate_loss(xg, grad).sum().backward()
    assert torch.allclose(xg.grad, grad, rtol=1e-12, atol=1e-12)
    xg.grad = None
    distribution_matching_loss(xg, RING.denoise, fake_gmm.denoise, sigma, noise).backward()
    assert torch.allclose(xg.grad, grad / x.numel(), rtol=1e-12, atol=1e-15)


def test_fake_score_loss_is_the_core_diffusion_loss_on_detached_student_samples():
    torch.manual_seed(0)
    student, fake = ToyDenoiser(hidden=16, depth=1), ToyDenoiser(hidden=16, depth=1)
    z = torch.randn(32, 2, generator=gen(3))
    x = student(z * 80.0, torch.full((32,), 80.0))
    loss = fake_score_loss(fake, x, generator=gen(4))
    assert torch.equal(loss, diffusion_loss(fake, x.detach(), generator=gen(4)))
    loss.backward()
    assert all(p.grad is None for p in student.parameters())              # never trains the generator
    assert sum(float(p.grad.abs().sum()) for p in fake.parameters()) > 0


def test_backward_simulation_gives_inputs_at_the_grid_levels_with_fresh_noise():
    c = torch.tensor([0.7, -1.3], dtype=torch.float64)

    def constant(x, sigma):  # a student that always answers c: x_k - c must be N(0, s_k^2 I), independent of z
        return c.expand_as(x).clone()

    sigmas = student_sigmas(4, 80.0, sigma_min=0.5)
    assert len(sigmas) == 5 and sigmas[-1] == 0
    assert torch.allclose(sigmas[[0, 3]], torch.tensor([80.0, 0.5], dtype=torch.float64), rtol=1e-12)
    z = torch.randn(20000, 2, generator=gen(5), dtype=torch.float64)
    assert torch.equal(backward_simulation(constant, z, sigmas, 0), z * 80.0)
    for k in (1, 2, 3):
        x = backward_simulation(constant, z, sigmas, k, generator=gen(6 + k))
        r = (x - c) / float(sigmas[k])
        assert r.mean(0).abs().max() < 0.03 and (r.std(0) - 1).abs().max() < 0.03
        assert (r * z).mean(0).abs().max() < 0.03                       # re-noised: the input noise is gone


def test_two_time_scale_update_steps_the_generator_every_kth_call_only():
    torch.manual_seed(0)
    teacher = ToyDenoiser(hidden=16, depth=1)
    pair = DMDPair.from_teacher(teacher, DMDConfig(fake_steps_per_gen=3), sigma_max=80.0)
    batch = {"noise": torch.randn(8, 2), "target": torch.randn(8, 2)}
    pattern = []
    for step in range(6):
        pair.zero_grad(set_to_none=True)
        pair(batch, gen(step)).backward()
        pattern.append(all(p.grad is not None for p in pair.student.parameters()))
        assert all(p.grad is not None for p in pair.fake.parameters())
    assert pattern == [True, False, False, True, False, False]
    assert int(pair.calls) == 6                                              # saved with the weights: resumes


def test_exact_teacher_distribution_matching_moves_the_student_to_the_data():
    # Real score = the closed-form GMM denoiser; student and fake score: tiny MLPs from scratch; DM loss only.
    torch.manual_seed(0)
    student, fake = ToyDenoiser(hidden=32, depth=2, sigma_data=1.4), ToyDenoiser(hidden=32, depth=2, sigma_data=1.4)
    pair = DMDPair.from_teacher(None, DMDConfig(regression_weight=0.0, fake_steps_per_gen=3), sigma_max=80.0,
                                student=student, fake=fake, real=RING.denoise)
    ref = RING.sample(4000, gen(1)).float()
    z = torch.randn(4000, 2, generator=gen(2))

    def distance():
        with torch.no_grad():
            return float(sliced_wasserstein(generate(student, z, pair.sigmas), ref, 256, gen(3)))

    before = distance()
    cfg = TrainConfig(out_dir=tempfile.mkdtemp(), steps=300, batch_size=256, lr=3e-3, warmup_steps=10,
                      checkpoint_every=10**6, device="cpu", grad_clip=0.0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)   # tiny matrices: a second thread only adds contention on a shared CPU
    try:
        fit(pair, PairSet(torch.zeros(4096, 2)), _pair_loss, cfg)
    finally:
        torch.set_num_threads(threads)
    after = distance()
    assert before > 0.8 and after < 0.45 * before, (before, after)


def test_distill_writes_a_student_any_one_step_sampler_reproduces_and_resumes(tmp_path):
    torch.manual_seed(0)
    teacher = ToyDenoiser(hidden=16, depth=1)
    spec = Teacher(teacher, shape=(2,), sigma_min=0.002, sigma_max=80.0)
    train = TrainConfig(steps=4, batch_size=16, lr=1e-3, warmup_steps=1, checkpoint_every=2, device="cpu")
    run = DistillRun(dmd=DMDConfig(pairs=32, teacher_steps=4), train=train)
    folder, result = distill(spec, tmp_path / "student", run)
    meta = json.loads((folder / "config.json").read_text())
    assert meta["distilled"]["steps"] == 1 and meta["distilled"]["sigmas"] == [80.0, 0.0]
    loaded = load_pretrained(folder)
    assert isinstance(loaded, ToyDenoiser)
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(),
                                                 result.model.student.state_dict().values()))
    z = torch.randn(8, 2, generator=gen(7))
    with torch.no_grad():
        one_step = loaded(z * 80.0, torch.full((8,), 80.0))
        for method in ("dpmpp_2m", "heun", "euler", "unipc"):  # `--steps 1`: [sigma_max, 0] with any sampler
            # equal up to float32 rounding: samplers pass sigma as a float (coefficients in float64 math)
            torch.testing.assert_close(sample(loaded, z * 80.0, torch.tensor([80.0, 0.0]), method, progress=False),
                                       one_step, rtol=1e-6, atol=1e-6)
    # the pairs are cached and the run resumes from its last checkpoint
    assert (tmp_path / "student" / "dmd-run" / "pairs.safetensors").is_file()
    run2 = DistillRun(dmd=run.dmd, train=TrainConfig(**{**train.__dict__, "steps": 6}))
    _, result2 = distill(spec, tmp_path / "student", run2)
    assert result2.step == 6 and len(result2.losses) == 2 and int(result2.model.calls) == 6


def test_cfg_real_score_and_user_errors():
    torch.manual_seed(0)
    teacher = ToyDenoiser(hidden=16, depth=1)

    def real(x, sigma, shift):   # a conditional exact denoiser: the ring moved by `shift`
        return RING.denoise(x - shift, sigma) + shift

    pair = DMDPair.from_teacher(teacher, DMDConfig(cfg_scale=3.0), sigma_max=80.0, real=real,
                                null_condition=lambda cond: {"shift": torch.zeros_like(cond["shift"])})
    x, sigma = torch.randn(8, 2, dtype=torch.float64), torch.full((8,), 0.7, dtype=torch.float64)
    cond = {"shift": torch.full((8, 2), 0.5, dtype=torch.float64)}
    guided, kw = pair._real(cond)
    u, c = real(x, sigma, torch.zeros(8, 2, dtype=torch.float64)), real(x, sigma, cond["shift"])
    assert torch.allclose(guided(x, sigma, **kw), u + 3.0 * (c - u), atol=1e-12)
    pair.null_condition = None
    with pytest.raises(ValueError, match="null_condition"):
        pair._real(cond)
    with pytest.raises(ValueError, match="1..8"):
        student_sigmas(0, 80.0)
    with pytest.raises(TypeError, match="ModelMixin"):
        DMDPair.from_teacher(torch.nn.Linear(2, 2), DMDConfig(), sigma_max=80.0)


def test_cli_distill_command_through_the_plugin_hook(tmp_path, monkeypatch):
    import click
    from click.testing import CliRunner

    from polydiff.core import plugin as plugin_mod
    from polydiff.core.distill_cli import register

    torch.manual_seed(0)
    ToyDenoiser(hidden=16, depth=1).save_pretrained(tmp_path / "teacher")

    def load_teacher(folder, device):
        return Teacher(load_pretrained(folder, device=device), shape=(2,), sigma_max=80.0)

    plugins = {"toy": plugin_mod.Plugin("toy", "toy", extra={"distill": load_teacher}),
               "plain": plugin_mod.Plugin("plain", "no hook")}
    monkeypatch.setattr(plugin_mod, "plugin_entry_points", lambda: {k: k for k in plugins})
    monkeypatch.setattr(plugin_mod, "load_plugin", lambda ep: plugins[ep])

    group = click.Group("polydiff")
    register(group)
    args = ["distill", "toy", "--teacher", str(tmp_path / "teacher"), "-o", str(tmp_path / "student"),
            "--device", "cpu", "dmd.pairs=32", "dmd.teacher_steps=4", "train.steps=2", "train.batch_size=8"]
    res = CliRunner().invoke(group, args)
    assert res.exit_code == 0, res.output
    student = load_pretrained(tmp_path / "student")
    assert isinstance(student, ToyDenoiser)
    assert json.loads((tmp_path / "student" / "config.json").read_text())["distilled"]["method"] == "dmd"
    res = CliRunner().invoke(group, ["distill", "plain", "--teacher", str(tmp_path / "teacher"), "-o",
                                     str(tmp_path / "s2")])
    assert res.exit_code != 0 and "does not support distillation" in res.output


def test_pair_holds_student_and_fake_only():
    teacher = ToyDenoiser(hidden=16, depth=1)
    pair = DMDPair.from_teacher(teacher, DMDConfig(), sigma_max=80.0)
    keys = set(pair.state_dict())
    own = teacher.state_dict()
    assert keys == {"calls"} | {f"student.{k}" for k in own} | {f"fake.{k}" for k in own}
    assert pair.real is teacher                 # used, never trained or saved
