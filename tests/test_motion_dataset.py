"""HumanML3D-style folder loader: items, crops, sub-span captions, clear errors on bad folders."""

import numpy as np
import pytest
import torch
from polydiff.motion import dataset as ds


def make_folder(root, lengths=(60, 120, 30), dim=263):
    (root / "new_joint_vecs").mkdir(parents=True)
    (root / "texts").mkdir()
    names = []
    for k, n in enumerate(lengths):
        name = f"{k:06d}"
        names.append(name)
        # channel 0 counts frames so crops can be checked against the source
        x = np.zeros((n, dim), np.float32)
        x[:, 0] = np.arange(n)
        x[:, 1] = k
        np.save(root / "new_joint_vecs" / f"{name}.npy", x)
        (root / "texts" / f"{name}.txt").write_text(
            f"a person walks number {k}#a/DET person/NOUN#0.0#0.0\n"
            f"someone strolls number {k}#someone/PRON#0.0#0.0\n"
        )
    (root / "train.txt").write_text("\n".join(names) + "\n")
    np.save(root / "Mean.npy", np.zeros(dim, np.float32))
    np.save(root / "Std.npy", np.ones(dim, np.float32))
    return names


def test_items_crops_and_collate(tmp_path):
    make_folder(tmp_path)
    d = ds.MotionTextDataset(tmp_path, "train", max_frames=100, min_frames=40)
    assert len(d) == 1  # 30 frames too short, 120 frames too long for max 100 (T2M rule), 60 kept
    for _ in range(20):
        x, n, cap = d[0]
        assert x.shape == (n, 263) and n % 4 == 0 and n in (56, 60)
        start = int(x[0, 0])
        np.testing.assert_array_equal(x[:, 0].numpy(), np.arange(start, start + n))
        assert cap in ("a person walks number 0", "someone strolls number 0")
    d2 = ds.MotionTextDataset(tmp_path, "train", max_frames=196, min_frames=20)
    assert len(d2) == 3
    feats, lengths, mask, caps = ds.collate([d2[i] for i in range(3)])
    assert feats.shape[0] == 3 and mask.sum(1).tolist() == lengths.tolist()
    assert torch.all(feats[~mask] == 0) and len(caps) == 3


def test_normalisation_and_sub_span_captions(tmp_path):
    make_folder(tmp_path, lengths=(100,))
    np.save(tmp_path / "Mean.npy", np.full(263, 2.0, np.float32))
    np.save(tmp_path / "Std.npy", np.full(263, 4.0, np.float32))
    (tmp_path / "texts" / "000000.txt").write_text("a person jumps#a/DET#1.0#3.5\n")
    d = ds.MotionTextDataset(tmp_path, "train", min_frames=20, random_crop=False)
    x, n, cap = d[0]
    assert cap == "a person jumps" and n == 50  # 1.0 s .. 3.5 s at 20 fps
    np.testing.assert_allclose(x[:, 0].numpy(), (np.arange(20, 70) - 2.0) / 4.0)


def test_missing_folder_and_files(tmp_path):
    with pytest.raises(ds.DatasetError, match="does not exist.*build-data"):
        ds.MotionTextDataset(tmp_path / "nope")
    (tmp_path / "texts").mkdir()
    with pytest.raises(ds.DatasetError, match="missing new_joint_vecs, train.txt, Mean.npy, Std.npy"):
        ds.MotionTextDataset(tmp_path)
    with pytest.raises(ds.DatasetError, match="split must be one of"):
        ds.MotionTextDataset(tmp_path, split="dev")


@pytest.mark.parametrize(
    "line, message",
    [
        ("a person walks#a/DET#0.0", "4 fields"),
        ("a person walks#a/DET#zero#0.0", "must be numbers"),
        ("#a/DET#0.0#0.0", "empty caption"),
        ("a person walks#a/DET#3.0#1.0", "bad time span"),
    ],
)
def test_malformed_caption_line_names_file_and_line(tmp_path, line, message):
    make_folder(tmp_path, lengths=(60,))
    (tmp_path / "texts" / "000000.txt").write_text("fine caption#x#0.0#0.0\n" + line + "\n")
    with pytest.raises(ds.DatasetError, match=message) as err:
        ds.MotionTextDataset(tmp_path, min_frames=20)
    assert "000000.txt:2" in str(err.value)


def test_wrong_feature_width_and_empty_split(tmp_path):
    make_folder(tmp_path, lengths=(60,), dim=251)
    np.save(tmp_path / "Mean.npy", np.zeros(263, np.float32))
    np.save(tmp_path / "Std.npy", np.ones(263, np.float32))
    with pytest.raises(ds.DatasetError, match=r"expected \(frames, 263\)"):
        ds.MotionTextDataset(tmp_path, min_frames=20)
    np.save(tmp_path / "Mean.npy", np.zeros(251, np.float32))  # KIT-ML width is fine
    np.save(tmp_path / "Std.npy", np.ones(251, np.float32))
    assert ds.MotionTextDataset(tmp_path, min_frames=20).dim == 251
    with pytest.raises(ds.DatasetError, match="none is usable"):
        ds.MotionTextDataset(tmp_path, min_frames=80)


def test_nan_span_means_whole_clip():
    cap = ds.parse_caption_line("a person waves#a/DET person/NOUN wave/VERB#nan#nan", "x.txt:1")
    assert (cap.start, cap.end, cap.tokens[-1]) == (0.0, 0.0, "wave/VERB")
