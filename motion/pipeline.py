"""Text-to-motion pipelines: generate, in-between, regenerate a body part, chain long sequences.

    from polydiff import motion
    m = motion.generate("a person walks forward then waves", seconds=6, num_samples=2, seed=0)
    m.save("walk.bvh")                       # walk_0.bvh, walk_1.bvh; the format follows the extension
    m = motion.inbetween("a person jumps", prefix="a.npz", suffix="b.bvh", seconds=5)
    m = motion.regenerate("a person waves the right hand", source="walk.npz", part="upper")
    m = motion.generate_long([("a person walks forward", 20), ("someone jogs in a circle", 30), ...])

Sampling is the core's: one `sample` call on a Karras grid, classifier-free guidance through
`cfg_denoiser`, and every edit through `masked_sample` (the known part of the motion, noised to each
sigma, replaces the sampler's state there, and is pasted back exactly at the end). What is known is a
mask over the model's (B, 263, T) normalised features: frames for in-betweening and chaining, feature
channels of the kept joints for body-part regeneration.

Long sequences are windows of at most `MAX_FRAMES`: each window's first `transition` seconds are the
previous window's last frames (known), the rest is new motion for its prompt, so the sampler's memory
does not grow with the length; only the output features (263 floats a frame) accumulate. Joints come
from the concatenated features in one recovery, so the root path runs on across the joins.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from polydiff.core.checkpoint import load_pretrained
from polydiff.core.guidance import cfg_denoiser, masked_sample
from polydiff.core.runtime import generators, randn, resolve_device
from polydiff.core.samplers import METHODS, sample
from polydiff.core.schedules import karras_sigmas
from polydiff.core.text import TextEncoder

from . import features as ft
from . import skeleton as sk
from .export import FORMATS, MotionFileError, find_ffmpeg, load_motion, save_motion
from .model import MotionDenoiser

CHECKPOINTS = Path(__file__).parent / "checkpoints"
DEFAULT_CHECKPOINT = "t2m-small"
MAX_FRAMES = 196          # the longest window the model was trained on (9.8 s at 20 fps)
SIGMA_MIN, SIGMA_MAX = 0.002, 80.0


class MotionError(ValueError):
    """A request the pipeline cannot run (empty prompt, bad duration, bad edit); the message says the fix."""


# ---------------------------------------------------------------- model and text encoder (cached)
_MODELS: dict = {}
_ENCODERS: dict = {}


def default_checkpoint() -> Path:
    path = CHECKPOINTS / DEFAULT_CHECKPOINT
    if not (path / "config.json").is_file():
        raise MotionError(f"no motion checkpoint is shipped at {path}; train one with `polydiff train motion "
                          "--config motion/configs/t2m_small.yaml` and pass its folder as --checkpoint DIR")
    return path


def load_model(checkpoint=None, device="cpu") -> MotionDenoiser:
    """The denoiser of a checkpoint folder (default: the shipped one), cached per (folder, device)."""
    if isinstance(checkpoint, MotionDenoiser):
        return checkpoint
    path = Path(checkpoint) if checkpoint is not None else default_checkpoint()
    device = resolve_device(device)
    key = (str(path.resolve()), str(device))
    if key not in _MODELS:
        _MODELS[key] = load_pretrained(path, cls=MotionDenoiser, device=device).requires_grad_(False)
    return _MODELS[key]


def text_encoder(model: MotionDenoiser) -> TextEncoder:
    key = model.text_encoder
    if key not in _ENCODERS:
        _ENCODERS[key] = TextEncoder(key, max_length=model.max_text_tokens)
    return _ENCODERS[key]


# ---------------------------------------------------------------- the result
@dataclass
class Motion:
    """features (N, T, 263) raw HumanML3D features; joints (N, T, 22, 3) metres; fps; one prompt per sample
    (or the segment list of a long sequence)."""

    features: np.ndarray
    joints: np.ndarray
    fps: float
    prompts: list = field(default_factory=list)
    export_fps: float | None = None      # the frame rate `save` writes (default: fps)

    def __len__(self) -> int:
        return len(self.joints)

    @property
    def seconds(self) -> float:
        return self.joints.shape[1] / self.fps

    def save(self, path, *, foot_lock: bool = True, fps: float | None = None) -> list[Path]:
        """Write every sample to `path` (one sample) or `stem_{i}.ext` (several); format by extension.
        foot_lock: remove foot skating first (every format; the root path is kept).
        fps: resample the joints in time to this frame rate (default: export_fps, else the motion's own)."""
        path = Path(path)
        check_output(path)
        joints, rate = self.joints, self.fps
        fps = fps if fps is not None else self.export_fps
        if fps is not None and fps != self.fps:
            joints, rate = resample(joints, self.fps, check_fps(fps)), float(fps)
        paths = [path] if len(self) == 1 else [path.with_name(f"{path.stem}_{i}{path.suffix}") for i in range(len(self))]
        out = []
        own_lock = foot_lock and path.suffix.lower() in (".npz", ".gif", ".mp4")   # BVH / glTF lock inside
        for i, p in enumerate(paths):
            j = foot_lock_joints(joints[i], rate) if own_lock else joints[i]
            # the features match the joints only when neither the rate nor the feet changed
            feats = self.features[i] if rate == self.fps and not own_lock else None
            title = self.prompts[i] if i < len(self.prompts) and isinstance(self.prompts[i], str) else None
            out.append(save_motion(p, j, fps=rate, features=feats, clean_feet=foot_lock, title=title))
        return out


def foot_lock_joints(joints: np.ndarray, fps: float) -> np.ndarray:
    from .footlock import foot_lock

    return foot_lock(joints, fps=fps)


def check_output(path) -> Path:
    path = Path(path)
    if path.suffix.lower() not in FORMATS:
        raise MotionError(f"unknown output extension {path.suffix or '(none)'!r} in {path.name!r}; "
                          f"use one of {', '.join(FORMATS)}")
    if path.suffix.lower() == ".mp4" and find_ffmpeg() is None:
        raise MotionError(f"{path.name}: writing .mp4 needs ffmpeg (`pip install imageio-ffmpeg` or "
                          "`apt-get install ffmpeg`); use .gif for a preview without it")
    return path


def check_fps(fps) -> float:
    if fps is None or not (isinstance(fps, (int, float)) and math.isfinite(fps) and fps > 0):
        raise MotionError(f"fps must be a positive number, got {fps!r}")
    return float(fps)


def resample(joints: np.ndarray, fps_in: float, fps_out: float) -> np.ndarray:
    """Linear resampling in time of (N, T, 22, 3) joints; the duration T / fps_in is kept."""
    n, t = joints.shape[:2]
    t_out = max(1, round(t * fps_out / fps_in))
    src = np.arange(t) / fps_in
    dst = np.minimum(np.arange(t_out) / fps_out, src[-1])
    flat = joints.reshape(n, t, -1)
    out = np.stack([np.stack([np.interp(dst, src, flat[k, :, c]) for c in range(flat.shape[2])], -1)
                    for k in range(n)])
    return out.reshape(n, t_out, *joints.shape[2:])


# ---------------------------------------------------------------- sampling
@dataclass
class SamplerOptions:
    sampler: str = "dpmpp_2m"
    steps: int = 20
    cfg: float = 4.0

    def check(self):
        if self.sampler not in METHODS:
            raise MotionError(f"unknown sampler {self.sampler!r}; use one of {', '.join(METHODS)}")
        if not isinstance(self.steps, int) or self.steps < 1:
            raise MotionError(f"steps must be a positive integer, got {self.steps!r}")
        if not math.isfinite(self.cfg) or self.cfg < 0:
            raise MotionError(f"cfg must be a number >= 0 (1 = no guidance), got {self.cfg!r}")
        return self


def _check_prompt(prompt) -> str:
    if not isinstance(prompt, str) or not prompt.strip():
        raise MotionError("the prompt is empty; describe the motion, e.g. \"a person walks forward then waves\"")
    return prompt.strip()


def _frames(seconds, fps: float) -> int:
    if not isinstance(seconds, (int, float)) or not math.isfinite(seconds) or seconds <= 0:
        raise MotionError(f"the duration must be a positive number of seconds, got {seconds!r}")
    return max(1, round(seconds * fps))


def guided_denoiser(model: MotionDenoiser, prompts: list[str], cfg: float):
    """D(x, sigma) for `prompts` (one per sample) with classifier-free guidance `cfg`."""
    cond = text_encoder(model)(prompts).to(model.mean.device)
    length = cond.tokens.shape[1]
    return cfg_denoiser(model, cfg, model.condition_kwargs(cond, length), model.null_kwargs(len(prompts), length))


def sample_window(model: MotionDenoiser, prompts: list[str], frames: int, gens, opts: SamplerOptions,
                  known: torch.Tensor | None = None, mask: torch.Tensor | None = None,
                  frame_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Normalised features (N, C, frames); `known` (N, C, frames) is kept where `mask` is True;
    frame_mask (N, frames) marks the real frames of samples shorter than the window."""
    device = model.mean.device
    den = guided_denoiser(model, prompts, opts.cfg)
    sigmas = karras_sigmas(opts.steps, SIGMA_MIN, SIGMA_MAX).to(device)
    x = randn((len(prompts), model.n_feats, frames), gens, device=device) * sigmas[0]
    cond = {} if frame_mask is None else {"mask": frame_mask.to(device)}
    with torch.no_grad():
        if known is None:
            return sample(den, x, sigmas, method=opts.sampler, generator=gens, progress=False, cond=cond)
        return masked_sample(den, x, sigmas, known.to(device), mask.to(device), method=opts.sampler,
                             generator=gens, progress=False, cond=cond)


def _result(model: MotionDenoiser, x: torch.Tensor, prompts, fps: float | None, paste=None) -> Motion:
    """Normalised (N, C, T) -> Motion; `fps` (if given) is the frame rate `save` resamples to.
    paste: (known raw features (T, C), mask broadcastable to (N, C, T)): the known values are put back
    bit for bit (the normalise / denormalise round trip alone is only exact to float rounding)."""
    feats = model.denormalize(x.transpose(1, 2)).double().cpu()          # (N, T, C)
    if paste is not None:
        known, mask = paste
        mask = mask.expand(x.shape).transpose(1, 2).cpu()
        feats = torch.where(mask, torch.from_numpy(known).double()[None], feats)
    joints = ft.features_to_joints(feats).numpy()
    return Motion(feats.float().numpy(), joints, float(model.fps), list(prompts),
                  export_fps=None if fps is None else check_fps(fps))


def _setup(checkpoint, device, seed, num_samples, opts):
    model = load_model(checkpoint, device)
    if not isinstance(num_samples, int) or num_samples < 1:
        raise MotionError(f"num_samples must be a positive integer, got {num_samples!r}")
    return model, generators(seed, num_samples, model.mean.device), opts.check()


def generate(prompt: str, seconds: float = 6.0, *, num_samples: int = 1, seed: int = 0, sampler: str = "dpmpp_2m",
             steps: int = 20, cfg: float = 4.0, fps: float | None = None, checkpoint=None, device="cpu") -> Motion:
    """Motion for `prompt` lasting `seconds` (chained windows beyond 9.8 s). Returns a `Motion`."""
    prompt = _check_prompt(prompt)
    opts = SamplerOptions(sampler, steps, cfg)
    model, gens, opts = _setup(checkpoint, device, seed, num_samples, opts)
    frames = _frames(seconds, model.fps)
    if frames > MAX_FRAMES:
        return generate_long([(prompt, seconds)], num_samples=num_samples, seed=seed, sampler=sampler, steps=steps,
                             cfg=cfg, fps=fps, checkpoint=model)
    x = sample_window(model, [prompt] * num_samples, frames, gens, opts)
    return _result(model, x, [prompt] * num_samples, fps)


def generate_batch(prompts: list[str], seconds: float | list[float] = 6.0, *, seed: int = 0,
                   sampler: str = "dpmpp_2m", steps: int = 20, cfg: float = 4.0, fps: float | None = None,
                   checkpoint=None, device="cpu") -> list[Motion]:
    """One motion per prompt, drawn in one batch; `seconds` is one duration or one per prompt (at most
    9.8 s; shorter motions are padded and masked in the batch). Sample i uses the generator (seed, i)."""
    prompts = [_check_prompt(p) for p in prompts]
    model, gens, opts = _setup(checkpoint, device, seed, len(prompts), SamplerOptions(sampler, steps, cfg))
    durations = list(seconds) if isinstance(seconds, (list, tuple)) else [seconds] * len(prompts)
    if len(durations) != len(prompts):
        raise MotionError(f"got {len(durations)} durations for {len(prompts)} prompts")
    lengths = [_frames(s, model.fps) for s in durations]
    if max(lengths) > MAX_FRAMES:
        raise MotionError(f"generate_batch draws one window of at most {MAX_FRAMES / model.fps:g} s; "
                          "use generate for longer motions")
    frames = max(lengths)
    valid = None
    if min(lengths) < frames:
        valid = torch.arange(frames)[None] < torch.tensor(lengths)[:, None]       # (N, T)
    x = sample_window(model, prompts, frames, gens, opts, frame_mask=valid)
    return [_result(model, x[i:i + 1, :, :n], [p], fps) for i, (p, n) in enumerate(zip(prompts, lengths))]


# ---------------------------------------------------------------- editing
def source_features(source, model: MotionDenoiser) -> np.ndarray:
    """Raw features (T, 263) of a motion file (.npz / .npy / .bvh), a joints array (T, 22, 3), features
    (T, 263) or a one-sample `Motion`, at the model's frame rate."""
    if isinstance(source, Motion):
        if len(source) != 1:
            raise MotionError(f"an edit source must hold one motion, this one holds {len(source)}")
        if source.features.shape[1] == source.joints.shape[1] and source.fps == model.fps:
            return np.asarray(source.features[0], dtype=np.float32)
        source, fps = source.joints[0], source.fps
    elif isinstance(source, (str, Path)):
        path = Path(source)
        try:
            if path.suffix.lower() == ".npz" and path.is_file():
                with np.load(path, allow_pickle=False) as z:
                    fps = float(z["fps"]) if "fps" in z else model.fps
                    if "features" in z and z["features"].ndim == 2 and fps == model.fps:
                        return np.asarray(z["features"], dtype=np.float32)
            source, fps = load_motion(path)
        except MotionFileError as err:
            raise MotionError(str(err)) from None
        except (OSError, ValueError) as err:
            raise MotionError(f"cannot read motion file {path}: {err}") from None
    else:
        fps = model.fps
    a = np.asarray(source, dtype=np.float64)
    if a.ndim == 2 and a.shape[1] == ft.FEATURE_DIM:
        return a.astype(np.float32)
    if a.ndim != 3 or a.shape[1:] != (sk.NUM_JOINTS, 3) or len(a) < 2 or not np.isfinite(a).all():
        raise MotionError(f"an edit source must be joints (T >= 2, 22, 3) or features (T, 263); got shape {a.shape}")
    if fps != model.fps:
        a = resample(a[None], fps, model.fps)[0]
    return ft.joints_to_features(a).astype(np.float32)


def _edit(model, prompt, known_raw: np.ndarray, mask: torch.Tensor, gens, opts, num_samples, fps) -> Motion:
    """Sample with `known_raw` (T, 263) raw features kept where mask (1 or N, C or 1, T or 1) is True."""
    known = model.normalize(torch.from_numpy(known_raw).to(model.mean))       # (T, C)
    known = known.T[None].expand(num_samples, -1, -1).contiguous()            # (N, C, T)
    x = sample_window(model, [prompt] * num_samples, known.shape[-1], gens, opts, known, mask)
    return _result(model, x, [prompt] * num_samples, fps, paste=(known_raw, mask))


def inbetween(prompt: str, *, prefix=None, suffix=None, keyframes=None, keyframe_frames=None,
              seconds: float | None = None, num_samples: int = 1, seed: int = 0, sampler: str = "dpmpp_2m",
              steps: int = 20, cfg: float = 4.0, fps: float | None = None, checkpoint=None, device="cpu") -> Motion:
    """Fill in motion for `prompt` around what is known: `prefix` (its frames start the result), `suffix`
    (its frames end it) and/or `keyframes` (a motion whose frames `keyframe_frames` are kept, at the
    model's frame rate; the result is as long as it unless `seconds` says otherwise). Sources are motion
    files, joints (T, 22, 3), features (T, 263) or a `Motion`. The known frames' features are kept exactly."""
    prompt = _check_prompt(prompt)
    model, gens, opts = _setup(checkpoint, device, seed, num_samples, SamplerOptions(sampler, steps, cfg))
    if prefix is None and suffix is None and keyframes is None:
        raise MotionError("in-betweening needs a prefix, a suffix or keyframes to keep")
    parts = {k: source_features(v, model) for k, v in (("prefix", prefix), ("suffix", suffix), ("keys", keyframes))
             if v is not None}
    if seconds is not None:
        frames = _frames(seconds, model.fps)
    elif "keys" in parts:
        frames = len(parts["keys"])
    else:
        raise MotionError("give `seconds` (the length of the result) for prefix / suffix in-betweening")
    if frames > MAX_FRAMES:
        raise MotionError(f"in-betweening works on one window of at most {MAX_FRAMES / model.fps:g} s; "
                          f"got {frames / model.fps:g} s")
    known = np.zeros((frames, model.n_feats), dtype=np.float32)
    keep = np.zeros(frames, dtype=bool)
    if "keys" in parts:
        if keyframe_frames is None:
            raise MotionError("keyframes need keyframe_frames: the frame indices to keep")
        idx = np.asarray(list(keyframe_frames), dtype=np.int64)
        if idx.size == 0 or idx.min() < 0 or idx.max() >= min(frames, len(parts["keys"])):
            raise MotionError(f"keyframe_frames must lie in 0..{min(frames, len(parts['keys'])) - 1}, got {idx.tolist()}")
        known[idx], keep[idx] = parts["keys"][idx], True
    n_pre = len(parts.get("prefix", ()))
    n_suf = len(parts.get("suffix", ()))
    if n_pre + n_suf >= frames:
        raise MotionError(f"prefix ({n_pre} frames) and suffix ({n_suf}) leave nothing to fill in a "
                          f"{frames}-frame result; ask for more seconds")
    if n_pre:
        known[:n_pre], keep[:n_pre] = parts["prefix"], True
    if n_suf:
        known[frames - n_suf:], keep[frames - n_suf:] = parts["suffix"], True
    mask = torch.from_numpy(keep)[None, None, :]                             # (1, 1, T): every channel
    return _edit(model, prompt, known, mask, gens, opts, num_samples, fps)


BODY_PARTS = {
    "upper": ("spine1", "spine2", "spine3", "neck", "head", "left_collar", "right_collar", "left_shoulder",
              "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist"),
    "lower": ("pelvis", "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle",
              "left_foot", "right_foot"),
    "left_arm": ("left_collar", "left_shoulder", "left_elbow", "left_wrist"),
    "right_arm": ("right_collar", "right_shoulder", "right_elbow", "right_wrist"),
}
BODY_PARTS["arms"] = BODY_PARTS["left_arm"] + BODY_PARTS["right_arm"]
BODY_PARTS["legs"] = BODY_PARTS["lower"]
_CONTACT_JOINTS = (7, 10, 8, 11)   # the joints of the four foot-contact channels, in order


def part_channels(part: str) -> np.ndarray:
    """Bool (263,): the feature channels that belong to the joints of `part`. The root channels (yaw and
    linear velocity, height) belong to the pelvis, each foot-contact channel to its ankle / toe."""
    if part not in BODY_PARTS:
        raise MotionError(f"unknown body part {part!r}; use one of {', '.join(sorted(BODY_PARTS))}")
    sel = np.zeros(ft.FEATURE_DIM, dtype=bool)
    for name in BODY_PARTS[part]:
        j = sk.JOINT_INDEX[name]
        if j == 0:
            sel[0:4] = True
        else:
            sel[ft.RIC.start + 3 * (j - 1): ft.RIC.start + 3 * j] = True
            sel[ft.ROT.start + 6 * (j - 1): ft.ROT.start + 6 * j] = True
        sel[ft.LOCAL_VEL.start + 3 * j: ft.LOCAL_VEL.start + 3 * (j + 1)] = True
        for c, cj in enumerate(_CONTACT_JOINTS):
            if cj == j:
                sel[ft.FOOT_CONTACT.start + c] = True
    return sel


def regenerate(prompt: str, source, part: str = "upper", *, num_samples: int = 1, seed: int = 0,
               sampler: str = "dpmpp_2m", steps: int = 20, cfg: float = 4.0, fps: float | None = None,
               checkpoint=None, device="cpu") -> Motion:
    """New motion of body `part` for `prompt`; every other channel of `source` is kept exactly
    (e.g. part="upper": a new upper body over the source's legs and root path)."""
    prompt = _check_prompt(prompt)
    model, gens, opts = _setup(checkpoint, device, seed, num_samples, SamplerOptions(sampler, steps, cfg))
    redo = part_channels(part)
    known = source_features(source, model)
    if len(known) > MAX_FRAMES:
        raise MotionError(f"body-part regeneration works on at most {MAX_FRAMES / model.fps:g} s; the source "
                          f"has {len(known) / model.fps:g} s")
    mask = torch.from_numpy(~redo)[None, :, None]                            # (1, C, 1): kept channels
    return _edit(model, prompt, known, mask, gens, opts, num_samples, fps)


# ---------------------------------------------------------------- long sequences
def generate_long(segments, *, transition: float = 1.0, num_samples: int = 1, seed: int = 0,
                  sampler: str = "dpmpp_2m", steps: int = 20, cfg: float = 4.0, fps: float | None = None,
                  checkpoint=None, device="cpu") -> Motion:
    """A list of (prompt, seconds) chained into one motion of the summed length. Each window starts with
    the last `transition` seconds of the one before it (kept exactly, through the mask wrapper), so the
    motion continues smoothly; windows are at most 9.8 s, whatever the total length."""
    segs = list(segments) if not isinstance(segments, (str, bytes)) else None
    if not segs or not all(isinstance(s, (tuple, list)) and len(s) == 2 for s in segs):
        raise MotionError("segments must be a non-empty list of (prompt, seconds) pairs")
    model, gens, opts = _setup(checkpoint, device, seed, num_samples, SamplerOptions(sampler, steps, cfg))
    plan = [(_check_prompt(p), _frames(s, model.fps)) for p, s in segs]
    overlap = _frames(transition, model.fps) if transition else 0
    if overlap >= MAX_FRAMES // 2:
        raise MotionError(f"transition must be under {MAX_FRAMES / 2 / model.fps:g} s, got {transition} s")
    chunks, tail = [], None                                   # tail: (N, C, k) normalised
    for k_seg, (prompt, frames) in enumerate(plan):
        left = frames
        while left > 0:
            k = 0 if tail is None else tail.shape[-1]
            new = min(left, MAX_FRAMES - k)
            if tail is None:
                x = sample_window(model, [prompt] * num_samples, new, gens, opts)
            else:
                known = torch.cat([tail, tail.new_zeros(num_samples, model.n_feats, new)], dim=-1)
                mask = torch.zeros(1, 1, k + new, dtype=torch.bool)
                mask[..., :k] = True
                x = sample_window(model, [prompt] * num_samples, k + new, gens, opts, known, mask)
            chunks.append(x[..., k:].cpu())
            tail = x[..., -overlap:] if overlap else None
            left -= new
    x = torch.cat(chunks, dim=-1)                                            # (N, C, sum of frames)
    return _result(model, x, [list(segs)] * num_samples, fps)
