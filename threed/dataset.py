"""Captions, the held-out split and the multi-view image set of the primitive world.

Captions are drawn from templates with synonyms and paraphrases, the way people type prompts:
"a red cube", "a crimson box", "red block, side view", "back view of a scarlet cube on top of a blue
ball". `parse_prompt` maps such text back to the scene it names (the ground truth for metrics).

Held-out split: two (shape, colour) pairs per shape, chosen by a fixed rule (colour index 3*s + 1 and
3*s + 6 mod 10 for shape index s), never appear in training images, alone or in a composition. Every
shape and every colour still appears in training, so held-out prompts test composition of known
words, not unknown words.

`build_data(out_dir, images, resolution, seed)` renders `views_per_scene` random views of each random
scene and writes npz shards (uint8 images, captions, camera angles, shape/colour ids) plus a
manifest.json; each scene draws from its own generator seeded by (seed, scene index), so the data
does not depend on sharding and a rerun gives identical bytes.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import torch

from .cameras import sample_cameras, view_names
from .io import atomic_write, check_output_dir
from .primitives import COLORS, SHAPES, Scene, compose, render_scene, single

SHAPE_WORDS = {"cube": ["cube", "box", "block"], "sphere": ["sphere", "ball", "orb"],
               "cylinder": ["cylinder", "tube", "pillar"], "cone": ["cone"],
               "torus": ["torus", "donut", "ring"], "pyramid": ["pyramid"], "capsule": ["capsule", "pill"]}
COLOR_WORDS = {"red": ["red", "crimson", "scarlet"], "green": ["green", "emerald"], "blue": ["blue", "navy"],
               "yellow": ["yellow", "golden"], "orange": ["orange"], "purple": ["purple", "violet"],
               "pink": ["pink"], "cyan": ["cyan", "turquoise"], "brown": ["brown", "chocolate"],
               "gray": ["gray", "grey", "silver"]}
VIEW_WORDS = {"front": ["front view", "from the front", "front"], "side": ["side view", "from the side", "side"],
              "back": ["back view", "from behind", "rear view"],
              "overhead": ["overhead view", "top view", "from above"]}
RELATION_WORDS = {"on top of": ["on top of", "on", "stacked on", "sitting on"],
                  "next to": ["next to", "beside", "to the left of"]}
OBJECT_TEMPLATES = ["a {c} {s}", "{c} {s}", "a {s} that is {c}", "a 3d render of a {c} {s}",
                    "a {c} {s} on a white background", "a simple {c} {s}"]
VIEW_TEMPLATES = ["{obj}, {v}", "{obj}, {v}", "{v} of {obj}", "{obj} seen {v_from}"]


def _fix_articles(text: str) -> str:
    return re.sub(r"\ba (?=[aeiou])", "an ", text)


def _noun_phrase(shape: str, color: str, rng: np.random.Generator) -> str:
    t = rng.choice(["a {c} {s}", "a {c} {s}", "{c} {s}"])
    return t.format(c=rng.choice(COLOR_WORDS[color]), s=rng.choice(SHAPE_WORDS[shape]))


def caption(scene: Scene, view: str | None, rng: np.random.Generator) -> str:
    """A random paraphrase naming the scene and, when `view` is given, the view."""
    if len(scene.parts) == 1:
        p = scene.parts[0]
        obj = rng.choice(OBJECT_TEMPLATES).format(c=rng.choice(COLOR_WORDS[p.color]),
                                                  s=rng.choice(SHAPE_WORDS[p.shape]))
    else:
        top, bottom = scene.parts
        rel = rng.choice(RELATION_WORDS[scene.relation])
        obj = f"{_noun_phrase(top.shape, top.color, rng)} {rel} {_noun_phrase(bottom.shape, bottom.color, rng)}"
    if view is None:
        return _fix_articles(obj)
    words = VIEW_WORDS[view]
    v = rng.choice([w for w in words if "view" in w] or words)
    v_from = rng.choice([w for w in words if w.startswith("from")] or [v])
    return _fix_articles(rng.choice(VIEW_TEMPLATES).format(obj=obj, v=v, v_from=v_from))


def _lookup(words: dict) -> list[tuple[str, str]]:
    """(synonym, canonical) sorted longest first so 'traffic cone' wins over 'cone'."""
    pairs = [(w, k) for k, ws in words.items() for w in ws]
    return sorted(pairs, key=lambda p: -len(p[0]))


def parse_prompt(prompt: str) -> Scene:
    """The scene a prompt names: one or two (colour, shape) pairs, in reading order, and the relation."""
    text = " " + re.sub(r"[^a-z ]", " ", prompt.lower()) + " "
    found = []
    for syn, shape in _lookup(SHAPE_WORDS):
        for m in re.finditer(rf" {syn} ", text):
            found.append((m.start(), shape))
    found.sort()
    pairs = []
    for pos, shape in found:
        before = text[:pos + 1]
        color = None
        best = -1
        for syn, canon in _lookup(COLOR_WORDS):
            i = before.rfind(f" {syn} ")
            if i > best:
                best, color = i, canon
        after = text[pos:]
        if color is None or (pairs and best < pairs[-1][2]):           # "a box that is red"
            for syn, canon in _lookup(COLOR_WORDS):
                if f" {syn} " in after[:40]:
                    color = canon
                    break
        if color is None:
            raise ValueError(f"no colour found for the {shape} in {prompt!r}; say e.g. 'a red {shape}'")
        pairs.append((shape, color, pos))
    if not pairs:
        raise ValueError(f"no shape found in {prompt!r}; name one of {', '.join(SHAPES)}")
    if len(pairs) == 1:
        return single(pairs[0][0], pairs[0][1])
    relation = "on top of"
    for syn, canon in _lookup(RELATION_WORDS):
        if f" {syn} " in text:
            relation = canon
            break
    return compose(pairs[0][:2], pairs[1][:2], relation)


# -- held-out split -------------------------------------------------------------------------------------
def heldout_combos() -> set[tuple[str, str]]:
    n = len(COLORS)
    return {(s, COLORS[(3 * i + k) % n]) for i, s in enumerate(SHAPES) for k in (1, 6)}


def train_combos() -> list[tuple[str, str]]:
    held = heldout_combos()
    return [(s, c) for s in SHAPES for c in COLORS if (s, c) not in held]


def random_scene(rng: np.random.Generator, combos, p_composition: float = 0.3) -> Scene:
    if rng.random() >= p_composition:
        return single(*combos[rng.integers(len(combos))])
    a, b = (combos[i] for i in rng.integers(len(combos), size=2))
    return compose(a, b, rng.choice(["on top of", "next to"]))


# -- building the image set ------------------------------------------------------------------------------
def _save_npz(path: Path, **arrays) -> None:
    def write(tmp):
        with open(tmp, "wb") as f:              # a file object: np.savez must not append ".npz"
            np.savez_compressed(f, **arrays)
    atomic_write(path, write)


def build_data(out_dir, images: int, resolution: int = 64, seed: int = 0, split: str = "train",
               views_per_scene: int = 4, shard_size: int = 4096, p_composition: float = 0.3,
               supersample: int = 2, progress_bar=None) -> list[Path]:
    """Render `images` captioned views into npz shards under `out_dir`; returns the written files."""
    if images <= 0:
        raise ValueError(f"images must be positive, got {images}")
    if resolution < 8:
        raise ValueError(f"resolution must be at least 8, got {resolution}")
    if split not in ("train", "heldout"):
        raise ValueError(f"split must be 'train' or 'heldout', got {split!r}")
    out_dir = check_output_dir(out_dir)
    combos = train_combos() if split == "train" else sorted(heldout_combos())
    n_scenes = -(-images // views_per_scene)
    bar = progress_bar(range(n_scenes)) if progress_bar else range(n_scenes)
    buf: dict[str, list] = {k: [] for k in ("images", "captions", "elevation", "azimuth", "distance", "fov",
                                            "shapes", "colors")}
    written, shard = [], 0

    def flush():
        nonlocal shard
        if not buf["images"]:
            return
        path = out_dir / f"{split}-{shard:05d}.npz"
        _save_npz(path, images=np.stack(buf["images"]), captions=np.array(buf["captions"], dtype=np.str_),
                         **{k: np.array(buf[k]) for k in ("elevation", "azimuth", "distance", "fov",
                                                          "shapes", "colors")})
        written.append(path)
        shard += 1
        for v in buf.values():
            v.clear()

    count = 0
    for i in bar:
        rng = np.random.default_rng([seed, i])
        gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
        scene = random_scene(rng, combos, p_composition)
        n_views = min(views_per_scene, images - count)
        cams = sample_cameras(n_views, elevation_range=(-10.0, 70.0), distance_range=(1.8, 2.2),
                              fov_range=(45.0, 50.0), generator=gen)
        rgb = render_scene(scene, cams, resolution, supersample=supersample)["rgb"]
        views = view_names(cams.elevation, cams.azimuth)
        ids_s = [SHAPES.index(p.shape) for p in scene.parts] + [-1] * (2 - len(scene.parts))
        ids_c = [COLORS.index(p.color) for p in scene.parts] + [-1] * (2 - len(scene.parts))
        for v in range(n_views):
            buf["images"].append((rgb[v].clamp(0, 1).numpy() * 255 + 0.5).astype(np.uint8))
            buf["captions"].append(caption(scene, views[v], rng))
            for k in ("elevation", "azimuth", "distance", "fov"):
                buf[k].append(float(getattr(cams, k)[v]))
            buf["shapes"].append(ids_s)
            buf["colors"].append(ids_c)
            count += 1
            if len(buf["images"]) >= shard_size:
                flush()
    flush()
    manifest = {"images": count, "resolution": resolution, "seed": seed, "split": split,
                "views_per_scene": views_per_scene, "shapes": list(SHAPES), "colors": list(COLORS),
                "heldout": sorted(map(list, heldout_combos())), "shards": [p.name for p in written]}
    atomic_write(out_dir / f"{split}-manifest.json", lambda tmp: tmp.write_text(json.dumps(manifest, indent=1)))
    return written + [out_dir / f"{split}-manifest.json"]
