"""The shared trainer: exact resume, no pickle, NaN guard, EMA and LR closed forms, accumulation,
sample hooks, iterable data; and the typed config loader."""

import csv
import dataclasses
import json
import math
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional

import pytest
import torch
from safetensors.torch import load_file

from polydiff.core.checkpoint import CheckpointError, ModelMixin, load_pretrained
from polydiff.core.config import ConfigError, apply_overrides, load_config, save_config
from polydiff.core.ema import EMA, ema_decay
from polydiff.core.train import TrainConfig, TrainingDiverged, fit, latest_checkpoint, list_checkpoints, lr_at


class DropoutNet(ModelMixin):
    """Tiny net with dropout, so the global RNG matters and a resume must restore it."""

    def __init__(self, dim: int = 2, hidden: int = 8):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(dim, hidden), torch.nn.SiLU(), torch.nn.Dropout(0.1),
                                       torch.nn.Linear(hidden, dim))

    def forward(self, x):  # (B, dim) -> (B, dim)
        return self.net(x)


def toy_data(n=40, dim=2):
    g = torch.Generator().manual_seed(7)
    x = torch.randn(n, dim, generator=g)
    return torch.utils.data.TensorDataset(x, torch.tanh(x.flip(-1)))


def noisy_mse(model, batch, generator):
    # Input noise from the trainer's generator: a resume must reproduce these draws too.
    x, y = batch
    x = x + 0.05 * torch.randn(x.shape, generator=generator, device=x.device)
    return ((model(x) - y) ** 2).mean()


def cfg_for(out, **kw):
    base = dict(out_dir=str(out), steps=20, batch_size=8, lr=1e-2, warmup_steps=3, log_every=1,
                checkpoint_every=1000, device="cpu", ema_decay=0.99)
    return TrainConfig(**{**base, **kw})


def fresh_model(seed=0):
    torch.manual_seed(seed)
    return DropoutNet()


def assert_no_pickle(folder: Path):
    """Every file of a checkpoint is safetensors or UTF-8 text (JSON / YAML); nothing else."""
    for f in folder.iterdir():
        if f.suffix == ".safetensors":
            load_file(str(f))
        else:
            assert f.suffix in (".json", ".yaml"), f
            f.read_text(encoding="utf-8")


# -- resume --------------------------------------------------------------------------------------
class Crash(Exception):
    pass


def test_resume_reproduces_uninterrupted_run_and_never_unpickles(tmp_path, monkeypatch):
    # 2k steps in one go vs the same run's step-1000 checkpoint resumed in a fresh fit for 1k more.
    steps, half = 2000, 1000
    common = dict(steps=steps, batch_size=4, lr=3e-3, warmup_steps=50, checkpoint_every=half, log_every=100)
    full = fit(fresh_model(), toy_data(), noisy_mse, cfg_for(tmp_path / "full", **common))
    middle = tmp_path / "full" / "checkpoints" / f"step-{half:09d}"
    assert_no_pickle(middle)

    def refuse(*a, **k):
        raise AssertionError("resume must not unpickle")

    for mod, name in [(torch, "load"), (pickle, "load"), (pickle, "loads"), (pickle, "Unpickler")]:
        monkeypatch.setattr(mod, name, refuse)
    # Different initial weights: everything must come from the checkpoint.
    resumed = fit(fresh_model(seed=99), toy_data(), noisy_mse,
                  cfg_for(tmp_path / "resumed", resume=str(middle), **common))
    monkeypatch.undo()

    assert resumed.step == full.step == steps
    assert resumed.losses == pytest.approx(full.losses[half:], rel=1e-6, abs=1e-7)
    for k, v in full.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[k], v, rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(resumed.ema.state_dict()[k], full.ema.state_dict()[k], rtol=1e-6, atol=1e-7)


def test_crash_then_resume_auto_continues_the_run_and_its_log(tmp_path):
    common = dict(steps=30, batch_size=4, checkpoint_every=10, log_every=5)
    full = fit(fresh_model(), toy_data(), noisy_mse, cfg_for(tmp_path / "full", **common))
    calls = {"n": 0}

    def crashing(model, batch, generator):  # dies in step 27, after logging step 25
        calls["n"] += 1
        if calls["n"] == 27:
            raise Crash
        return noisy_mse(model, batch, generator)

    with pytest.raises(Crash):
        fit(fresh_model(), toy_data(), crashing, cfg_for(tmp_path / "cut", **common))
    assert [p.name for p in list_checkpoints(tmp_path / "cut")] == ["step-000000010", "step-000000020"]
    resumed = fit(fresh_model(seed=5), toy_data(), noisy_mse, cfg_for(tmp_path / "cut", **common))
    assert resumed.losses == pytest.approx(full.losses[20:], rel=1e-6)
    # The CSV continues the interrupted one without the rows logged after the checkpoint.
    rows = list(csv.DictReader(open(tmp_path / "cut" / "log.csv")))
    assert [int(r["step"]) for r in rows] == [5, 10, 15, 20, 25, 30]
    assert [p.name for p in list_checkpoints(tmp_path / "cut")] == [f"step-0000000{k}" for k in (10, 20, 30)]


def test_damaged_checkpoint_gives_a_clear_error_naming_the_file(tmp_path):
    fit(fresh_model(), toy_data(), noisy_mse, cfg_for(tmp_path, steps=2))
    opt = latest_checkpoint(tmp_path) / "optimizer.safetensors"
    opt.write_bytes(opt.read_bytes()[:40])
    with pytest.raises(CheckpointError, match="optimizer.safetensors: not a readable safetensors file"):
        fit(fresh_model(), toy_data(), noisy_mse, cfg_for(tmp_path, steps=4))
    (opt.parent / "trainer_state.json").unlink()
    with pytest.raises(FileNotFoundError, match="not a training checkpoint"):
        fit(fresh_model(), toy_data(), noisy_mse, cfg_for(tmp_path / "x", steps=4, resume=str(opt.parent)))


# -- NaN guard -----------------------------------------------------------------------------------
def test_nan_guard_stops_at_the_step_and_keeps_last_good_checkpoint(tmp_path):
    bad_step = 25
    calls = {"n": 0}

    def loss_fn(model, batch, generator):
        calls["n"] += 1
        loss = noisy_mse(model, batch, generator)
        return loss * float("nan") if calls["n"] >= bad_step else loss

    cfg = cfg_for(tmp_path, steps=40, checkpoint_every=10)
    with pytest.raises(TrainingDiverged, match=f"non-finite loss nan at step {bad_step}") as err:
        fit(fresh_model(), toy_data(), loss_fn, cfg)
    last = latest_checkpoint(tmp_path)
    assert last.name == "step-000000020" and str(last) in str(err.value)
    assert json.loads((last / "trainer_state.json").read_text())["step"] == 20
    model = load_pretrained(last, cls=DropoutNet)
    ema = load_pretrained(last, cls=DropoutNet, use_ema=True)
    for m in (model, ema):
        assert all(torch.isfinite(p).all() for p in m.parameters())
    assert not list((tmp_path / "checkpoints").glob(".tmp-*"))


def test_nan_gradient_with_finite_loss_is_caught_too(tmp_path):
    calls = {"n": 0}

    def loss_fn(model, batch, generator):
        calls["n"] += 1
        loss = noisy_mse(model, batch, generator)
        if calls["n"] == 7:  # value 0, but d sqrt(|w - w|) / dw = inf * 0 = nan
            w = next(model.parameters())
            loss = loss + torch.sqrt((w - w.detach()).abs().sum())
        return loss

    with pytest.raises(TrainingDiverged, match="non-finite gradient norm nan at step 7.*no checkpoint was written"):
        fit(fresh_model(), toy_data(), loss_fn, cfg_for(tmp_path, steps=20, checkpoint_every=10))
    assert latest_checkpoint(tmp_path) is None


# -- LR schedule ---------------------------------------------------------------------------------
def test_lr_schedule_closed_form_and_what_the_optimizer_used(tmp_path):
    cfg = cfg_for(tmp_path, steps=21, warmup_steps=5, lr=0.02, min_lr_ratio=0.1)
    # warm-up: lr * (s + 1) / W; then floor + (lr - floor) * (1 + cos(pi * (s - W) / (steps - W))) / 2
    assert lr_at(0, cfg) == pytest.approx(0.004)
    assert lr_at(4, cfg) == pytest.approx(0.02)
    assert lr_at(5, cfg) == pytest.approx(0.02)
    assert lr_at(13, cfg) == pytest.approx((0.02 + 0.002) / 2)   # half-way through the cosine
    assert lr_at(21, cfg) == pytest.approx(0.002)
    assert lr_at(9, cfg) == pytest.approx(0.002 + 0.018 * (1 + math.cos(math.pi / 4)) / 2)
    constant = dataclasses.replace(cfg, schedule="constant")
    assert lr_at(17, constant) == 0.02

    fit(fresh_model(), toy_data(), noisy_mse, cfg)
    rows = list(csv.DictReader(open(tmp_path / "log.csv")))
    assert [float(r["lr"]) for r in rows] == pytest.approx([lr_at(s, cfg) for s in range(21)])


# -- EMA -----------------------------------------------------------------------------------------
class Scalar(ModelMixin):
    def __init__(self, value: float = 0.0):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor([value]))
        self.register_buffer("count", torch.tensor(0))


def test_ema_warmup_closed_form():
    # Weights held at c from an initial e0: ema_T = c + (e0 - c) * prod_{t<T} d_t, and with the warm-up
    # d_t = (1 + t) / (10 + t) that product telescopes to 9! T! / (T + 9)! = 1 / C(T + 9, 9).
    model = Scalar(1.0)
    ema = EMA(model, decay=0.9999)
    with torch.no_grad():
        model.w.fill_(3.0)
        model.count.fill_(7)
    for T in range(1, 31):
        ema.update(model)
        assert ema.shadow["w"].item() == pytest.approx(3.0 - 2.0 / math.comb(T + 9, 9), rel=1e-6)
    assert ema.shadow["count"].item() == 7  # integer buffers are copied, not averaged
    # With decay 0.5 the cap takes over from t = 8, where (1 + t) / (10 + t) reaches 0.5.
    assert [ema_decay(t, 0.5) for t in (0, 7, 8, 9, 100)] == pytest.approx([0.1, 8 / 17, 0.5, 0.5, 0.5])
    model = Scalar(1.0)
    ema = EMA(model, decay=0.5)
    model.w.data.fill_(3.0)
    for _ in range(20):
        ema.update(model)
    product = math.prod((1 + t) / (10 + t) for t in range(8)) * 0.5 ** 12
    assert ema.shadow["w"].item() == pytest.approx(3.0 - 2.0 * product, rel=1e-6)
    assert ema_decay(5, 0.5, warmup=False) == 0.5


def test_ema_apply_to_restores_and_copy_to():
    model = Scalar(1.0)
    ema = EMA(model, decay=0.9)
    model.w.data.fill_(5.0)
    with ema.apply_to(model):
        assert model.w.item() == 1.0
    assert model.w.item() == 5.0
    ema.copy_to(model)
    assert model.w.item() == 1.0


# -- accumulation, sample hook, iterable data, errors ----------------------------------------------
def test_gradient_accumulation_equals_the_full_batch(tmp_path):
    def mse(model, batch, generator):  # no dropout, no noise: only the arithmetic differs
        model.eval()
        x, y = batch
        return ((model(x) - y) ** 2).mean()

    a = fit(fresh_model(), toy_data(), mse, cfg_for(tmp_path / "a", batch_size=8, grad_accum=1))
    b = fit(fresh_model(), toy_data(), mse, cfg_for(tmp_path / "b", batch_size=8, grad_accum=4))
    assert b.losses == pytest.approx(a.losses, rel=1e-5)
    for k, v in a.model.state_dict().items():
        torch.testing.assert_close(b.model.state_dict()[k], v, rtol=1e-5, atol=1e-6)


def test_sample_hook_sees_ema_weights_then_training_weights_return(tmp_path):
    seen = []

    def hook(model, step, folder):
        assert not model.training and not torch.is_grad_enabled()
        seen.append((step, {k: v.clone() for k, v in model.state_dict().items()}))

    result = fit(fresh_model(), toy_data(), noisy_mse, cfg_for(tmp_path, steps=10, sample_every=5,
                                                                  tensorboard=True), sample_fn=hook)
    assert [s for s, _ in seen] == [5, 10]
    final = load_file(str(result.checkpoint / "model.safetensors"))
    for k, v in seen[-1][1].items():
        torch.testing.assert_close(v, result.ema.state_dict()[k])           # the hook had the EMA
        torch.testing.assert_close(result.model.state_dict()[k], final[k])  # and training weights came back
    assert any(not torch.equal(v, final[k]) for k, v in seen[-1][1].items())
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))


@pytest.mark.parametrize("precision, autocast", [("no", False), ("auto", False), ("bf16", True)])
def test_mixed_precision_autocast_is_on_only_when_asked(tmp_path, precision, autocast):
    seen = set()

    def loss_fn(model, batch, generator):
        seen.add(torch.is_autocast_enabled("cpu"))
        return noisy_mse(model, batch, generator)

    result = fit(fresh_model(), toy_data(), loss_fn, cfg_for(tmp_path, steps=3, mixed_precision=precision))
    assert seen == {autocast}  # "auto" means fp32 on the CPU
    assert all(v.dtype == torch.float32 for v in result.model.state_dict().values())  # master weights stay fp32
    assert all(math.isfinite(x) for x in result.losses)


def test_iterable_dataset_trains_like_the_same_ordered_map_dataset(tmp_path):
    data = toy_data()

    class Stream(torch.utils.data.IterableDataset):
        def __iter__(self):
            return iter(data[i] for i in range(len(data)))

    a = fit(fresh_model(), data, noisy_mse, cfg_for(tmp_path / "a", shuffle=False))
    b = fit(fresh_model(), Stream(), noisy_mse, cfg_for(tmp_path / "b", shuffle=False))
    assert b.losses == a.losses


def test_loader_workers_feed_the_same_batches(tmp_path):
    a = fit(fresh_model(), toy_data(), noisy_mse, cfg_for(tmp_path / "a", steps=8))
    b = fit(fresh_model(), toy_data(), noisy_mse, cfg_for(tmp_path / "b", steps=8, num_workers=2))
    assert b.losses == a.losses


def test_user_errors_are_clear(tmp_path):
    with pytest.raises(ValueError, match="multiple of grad_accum"):
        fit(fresh_model(), toy_data(), noisy_mse, cfg_for(tmp_path, batch_size=6, grad_accum=4))
    with pytest.raises(TypeError, match="scalar tensor"):
        fit(fresh_model(), toy_data(), lambda m, b, g: m(b[0]), cfg_for(tmp_path / "x"))
    with pytest.raises(ValueError, match="train.checkpoint_every must be >= 1, got 0"):
        fit(fresh_model(), toy_data(), noisy_mse, cfg_for(tmp_path / "w", checkpoint_every=0))
    with pytest.raises(ValueError, match="fp16 needs a CUDA GPU"):
        fit(fresh_model(), toy_data(), noisy_mse, cfg_for(tmp_path / "v", mixed_precision="fp16"))
    with pytest.raises(TypeError, match="ModelMixin"):
        fit(torch.nn.Linear(2, 2), toy_data(), noisy_mse, cfg_for(tmp_path / "y"))
    fit(fresh_model(), toy_data(), noisy_mse, cfg_for(tmp_path / "z", steps=2))
    with pytest.raises(ValueError, match="resume=auto"):
        fit(fresh_model(), toy_data(), noisy_mse, cfg_for(tmp_path / "z", steps=2, resume="never"))


# -- configs -------------------------------------------------------------------------------------
@dataclass
class NetCfg:
    channels: list[int] = field(default_factory=lambda: [32, 64])
    attention: bool = True
    kind: Literal["unet", "dit"] = "unet"


@dataclass
class RunCfg:
    name: str = "demo"
    data_root: Path = Path("data/x")
    text_encoder: Optional[str] = None
    net: NetCfg = field(default_factory=NetCfg)
    train: TrainConfig = field(default_factory=TrainConfig)


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_config_round_trip(tmp_path, suffix):
    cfg = RunCfg(name="x: y", data_root=Path("/d/e"), text_encoder="minilm",
                 net=NetCfg(channels=[8, 16, 32], attention=False, kind="dit"),
                 train=TrainConfig(lr=3e-5, betas=(0.8, 0.95), steps=7))
    path = save_config(cfg, tmp_path / f"run{suffix}")
    assert load_config(RunCfg, path) == cfg
    assert not list(tmp_path.glob(".run*"))  # no temp file left behind


def test_config_overrides_coerce_by_field_type(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("name: base\ntrain:\n  lr: 1e-4\n  steps: 100\n")  # YAML 1.1 reads 1e-4 as a string
    cfg = load_config(RunCfg, path, ["train.steps=2e3", "train.tensorboard=yes", "net.channels=[4, 8]",
                                     "name=007", "text_encoder=null", "train.betas=[0.5, 0.9]",
                                     "net.kind=dit", "data_root=/tmp/x y"])
    assert cfg.train.lr == 1e-4 and cfg.train.steps == 2000 and cfg.train.tensorboard is True
    assert cfg.net.channels == [4, 8] and cfg.name == "007" and cfg.text_encoder is None
    assert cfg.train.betas == (0.5, 0.9) and cfg.net.kind == "dit" and cfg.data_root == Path("/tmp/x y")
    assert cfg.train.out_dir == TrainConfig().out_dir  # untouched keys keep their defaults


@pytest.mark.parametrize("override, message", [
    ("train.lrr=1", r"unknown config key 'train.lrr'.*valid keys: name, data_root, .*train\.lr,"),
    ("net.channels.x=1", "unknown config key 'net.channels.x'"),
    ("train.steps=many", r"train.steps: expected int, got 'many'"),
    ("train.steps=1.5", r"train.steps: expected int"),
    ("net.kind=gan", r"net.kind: expected one of 'unet', 'dit'"),
    ("net.attention=maybe", r"net.attention: expected bool"),
    ("net.channels=[1, x]", r"net.channels\[1\]: expected int"),
    ("train.betas=[0.9]", r"train.betas: expected 2 values"),
    ("train", "not of the form key=value"),
    ("net=3", "'net' is a group"),
])
def test_config_override_errors_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        apply_overrides(RunCfg(), [override])


def test_config_file_errors(tmp_path):
    bad_key = tmp_path / "a.yaml"
    bad_key.write_text("net:\n  chanels: [1]\n")
    with pytest.raises(ConfigError, match=r"a.yaml: unknown config key 'net.chanels'; valid keys: net.channels"):
        load_config(RunCfg, bad_key)
    bad_value = tmp_path / "b.json"
    bad_value.write_text('{"train": {"grad_accum": "two"}}')
    with pytest.raises(ConfigError, match="train.grad_accum: expected int"):
        load_config(RunCfg, bad_value)
    broken = tmp_path / "c.json"
    broken.write_text("{")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_config(RunCfg, broken)
    with pytest.raises(ConfigError, match="unknown config format '.toml'"):
        save_config(RunCfg(), tmp_path / "d.toml")
    with pytest.raises(ConfigError, match="not found"):
        load_config(RunCfg, tmp_path / "missing.yaml")
