"""The checkpoint folder format: round trip, and every way a folder can be wrong."""

import json
import pickle

import pytest
import torch

from polydiff.core.checkpoint import (
    CONFIG_NAME,
    EMA_NAME,
    WEIGHTS_NAME,
    CheckpointError,
    ModelMixin,
    load_pretrained,
    read_config,
)


class TinyNet(ModelMixin):
    def __init__(self, dim: int = 4, hidden: int = 8, act: str = "silu", **extra):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(dim, hidden), torch.nn.SiLU(), torch.nn.Linear(hidden, dim))
        self.register_buffer("scale", torch.full((dim,), 2.0))


class WiderNet(TinyNet):
    def __init__(self, width: int = 16):
        super().__init__(dim=3, hidden=width)


class OtherNet(ModelMixin):
    def __init__(self, dim: int = 4):
        super().__init__()
        self.lin = torch.nn.Linear(dim, dim)


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    model = TinyNet(dim=5, hidden=7, act="gelu", note="kept")
    ema = {k: v + 1 for k, v in model.state_dict().items()}
    model.save_pretrained(tmp_path / "ck", ema_state=ema, trained_steps=12)
    return model, ema, tmp_path / "ck"


def test_round_trip_weights_config_and_ema(saved):
    model, ema, folder = saved
    meta = json.loads((folder / CONFIG_NAME).read_text())
    assert meta["config"] == {"dim": 5, "hidden": 7, "act": "gelu", "note": "kept"}
    assert meta["format_version"] == 1 and meta["trained_steps"] == 12
    loaded = TinyNet.from_pretrained(folder)
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v)
    loaded_ema = load_pretrained(folder, use_ema=True)
    for k, v in ema.items():
        assert torch.equal(loaded_ema.state_dict()[k], v)
    x = torch.randn(3, 5)
    assert torch.equal(loaded.net(x), model.net(x))


def test_subclass_records_its_own_arguments(tmp_path):
    m = WiderNet(width=9)
    assert m.config == {"width": 9}
    m.save_pretrained(tmp_path)
    assert load_pretrained(tmp_path).net[0].out_features == 9


def test_never_unpickles(saved, monkeypatch):
    _, _, folder = saved

    def refuse(*a, **k):
        raise AssertionError("something unpickled")

    monkeypatch.setattr(torch, "load", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    load_pretrained(folder)


def test_missing_folder(tmp_path):
    with pytest.raises(CheckpointError, match="folder not found"):
        load_pretrained(tmp_path / "nope")


def test_missing_config(saved):
    _, _, folder = saved
    (folder / CONFIG_NAME).unlink()
    with pytest.raises(CheckpointError, match=r"config\.json: missing"):
        load_pretrained(folder)


def test_missing_weights(saved):
    _, _, folder = saved
    (folder / WEIGHTS_NAME).unlink()
    with pytest.raises(CheckpointError, match=r"model\.safetensors: missing"):
        load_pretrained(folder)


def test_missing_ema_when_asked(tmp_path):
    TinyNet().save_pretrained(tmp_path)
    assert not (tmp_path / EMA_NAME).exists()
    with pytest.raises(CheckpointError, match=r"ema\.safetensors: missing"):
        load_pretrained(tmp_path, use_ema=True)


def test_invalid_json_and_bad_version(saved):
    _, _, folder = saved
    cfg = folder / CONFIG_NAME
    good = cfg.read_text()
    cfg.write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        read_config(folder)
    meta = json.loads(good)
    meta["format_version"] = 99
    cfg.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="format_version 99"):
        read_config(folder)


def test_wrong_class(saved):
    _, _, folder = saved
    with pytest.raises(CheckpointError, match="not a .*OtherNet"):
        OtherNet.from_pretrained(folder)


def test_unknown_class(saved):
    _, _, folder = saved
    meta = json.loads((folder / CONFIG_NAME).read_text())
    meta["class"] = "polydiff.core.checkpoint:NoSuchModel"
    (folder / CONFIG_NAME).write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="NoSuchModel"):
        load_pretrained(folder)


def test_shape_mismatch(saved):
    _, _, folder = saved
    meta = json.loads((folder / CONFIG_NAME).read_text())
    meta["config"]["hidden"] = 6
    (folder / CONFIG_NAME).write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=r"shape mismatch.*net\.0\.weight: file \(7, 5\) vs model \(6, 5\)"):
        load_pretrained(folder)


def test_pickle_in_place_of_safetensors(saved):
    model, _, folder = saved
    torch.save(model.state_dict(), folder / WEIGHTS_NAME)  # a torch zip archive
    with pytest.raises(CheckpointError, match="never unpickles"):
        load_pretrained(folder)
    (folder / WEIGHTS_NAME).write_bytes(pickle.dumps({"a": 1}))  # a raw pickle
    with pytest.raises(CheckpointError, match="never unpickles"):
        load_pretrained(folder)


def test_truncated_safetensors(saved):
    _, _, folder = saved
    path = folder / WEIGHTS_NAME
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="damaged or truncated"):
        load_pretrained(folder)


def test_config_that_does_not_fit_constructor(saved):
    _, _, folder = saved
    meta = json.loads((folder / CONFIG_NAME).read_text())
    meta["class"] = "tests.test_checkpoint:WiderNet"
    (folder / CONFIG_NAME).write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="config does not fit"):
        load_pretrained(folder)


def test_unserialisable_config_is_refused(tmp_path):
    m = TinyNet(act=torch.nn.SiLU())  # a module is not JSON
    with pytest.raises(CheckpointError, match="not JSON-serialisable"):
        m.save_pretrained(tmp_path)
    assert not (tmp_path / CONFIG_NAME).exists()


def test_safetensors_whose_header_length_starts_with_0x80_loads(tmp_path):
    """The pickle check must not refuse a valid file: here the 8-byte header length begins with 0x80."""
    from safetensors.torch import save_file

    from polydiff.core.checkpoint import read_weights

    for n in range(40, 120):  # find a tensor-name length that makes the header length 128 + 256k
        path = tmp_path / "w.safetensors"
        save_file({"w" * n: torch.zeros(1)}, str(path))
        if path.read_bytes()[0] == 0x80:
            break
    else:
        pytest.skip("no name length gave a header starting with 0x80")
    assert torch.equal(read_weights(path)["w" * n], torch.zeros(1))
