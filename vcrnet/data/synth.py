"""Synthetic VCR-format data: the built-in dataset every test and a user without VCR runs on.

Written in the exact VCR 1.0 layout (``{train,val,test}.jsonl`` with all 23 keys, test lines without
labels and ``*_orig``; ``vcr1images/<movie>/<image>.jpg`` and ``.json`` with 5-column boxes, polygon
``segms``, ``names``, ``width``, ``height``), so that the one reader serves both. The test labels
are kept aside in ``test_labels.json`` (annot_id -> [answer, rationale]): a labelled split that no
model selects on (``vcr-study rerun`` and ``evaluate --split test`` score it).

Design, so that a study on it means something:

* **The scene.** A grey image holds 5-7 flat-coloured shapes, each a detection with a COCO class
  (mostly ``person``). Colours are distinct within an image and drawn from 8 that randomly
  initialised ResNet features separate well; shapes come from 4 (circle, square, triangle, star).
  The class of an object is known from the text (its tag shows a name or the class); its **colour
  and shape are only in the pixels**. Shapes are 60-90 pixels across: on the 384x192 canvas a
  linear probe on held-out objects' random-ResNet features reads colour at 0.93 and shape at 0.64
  (chance 0.12 and 0.25; ``tests/vcrnet/test_visual_signal.py``).
* **(a) Answering needs the image.** Every question asks about a visual property of tagged
  objects, and its 4 answers are the same template filled with 4 different values, the right one at
  a uniformly random position. Nothing in the text tells which value is true, so a text-only model
  stays at chance (25%); a model that sees the objects' features can learn it. Each answer names
  the object it is about *and* the value ("[2] is mostly red."), so that the value word and the
  object's features meet in the answer's own grounding, as in R2C.
* **(b) The rationale depends on the answer.** Rationale ``i`` is written to *support answer
  ``i``*, and given the right answer the right rationale is the one linked to it, which text alone
  can find; given a wrong answer, the linked rationale is a wrong one. The rationales are shuffled
  independently of the answers. How much the rationale needs the answer differs by type:

  - ``colour``, ``who``, ``occasion``: the rationale repeats the answer's object or names what the
    answer's value is associated with (red -> a ripe tomato, white -> a wedding). It is also
    *checkable against the pixels*: "[0] has the colour of a ripe tomato" is true or false by
    [0]'s colour, so a model can pick it without the answer, and there Q->AR ~ Q->A. Sometimes
    one wrong rationale is instead a *true fact that does not explain the answer* (the colour of
    another object).
  - ``team`` (a quarter of the questions): the rationale can be picked *only through the answer*.
    Answer ``i`` pairs a colour with a team drawn for this question alone ("[0] plays for the
    Hawks, who wear red."); rationale ``i`` names that team and no colour ("[0] is wearing the kit
    of the Hawks."). Which team wears which colour is stated only in the answers and is random
    per question, so without the answer all four rationales are equally plausible (they differ
    only in the team's name) and none can be checked against the pixels: a rationale module is
    at chance (25%) unless it reads the answer it is conditioned on. Given the gold answer the
    link is one shared word; given a wrong answer it points to a wrong rationale (a model that
    also sees that this answer is false can at best rule its rationale out: 1 in 3). This is the
    type on which "does the rationale follow from the *predicted* answer?" can show.

  The adversarial-matching bookkeeping (``*_match_iter``, ``*_sources``) is drawn without looking
  at the labels: in real VCR a 0 in ``*_match_iter`` marks the ground truth, here it would leak it.
* **(c) VCR's shape.** Four question types, drawn uniformly -- ``colour`` ("What colour is [0]?"),
  ``who`` ("Which of [0,1,2,3] is wearing red?", or with "everyone"), ``occasion`` ("Where is [1]
  going?", answered through the colour of the clothes), ``team`` ("Which team does [1] play
  for?", answered through the colour of the clothes and explained through the answer) -- each
  with several question, answer and rationale templates; several objects per question and
  multi-object tags; several questions per image, as VCR has. Objects also differ in shape, but
  no question hinges on it: random-ResNet features read shape too weakly (0.64) for a model to
  learn it from 1,500 questions (measured: a model that reached 0.56-0.63 on the colour-based
  types stayed at 0.24 on shape questions).
* **(d) Deterministic.** One ``numpy`` generator seeded by ``seed`` drives everything, split by
  split; the same seed writes byte-identical files.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from vcrnet.data.records import (
    IMAGES_DIR,
    LABELED_SPLITS,
    NUM_CHOICES,
    SPLITS,
    TEST_LABELS_SUFFIX,
    Token,
)
from vcrnet.errors import InputError

COLOURS = {  # name -> RGB
    "red": (200, 30, 30),
    "green": (40, 160, 50),
    "blue": (30, 60, 210),
    "yellow": (235, 215, 40),
    "purple": (130, 40, 160),
    "orange": (240, 130, 20),
    "white": (245, 245, 245),
    "black": (20, 20, 20),
}
COLOUR_THINGS = {  # what each colour reminds you of
    "red": ("a ripe tomato", "a fire truck"),
    "green": ("fresh grass", "a lime"),
    "blue": ("a clear sky", "the ocean"),
    "yellow": ("a banana", "the sun"),
    "purple": ("a grape", "an aubergine"),
    "orange": ("a pumpkin", "a carrot"),
    "white": ("fresh snow", "a glass of milk"),
    "black": ("coal", "the night sky"),
}
OCCASIONS = {  # colour of the clothes -> where the person is going
    "red": "a fire drill",
    "green": "a golf match",
    "blue": "a swimming race",
    "yellow": "the beach",
    "purple": "a royal banquet",
    "orange": "road works",
    "white": "a wedding",
    "black": "a funeral",
}
TEAMS = (
    "Hawks",
    "Lions",
    "Tigers",
    "Wolves",
    "Eagles",
    "Sharks",
    "Foxes",
    "Owls",
    "Rams",
    "Falcons",
    "Comets",
    "Rockets",
)  # drawn per question: no team has a colour of its own
SHAPES = ("circle", "square", "triangle", "star")
OTHER_CLASSES = (
    "dog",
    "car",
    "chair",
    "cup",
    "bottle",
    "umbrella",
    "horse",
    "bench",
    "handbag",
    "cat",
)
QUESTION_TYPES = ("colour", "who", "occasion", "team")
DEFAULT_SIZES = {"train": 1500, "val": 300, "test": 300}
QUESTIONS_PER_IMAGE = 3
# a "movie" is a folder of this many images (VCR's are ~45 frames of one film; here they share
# nothing but the folder): enough movies that the dev split, carved by movie, is fine-grained
IMAGES_PER_MOVIE = 3
BACKGROUND = 128


@dataclass
class SceneObject:
    name: str
    colour: str
    shape: str
    polygon: np.ndarray  # [P, 2] int pixels

    @property
    def box(self) -> list[float]:
        x1, y1 = self.polygon.min(axis=0)
        x2, y2 = self.polygon.max(axis=0)
        return [float(x1), float(y1), float(x2), float(y2)]


@dataclass
class Question:
    kind: str
    question: list[Token]
    answers: list[list[Token]]  # answers[i] is supported by rationales[i]
    rationales: list[list[Token]]
    label: int


def write_synthetic(out: str | Path, seed: int = 0, sizes: dict[str, int] | None = None) -> Path:
    """Write a synthetic VCR dataset to ``out`` (created atomically: all or nothing)."""
    sizes = {**DEFAULT_SIZES, **(sizes or {})}
    out = Path(out).absolute()
    if out.exists():
        raise InputError(f"--out {out}: already exists; choose another folder or remove it")
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        for index, split in enumerate(SPLITS):
            rng = np.random.default_rng([seed, index])
            _write_split(tmp, split, sizes[split], rng)
        out.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _write_split(root: Path, split: str, count: int, rng: np.random.Generator) -> None:
    lines = []
    for image_number in range((count + QUESTIONS_PER_IMAGE - 1) // QUESTIONS_PER_IMAGE):
        movie = f"synthetic_{split}_{image_number // IMAGES_PER_MOVIE:03d}"
        stem = f"{movie}/{split}_{image_number:05d}"
        width, height = int(rng.integers(360, 481)), int(rng.integers(180, 271))
        scene = _draw_scene(rng, width, height)
        image = _render(scene, width, height, rng)
        (root / IMAGES_DIR / movie).mkdir(parents=True, exist_ok=True)
        image.save(root / IMAGES_DIR / f"{stem}.jpg", quality=92)
        _write_json(root / IMAGES_DIR / f"{stem}.json", _metadata(scene, width, height, rng))
        for q_number in range(min(QUESTIONS_PER_IMAGE, count - len(lines))):
            kind = QUESTION_TYPES[int(rng.integers(len(QUESTION_TYPES)))]
            q = _ASK[kind](scene, rng)
            lines.append(
                _annotation(split, len(lines), image_number, q_number, stem, scene, q, rng)
            )
    if split not in LABELED_SPLITS:  # as VCR: no labels in the file; kept aside for scoring
        labels = {
            line["annot_id"]: [line["answer_label"], line["rationale_label"]] for line in lines
        }
        _write_json(root / f"{split}{TEST_LABELS_SUFFIX}", labels)
        for line in lines:
            for key in (
                "answer_label",
                "rationale_label",
                "answer_orig",
                "question_orig",
                "rationale_orig",
            ):
                del line[key]
    with (root / f"{split}.jsonl").open("w", encoding="utf-8") as f:
        for line in lines:
            f.write(json.dumps(line) + "\n")


# --- the scene --------------------------------------------------------------------------------


def _draw_scene(rng: np.random.Generator, width: int, height: int) -> list[SceneObject]:
    n = int(rng.integers(5, 8))
    colours = rng.permutation(list(COLOURS))[:n]
    placed: list[np.ndarray] = []
    objects = []
    for i in range(n):
        # at least four persons, so that "who" questions always have four candidates
        name = "person" if i < 4 or rng.random() < 0.5 else str(rng.choice(OTHER_CLASSES))
        shape = str(rng.choice(list(SHAPES)))
        polygon = _place(shape, rng, width, height, placed)
        placed.append(polygon)
        objects.append(SceneObject(name, str(colours[i]), shape, polygon))
    order = rng.permutation(n)  # detections in no particular order
    return [objects[i] for i in order]


def _place(
    shape: str, rng: np.random.Generator, width: int, height: int, placed: list[np.ndarray]
) -> np.ndarray:
    for _ in range(50):
        size = float(rng.uniform(60, 90))  # large enough for random features to see shape
        cx, cy = (
            rng.uniform(size / 2 + 2, width - size / 2 - 2),
            rng.uniform(size / 2 + 2, height - size / 2 - 2),
        )
        polygon = _polygon(shape, cx, cy, size / 2, float(rng.uniform(0, 2 * np.pi)))
        if not any(_overlap(polygon, other) for other in placed):
            return polygon
    return polygon  # a crowded image: let this one overlap


def _polygon(shape: str, cx: float, cy: float, r: float, angle: float) -> np.ndarray:
    if shape == "circle":
        t = np.linspace(0, 2 * np.pi, 40, endpoint=False)
        radii = np.full_like(t, r)
    elif shape == "square":
        t = angle + np.pi / 4 + np.arange(4) * np.pi / 2
        radii = np.full_like(t, r * 1.05)
    elif shape == "triangle":
        t = angle + np.arange(3) * 2 * np.pi / 3
        radii = np.full_like(t, r * 1.1)
    else:  # star: 5 points, 10 vertices
        t = angle + np.arange(10) * np.pi / 5
        radii = np.where(np.arange(10) % 2 == 0, r * 1.1, r * 0.45)
    return np.stack([cx + radii * np.cos(t), cy + radii * np.sin(t)], axis=1).round().astype(int)


def _overlap(a: np.ndarray, b: np.ndarray) -> bool:
    (ax1, ay1), (ax2, ay2) = a.min(0), a.max(0)
    (bx1, by1), (bx2, by2) = b.min(0), b.max(0)
    return not (ax2 + 4 < bx1 or bx2 + 4 < ax1 or ay2 + 4 < by1 or by2 + 4 < ay1)


def _render(
    scene: list[SceneObject], width: int, height: int, rng: np.random.Generator
) -> Image.Image:
    noise = rng.normal(0, 6, size=(height, width, 1))
    pixels = np.clip(BACKGROUND + noise, 0, 255).astype(np.uint8).repeat(3, axis=2)
    image = Image.fromarray(pixels, "RGB")
    draw = ImageDraw.Draw(image)
    for obj in scene:
        jitter = rng.integers(-12, 13, size=3)
        fill = tuple(int(np.clip(c + j, 0, 255)) for c, j in zip(COLOURS[obj.colour], jitter))
        draw.polygon([tuple(p) for p in obj.polygon.tolist()], fill=fill)
    return image


def _metadata(scene: list[SceneObject], width: int, height: int, rng: np.random.Generator) -> dict:
    return {
        "boxes": [obj.box + [round(float(rng.uniform(0.7, 1.0)), 4)] for obj in scene],
        "segms": [[obj.polygon.tolist()] for obj in scene],
        "names": [obj.name for obj in scene],
        "width": width,
        "height": height,
    }


# --- the questions ----------------------------------------------------------------------------
# Each asker returns answers[i] with its supporting rationales[i]; _annotation shuffles them.


def _pick(rng: np.random.Generator, options: tuple | list):
    return options[int(rng.integers(len(options)))]


def _values(rng: np.random.Generator, truth: str, pool: list[str]) -> tuple[list[str], int]:
    """4 distinct values containing ``truth`` at a uniformly random position."""
    others = [v for v in pool if v != truth]
    values = [others[i] for i in rng.permutation(len(others))[: NUM_CHOICES - 1]]
    label = int(rng.integers(NUM_CHOICES))
    values.insert(label, truth)
    return values, label


def _ask_colour(scene: list[SceneObject], rng: np.random.Generator) -> Question:
    o = int(rng.integers(len(scene)))
    values, label = _values(rng, scene[o].colour, list(COLOURS))
    question = _pick(
        rng,
        (
            ["What", "colour", "is", [o], "?"],
            ["Which", "colour", "does", [o], "have", "?"],
            ["What", "colour", "would", "you", "call", [o], "?"],
        ),
    )
    answer = _pick(
        rng,
        (
            lambda c: [[o], "is", c, "."],
            lambda c: [[o], "looks", c, "."],
            lambda c: [[o], "is", "mostly", c, "."],
        ),
    )
    rationale = _pick(
        rng,
        (
            lambda c, k: [[o], "has", "the", "colour", "of", *_thing(c, k), "."],
            lambda c, k: [[o], "looks", "just", "like", *_thing(c, k), "."],
            lambda c, k: ["The", "colour", "of", [o], "reminds", "me", "of", *_thing(c, k), "."],
        ),
    )
    k = int(rng.integers(2))
    return Question(
        "colour", question, [answer(c) for c in values], [rationale(c, k) for c in values], label
    )


def _persons(scene: list[SceneObject]) -> list[int]:
    return [i for i, obj in enumerate(scene) if obj.name == "person"]


def _ask_who(scene: list[SceneObject], rng: np.random.Generator) -> Question:
    persons = _persons(scene)
    candidates = [persons[i] for i in rng.permutation(len(persons))[:NUM_CHOICES]]
    label = int(rng.integers(NUM_CHOICES))
    colour = scene[candidates[label]].colour
    if rng.random() < 0.3 and len(persons) == NUM_CHOICES:
        question = ["Who", "among", "everyone", "is", "wearing", colour, "?"]
    else:
        tag = sorted(candidates)
        question = _pick(
            rng,
            (
                ["Which", "of", tag, "is", "wearing", colour, "?"],
                ["Who", "of", tag, "is", "dressed", "in", colour, "?"],
            ),
        )
    answer = _pick(
        rng,
        (
            lambda p: [[p], "is", "wearing", colour, "."],
            lambda p: ["It", "is", [p], ",", "in", colour, "."],
            lambda p: [[p], "is", "the", "one", "in", colour, "."],
        ),
    )
    rationale = _pick(
        rng,
        (
            lambda p: [[p], "is", "dressed", "in", colour, "from", "head", "to", "toe", "."],
            lambda p: [[p], "'s", "clothes", "are", colour, "."],
            lambda p: ["You", "can", "see", "that", [p], "wears", colour, "."],
        ),
    )
    return Question(
        "who", question, [answer(p) for p in candidates], [rationale(p) for p in candidates], label
    )


def _ask_occasion(scene: list[SceneObject], rng: np.random.Generator) -> Question:
    o = int(_pick(rng, _persons(scene)))
    values, label = _values(rng, scene[o].colour, list(COLOURS))
    question = _pick(
        rng,
        (
            ["Where", "is", [o], "going", "?"],
            ["What", "event", "is", [o], "dressed", "for", "?"],
            ["Why", "is", [o], "dressed", "like", "this", "?"],
        ),
    )
    answer = _pick(
        rng,
        (
            lambda c: [[o], "is", "going", "to", *OCCASIONS[c].split(), "."],
            lambda c: [[o], "is", "dressed", "for", *OCCASIONS[c].split(), "."],
        ),
    )
    rationale = _pick(
        rng,
        (
            lambda c: [[o], "is", "wearing", c, ",", "which", "suits", "it", "."],
            lambda c: ["People", "wear", c, "there", ",", "and", "so", "does", [o], "."],
        ),
    )
    return Question(
        "occasion", question, [answer(c) for c in values], [rationale(c) for c in values], label
    )


def _ask_team(scene: list[SceneObject], rng: np.random.Generator) -> Question:
    """Answer i: a colour and a team drawn for this question; rationale i: that team, no colour.

    The rationale is linked to its answer by the team's name alone, and which colour a team wears
    is said only in the answer, so it can be chosen only through the answer (design point (b)).
    """
    o = int(_pick(rng, _persons(scene)))
    values, label = _values(rng, scene[o].colour, list(COLOURS))
    teams = [TEAMS[i] for i in rng.permutation(len(TEAMS))[:NUM_CHOICES]]
    question = _pick(
        rng,
        (
            ["Which", "team", "does", [o], "play", "for", "?"],
            ["What", "team", "is", [o], "on", "?"],
            ["Who", "is", [o], "playing", "for", "today", "?"],
        ),
    )
    answer = _pick(
        rng,
        (
            lambda c, t: [[o], "plays", "for", "the", t, ",", "who", "wear", c, "."],
            lambda c, t: [[o], "is", "on", "the", t, ",", "the", "team", "in", c, "."],
        ),
    )
    rationale = _pick(
        rng,
        (
            lambda t: [[o], "is", "wearing", "the", "kit", "of", "the", t, "."],
            lambda t: [[o], "wears", "the", t, "'", "colours", "."],
            lambda t: ["All", "players", "of", "the", t, "dress", "like", [o], "."],
        ),
    )
    return Question(
        "team",
        question,
        [answer(c, t) for c, t in zip(values, teams)],
        [rationale(t) for t in teams],
        label,
    )


_ASK = {"colour": _ask_colour, "who": _ask_who, "occasion": _ask_occasion, "team": _ask_team}


def question_type(question: list[Token]) -> str:
    """Which of ``QUESTION_TYPES`` a built-in question is, read off its template's words (the
    lines do not record it): e.g. to measure what a batch holds (benchmarks/batch_composition)."""
    words = [w for w in question if isinstance(w, str)]
    if words[1] == "colour":
        return "colour"
    if "team" in words or "playing" in words:
        return "team"
    if "going" in words or "event" in words or words[0] == "Why":
        return "occasion"
    return "who"


def _thing(colour: str, k: int) -> list[str]:
    return COLOUR_THINGS[colour][k].split()


def _true_but_irrelevant(
    scene: list[SceneObject], q: Question, rng: np.random.Generator
) -> list[Token] | None:
    """A true statement about an object the question is not about, or None.

    None for ``team``: a fact checkable in the pixels would stand out from the team rationales
    as one that is never right, and without the answer the four must be alike.
    """
    mentioned = {
        t for sent in [q.question, *q.answers] for tok in sent if isinstance(tok, list) for t in tok
    }
    others = [i for i in range(len(scene)) if i not in mentioned]
    if not others or q.kind in ("who", "team"):
        return None
    o = int(_pick(rng, others))
    return [[o], "is", scene[o].colour, "."]


# --- one jsonl line ---------------------------------------------------------------------------


def _annotation(
    split: str,
    index: int,
    image_number: int,
    q_number: int,
    stem: str,
    scene: list[SceneObject],
    q: Question,
    rng: np.random.Generator,
) -> dict:
    rationales = list(q.rationales)
    if rng.random() < 0.25:  # replace one wrong rationale by a true but irrelevant fact
        fact = _true_but_irrelevant(scene, q, rng)
        if fact is not None:
            wrong = [i for i in range(NUM_CHOICES) if i != q.label]
            rationales[int(_pick(rng, wrong))] = fact
    order = rng.permutation(NUM_CHOICES)  # rationale position -> the answer it supports
    rationale_choices = [rationales[i] for i in order]
    rationale_label = int(np.flatnonzero(order == q.label)[0])
    objects = [obj.name for obj in scene]
    answer_iter, answer_sources = _bookkeeping(rng)
    rationale_iter, rationale_sources = _bookkeeping(rng)
    line = {
        "movie": stem.split("/")[0],
        "objects": objects,
        "interesting_scores": [int(v) for v in rng.integers(-1, 2, size=2)],
        "answer_likelihood": str(_pick(rng, ("likely", "possible", "unlikely"))),
        "img_fn": f"{stem}.jpg",
        "metadata_fn": f"{stem}.json",
        "answer_orig": _orig(q.answers[q.label]),
        "question_orig": _orig(q.question),
        "rationale_orig": _orig(rationale_choices[rationale_label]),
        "question": q.question,
        "answer_match_iter": answer_iter,
        "answer_sources": answer_sources,
        "answer_choices": q.answers,
        "answer_label": q.label,
        "rationale_choices": rationale_choices,
        "rationale_sources": rationale_sources,
        "rationale_match_iter": rationale_iter,
        "rationale_label": rationale_label,
        "img_id": f"{split}-{image_number}",
        "question_number": q_number,
        "annot_id": f"{split}-{index}",
        "match_fold": f"{split}-{index % 2}",
        "match_index": index,
    }
    return line


def _bookkeeping(rng: np.random.Generator) -> tuple[list[int], list[int]]:
    """``*_match_iter`` and ``*_sources`` of one line, drawn the same way whatever the label.

    Real VCR's have a 0 at the ground truth in ``*_match_iter`` and the line's own index in
    ``*_sources``; copying that would hand the label to any model that reads them.
    """
    match_iter = [int(v) for v in rng.permutation(NUM_CHOICES)]
    sources = [int(v) for v in rng.integers(0, 100000, size=NUM_CHOICES)]
    return match_iter, sources


def _orig(tokens: list[Token]) -> str:
    """The crowd-sourced string form: tags as 1-based numbers ("Is 1 and 3 ...")."""
    words = []
    for tok in tokens:
        if isinstance(tok, list):
            nums = [str(t + 1) for t in tok]
            words.append(nums[0] if len(nums) == 1 else ", ".join(nums[:-1]) + " and " + nums[-1])
        else:
            words.append(tok)
    return " ".join(words).replace(" ?", "?").replace(" .", ".").replace(" ,", ",")


def _write_json(path: Path, obj: dict) -> None:
    path.write_text(json.dumps(obj), encoding="utf-8")
