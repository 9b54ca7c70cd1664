"""What R2C does with object tags, boxes and polygons, as plain functions.

- :func:`relevant_objects`: keep the detections mentioned in the question or any choice; the word
  "everyone" adds every person; if nothing is mentioned, keep all persons.
- :func:`ground_item`: the model's object list is the whole image (object 0, class
  ``__background__``) followed by the kept detections; each int of a tag list becomes its own token,
  shown to the text encoder as a gender-neutral name for a person and as the class name otherwise;
  untagged words are grounded to object 0.
- :func:`fit_image`, :func:`scale_boxes`: fit an image into the model's canvas (default 768x384,
  aspect kept, centred padding) and move boxes the same way.
- :func:`make_mask`: a 14x14 grid over a box, 1 where a grid point falls inside any polygon.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vcrnet.data.records import Token, VCRItem
from vcrnet.errors import VCRDataError

COCO_CLASSES = (
    "__background__",
    "person",
    "bicycle",
    "car",
    "motorcycle",
    "airplane",
    "bus",
    "train",
    "truck",
    "boat",
    "traffic light",
    "fire hydrant",
    "stop sign",
    "parking meter",
    "bench",
    "bird",
    "cat",
    "dog",
    "horse",
    "sheep",
    "cow",
    "elephant",
    "bear",
    "zebra",
    "giraffe",
    "backpack",
    "umbrella",
    "handbag",
    "tie",
    "suitcase",
    "frisbee",
    "skis",
    "snowboard",
    "sports ball",
    "kite",
    "baseball bat",
    "baseball glove",
    "skateboard",
    "surfboard",
    "tennis racket",
    "bottle",
    "wine glass",
    "cup",
    "fork",
    "knife",
    "spoon",
    "bowl",
    "banana",
    "apple",
    "sandwich",
    "orange",
    "broccoli",
    "carrot",
    "hot dog",
    "pizza",
    "donut",
    "cake",
    "chair",
    "couch",
    "potted plant",
    "bed",
    "dining table",
    "toilet",
    "tv",
    "laptop",
    "mouse",
    "remote",
    "keyboard",
    "cell phone",
    "microwave",
    "oven",
    "toaster",
    "sink",
    "refrigerator",
    "book",
    "clock",
    "vase",
    "scissors",
    "teddy bear",
    "hair drier",
    "toothbrush",
)
"""The 81 classes of R2C's class embedding: background (the whole image) and COCO's 80."""
CLASS_INDEX = {name: i for i, name in enumerate(COCO_CLASSES)}

GENDER_NEUTRAL_NAMES = (
    "Casey",
    "Riley",
    "Jessie",
    "Jackie",
    "Avery",
    "Jaime",
    "Peyton",
    "Kerry",
    "Jody",
    "Kendall",
    "Skyler",
    "Frankie",
    "Pat",
    "Quinn",
)
EVERYONE_WORDS = ("everyone", "everyones")
MASK_SIZE = 14
DEFAULT_IMAGE_SIZE = (768, 384)  # (width, height), as R2C


@dataclass(frozen=True)
class Sentence:
    """A token list ready for the text encoder: one word and one object index per token."""

    words: list[str]
    tags: list[int]  # index into the item's model objects; 0 (the whole image) for plain words


@dataclass(frozen=True)
class GroundedItem:
    """An item as the model sees it. ``kept`` indexes the original ``objects``."""

    kept: list[int]
    classes: list[int]  # [1 + len(kept)] class ids; classes[0] is __background__
    question: Sentence
    answers: list[Sentence]
    rationales: list[Sentence]


def relevant_objects(item: VCRItem) -> list[int]:
    """Indexes of the detections R2C keeps for this item, in ascending order."""
    is_person = np.array([name == "person" for name in item.objects], dtype=bool)
    keep = np.zeros(len(item.objects), dtype=bool)
    for sentence in [item.question, *item.answer_choices, *item.rationale_choices]:
        for tok in sentence:
            if isinstance(tok, list):
                keep[tok] = True
            elif tok.lower() in EVERYONE_WORDS:
                keep |= is_person
    if not keep.any():
        keep |= is_person
    return np.flatnonzero(keep).tolist()


def ground_item(item: VCRItem) -> GroundedItem:
    kept = relevant_objects(item)
    new_index = {old: new for new, old in enumerate(kept, start=1)}
    classes = [CLASS_INDEX["__background__"]]
    for i in kept:
        name = item.objects[i]
        if name not in CLASS_INDEX:
            path, _, line = item.source.rpartition(":")
            raise VCRDataError(
                path,
                f"unknown class {name!r} (not a COCO class)",
                line=int(line),
                field=f"objects[{i}]",
            )
        classes.append(CLASS_INDEX[name])

    def sentence(tokens: list[Token]) -> Sentence:
        words, tags = [], []
        for tok in tokens:
            if isinstance(tok, str):
                words.append(tok)
                tags.append(0)
                continue
            for old in tok:
                new = new_index[old]
                name = item.objects[old]
                words.append(
                    GENDER_NEUTRAL_NAMES[new % len(GENDER_NEUTRAL_NAMES)]
                    if name == "person"
                    else name
                )
                tags.append(new)
        return Sentence(words, tags)

    return GroundedItem(
        kept=kept,
        classes=classes,
        question=sentence(item.question),
        answers=[sentence(c) for c in item.answer_choices],
        rationales=[sentence(c) for c in item.rationale_choices],
    )


@dataclass(frozen=True)
class ImageFit:
    """How an image of ``width`` x ``height`` pixels is placed on the model's canvas."""

    scale: float
    left: int
    top: int
    resized_width: int
    resized_height: int
    canvas: tuple[int, int]  # (width, height)

    @property
    def window(self) -> np.ndarray:
        """The image's area on the canvas, x1 y1 x2 y2: the box of object 0."""
        return np.array(
            [self.left, self.top, self.left + self.resized_width, self.top + self.resized_height],
            dtype=np.float32,
        )


def fit_image(width: int, height: int, canvas: tuple[int, int] = DEFAULT_IMAGE_SIZE) -> ImageFit:
    """Scale to fit ``canvas`` keeping the aspect ratio, then pad equally on both sides."""
    cw, ch = canvas
    scale = min(cw / width, ch / height)
    rw, rh = min(cw, round(width * scale)), min(ch, round(height * scale))
    return ImageFit(
        scale=scale,
        left=(cw - rw) // 2,
        top=(ch - rh) // 2,
        resized_width=rw,
        resized_height=rh,
        canvas=canvas,
    )


def scale_boxes(boxes: np.ndarray, fit: ImageFit) -> np.ndarray:
    """Map pixel boxes ``[N, 4]`` (x1 y1 x2 y2) of the original image onto the canvas."""
    shift = np.array([fit.left, fit.top, fit.left, fit.top], dtype=np.float32)
    return (np.asarray(boxes, dtype=np.float32) * fit.scale + shift).astype(np.float32)


def make_mask(box: np.ndarray, polygons: list[np.ndarray], size: int = MASK_SIZE) -> np.ndarray:
    """``[size, size]`` float32: 1 where the centre of a grid cell over ``box`` is in a polygon.

    ``box`` and ``polygons`` are in the same (original pixel) coordinates.
    """
    x1, y1, x2, y2 = (float(v) for v in box[:4])
    xs = x1 + (np.arange(size) + 0.5) * (x2 - x1) / size
    ys = y1 + (np.arange(size) + 0.5) * (y2 - y1) / size
    gx, gy = np.meshgrid(xs, ys)  # row = y, column = x
    points = np.stack([gx.ravel(), gy.ravel()], axis=1)
    inside = np.zeros(len(points), dtype=bool)
    for polygon in polygons:
        inside |= points_in_polygon(points, polygon)
    return inside.reshape(size, size).astype(np.float32)


def points_in_polygon(points: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """Even-odd rule for ``points [P, 2]`` against a closed ``polygon [V, 2]``; bool ``[P]``."""
    px, py = points[:, :1], points[:, 1:]
    x1, y1 = polygon[:, 0], polygon[:, 1]
    x2, y2 = np.roll(x1, -1), np.roll(y1, -1)
    straddles = (y1 > py) != (y2 > py)  # [P, V]: the edge crosses the point's horizontal line
    dy = np.where(y2 == y1, 1.0, y2 - y1)
    x_cross = x1 + (py - y1) * (x2 - x1) / dy
    return ((straddles & (px < x_cross)).sum(axis=1) % 2) == 1
