"""Captions for procedural clips: templates with many paraphrases, some held out for evaluation.

Every action label (procedural.py) maps to verb phrases in the third person ("walks forward slowly").
Each phrase template is marked `train` or `heldout`; training clips only ever see `train` templates, so
a caption built from `heldout` templates ("someone strolls ahead at a leisurely pace") is a paraphrase
the model has never read. Sequences join phrases with connectives ("..., then ...").
"""

from __future__ import annotations

SUBJECTS = ("a person", "someone", "a man", "a woman", "the person", "somebody", "a figure")
THEN = (", then ", " and then ", ", and after that ", " and afterwards ", ", and next ")

# action -> list of (template, split); {adv} speed adverb, {side} left/right, {n} count words
_T = {
    "walk": [
        ("walks forward{adv}", "train"),
        ("walks straight ahead{adv}", "train"),
        ("takes a few steps forward{adv}", "train"),
        ("moves forward on foot{adv}", "train"),
        ("walks ahead{adv}", "train"),
        ("strolls ahead{adv}", "heldout"),
        ("paces forward{adv}", "heldout"),
    ],
    "jog": [
        ("jogs forward", "train"),
        ("jogs ahead", "train"),
        ("does a light jog forward", "train"),
        ("trots forward at a steady pace", "heldout"),
    ],
    "run": [
        ("runs forward", "train"),
        ("sprints ahead", "train"),
        ("runs straight ahead fast", "train"),
        ("dashes forward", "heldout"),
    ],
    "walk_curve": [
        ("walks forward while turning {side}{adv}", "train"),
        ("walks in a curve to the {side}{adv}", "train"),
        ("walks along an arc bending {side}", "train"),
        ("curves {side} while walking{adv}", "heldout"),
    ],
    "walk_circle": [
        ("walks in a circle", "train"),
        ("walks around in a full circle to the {side}", "train"),
        ("walks a full loop{adv}", "train"),
        ("strolls around in a circle", "heldout"),
    ],
    "run_curve": [
        ("runs in a curve to the {side}", "train"),
        ("runs forward while turning {side}", "train"),
        ("sprints along an arc to the {side}", "heldout"),
    ],
    "run_circle": [
        ("runs in a circle", "train"),
        ("runs around in a full circle to the {side}", "train"),
        ("dashes around in a loop", "heldout"),
    ],
    "walk_backward": [
        ("walks backwards", "train"),
        ("steps backward", "train"),
        ("moves backwards", "train"),
        ("walks in reverse", "train"),
        ("backs up a few steps", "heldout"),
        ("retreats step by step", "heldout"),
    ],
    "side_step": [
        ("side-steps to the {side}", "train"),
        ("shuffles sideways to the {side}", "train"),
        ("steps sideways to the {side}", "train"),
        ("sidesteps toward the {side}", "heldout"),
    ],
    "crouch_walk": [
        ("walks forward while crouching", "train"),
        ("sneaks forward in a crouch", "train"),
        ("crouch-walks forward", "train"),
        ("creeps ahead bent low", "heldout"),
    ],
    "jump_in_place": [
        ("jumps in place", "train"),
        ("jumps straight up", "train"),
        ("hops up on the spot", "train"),
        ("leaps up without moving forward", "heldout"),
    ],
    "jump_forward": [
        ("jumps forward", "train"),
        ("leaps forward", "train"),
        ("does a jump forward", "train"),
        ("bounds ahead with both feet", "heldout"),
    ],
    "turn": [
        ("turns {side}{amount}", "train"),
        ("turns to the {side}{amount}", "train"),
        ("rotates to the {side}{amount}", "train"),
        ("pivots to the {side}{amount}", "heldout"),
    ],
    "spin": [
        ("spins around to the {side}", "train"),
        ("turns a full circle to the {side}", "train"),
        ("spins in place", "train"),
        ("twirls around once", "heldout"),
    ],
    "wave": [
        ("waves with the {side} hand", "train"),
        ("waves the {side} hand", "train"),
        ("raises the {side} hand and waves", "train"),
        ("greets someone with a wave of the {side} hand", "heldout"),
    ],
    "raise_arms": [
        ("raises both arms", "train"),
        ("lifts both arms above the head", "train"),
        ("puts both hands up", "train"),
        ("reaches up toward the sky with both arms", "heldout"),
    ],
    "clap": [
        ("claps", "train"),
        ("claps hands {n} times", "train"),
        ("claps their hands", "train"),
        ("applauds", "heldout"),
    ],
    "punch_one": [
        ("punches with the {side} hand", "train"),
        ("throws a {side} punch", "train"),
        ("punches forward with the {side} fist", "train"),
        ("jabs forward with the {side} fist", "heldout"),
    ],
    "punch_both": [
        ("throws punches with both hands", "train"),
        ("punches forward with alternating fists", "train"),
        ("punches with both arms", "train"),
        ("boxes the air with both fists", "heldout"),
    ],
    "kick": [
        ("kicks with the {side} leg", "train"),
        ("kicks forward with the {side} foot", "train"),
        ("does a {side} kick", "train"),
        ("swings the {side} leg up in a kick", "heldout"),
    ],
    "squat": [
        ("squats down and stands back up", "train"),
        ("does {n_squats}", "train"),
        ("bends the knees into a squat", "train"),
        ("drops low into a squat and rises again", "heldout"),
    ],
    "bow": [
        ("bows", "train"),
        ("bows forward", "train"),
        ("takes a bow", "train"),
        ("bends forward politely at the waist", "heldout"),
    ],
    "sit_down": [
        ("sits down", "train"),
        ("sits down on a chair", "train"),
        ("takes a seat", "train"),
        ("lowers themselves onto a seat", "heldout"),
    ],
    "stand_up": [
        ("stands up", "train"),
        ("stands up from a chair", "train"),
        ("gets up from sitting", "train"),
        ("rises to their feet", "heldout"),
    ],
}
_NUM = {1: "once", 2: "two", 3: "three", 4: "four", 5: "five", 6: "six"}


def template_key(label: dict) -> str:
    a = label["action"]
    if label.get("curve"):
        return f"{a}_circle" if abs(label["curve"]) >= 300 else f"{a}_curve"
    if a == "jump":
        return "jump_forward" if label.get("direction") == "forward" else "jump_in_place"
    if a == "punch":
        return "punch_both" if label.get("hand") == "both" else "punch_one"
    return a


def templates(label: dict, split: str) -> list[str]:
    """The templates usable for `label`; split 'train' or 'heldout' (falls back to train if none)."""
    opts = [t for t, s in _T[template_key(label)] if s == split]
    return opts or [t for t, s in _T[template_key(label)] if s == "train"]


def _slots(label: dict, rng) -> dict:
    a = label["action"]
    adv = ""
    if a == "walk":
        v = label["speed"]
        pool = (
            (" slowly", " at a leisurely pace", " at a slow pace")
            if v < 0.85
            else (" quickly", " briskly", " at a brisk pace")
            if v > 1.05
            else ("", " at a normal pace")
        )
        adv = str(rng.choice(pool))
    if label.get("curve"):
        side = "left" if label["curve"] > 0 else "right"
    else:
        side = label.get("hand") or label.get("foot") or label.get("direction") or ""
    amount = ""
    if a == "turn":
        amount = {45.0: " slightly", 90.0: "", 135.0: " sharply", 180.0: " all the way around"}.get(
            label["angle"], ""
        )
        amount = str(rng.choice([amount, f" by {int(label['angle'])} degrees"]))
    n = label.get("count", 1)
    n_squats = "a squat" if n == 1 else f"{_NUM.get(n, n)} squats"
    return dict(
        adv=adv, side=side, amount=amount, n=_NUM.get(n, str(n)) if n != 1 else "one", n_squats=n_squats
    )


def phrase(label: dict, rng, split: str = "train") -> str:
    t = str(rng.choice(templates(label, split)))
    out = t.format(**_slots(label, rng))
    return out.replace("claps hands one times", "claps once")


def caption(labels: list[dict], rng, split: str = "train") -> str:
    """One caption for a sequence of action labels."""
    parts = [phrase(lb, rng, split) for lb in labels]
    text = str(rng.choice(SUBJECTS)) + " " + parts[0]
    for p in parts[1:]:
        text += str(rng.choice(THEN)) + p
    return text


def tokens(text: str) -> str:
    """HumanML3D's second field is `word/POS` tokens from spaCy; we have no tagger, so every word gets
    the placeholder tag OTHER (the loader only keeps the field)."""
    words = text.replace(",", " ").replace(".", " ").split()
    return " ".join(f"{w.lower()}/OTHER" for w in words)
