"""Reading VCR 1.0 from disk into typed records, with one-line errors for bad data.

A VCR directory holds ``{train,val,test}.jsonl`` and ``vcr1images/`` (a JPEG and a metadata json per
image). Each jsonl line is one question with 4 answer and 4 rationale choices; words are strings and
an object tag is a list of ints indexing ``objects`` (``["Is", [0, 2], "happy", "?"]``). Train and
val lines carry ``answer_label``/``rationale_label``; test lines do not. Extra keys are tolerated:
only the keys the model needs are required (``REQUIRED_KEYS``).

Every problem raises :class:`vcrnet.errors.VCRDataError` naming the file, the line and the field.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath

import numpy as np

from vcrnet.errors import VCRDataError, not_utf8

SPLITS = ("train", "val", "test")
LABELED_SPLITS = ("train", "val")
NUM_CHOICES = 4
FLOAT32_MAX = float(np.finfo(np.float32).max)  # boxes and polygons are read as float32
IMAGES_DIR = "vcr1images"
# the built-in data's test labels beside test.jsonl (which has none, as VCR's): test_labels.json
# maps annot_id -> [answer_label, rationale_label], so a split never selected on can be scored
TEST_LABELS_SUFFIX = "_labels.json"
REQUIRED_KEYS = (
    "annot_id",
    "objects",
    "img_fn",
    "metadata_fn",
    "question",
    "answer_choices",
    "rationale_choices",
)
LABEL_KEYS = ("answer_label", "rationale_label")

Token = str | list[int]
"""A VCR token: a word, or an object tag (a list of 0-based indexes into ``objects``)."""


@dataclass(frozen=True)
class VCRItem:
    """One VCR question with its choices. Labels are ``None`` on the test split."""

    annot_id: str
    objects: list[str]
    img_fn: str
    metadata_fn: str
    question: list[Token]
    answer_choices: list[list[Token]]
    rationale_choices: list[list[Token]]
    answer_label: int | None
    rationale_label: int | None
    source: str  # "FILE:LINE" of the jsonl line, for error messages
    # the film the image is from (VCR's ``movie`` key; without it, img_fn's folder, which is the
    # movie's in VCR): VCR's splits are disjoint by movie, and so is the dev split carved off train
    movie: str = ""


@dataclass(frozen=True)
class ImageMetadata:
    """The per-image metadata json: boxes in pixels (score dropped) and polygon masks."""

    boxes: np.ndarray  # [N, 4] float32, x1 y1 x2 y2
    segms: list[list[np.ndarray]]  # per object, a list of [P, 2] float32 polygons
    names: list[str]
    width: int
    height: int


def split_path(root: str | Path, split: str) -> Path:
    if split not in SPLITS:
        raise VCRDataError(root, f"unknown split {split!r} (expected one of {', '.join(SPLITS)})")
    return Path(root) / f"{split}.jsonl"


def held_out_labels(root: str | Path, split: str) -> dict[str, list[int]] | None:
    """The labels kept beside an unlabelled split (the built-in data's test), or None."""
    path = Path(root) / f"{split}{TEST_LABELS_SUFFIX}"
    if split in LABELED_SPLITS or not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise not_utf8(path) from None
    except json.JSONDecodeError as err:
        raise VCRDataError(path, f"malformed JSON ({err.msg})") from None


def with_held_out_labels(root: str | Path, split: str, items: list[VCRItem]) -> list[VCRItem]:
    """``items`` with the labels kept beside their split, where there are such labels."""
    labels = held_out_labels(root, split)
    if labels is None:
        return items
    missing = [it.annot_id for it in items if it.annot_id not in labels]
    if missing:
        raise VCRDataError(
            Path(root) / f"{split}{TEST_LABELS_SUFFIX}",
            f"no labels for {missing[0]} ({len(missing)} items)",
        )
    return [
        replace(it, answer_label=labels[it.annot_id][0], rationale_label=labels[it.annot_id][1])
        for it in items
    ]


def require_splits(
    root: str | Path,
    splits: tuple[str, ...],
    images: bool = False,
    option: str = "--data",
    split_option: bool = False,
) -> Path:
    """Check, before anything is read or written, that ``root`` is a folder holding the split
    files a command will read (and ``vcr1images/`` when it will extract features). One line
    naming what is missing (and, with ``split_option``, which ``--split`` would do); returns the
    absolute folder."""
    root = Path(root).absolute()
    if not root.is_dir():
        raise VCRDataError(root, f"no such directory (given as {option})")
    missing = [s for s in splits if not split_path(root, s).is_file()]
    if missing:
        present = [s for s in SPLITS if split_path(root, s).is_file()]
        has = f"; it has {', '.join(f'{s}.jsonl' for s in present)}"
        hint = (
            has + (": pass " + " ".join(f"--split {s}" for s in present) if split_option else "")
            if present
            else "; a VCR 1.0 folder holds train.jsonl, val.jsonl, test.jsonl and vcr1images/"
        )
        raise VCRDataError(root, f"no {', '.join(f'{s}.jsonl' for s in missing)}{hint}")
    for split in splits:
        require_items(split_path(root, split))
    if images and not (root / IMAGES_DIR).is_dir():
        raise VCRDataError(
            root, f"no {IMAGES_DIR}/ folder: the images are needed to extract object features"
        )
    return root


def require_items(path: Path) -> None:
    """A split file holds at least one non-blank line (``FILE: no items`` otherwise), and its
    lines up to that one are UTF-8: reads no further than the first item."""
    if not path.is_file():
        raise VCRDataError(path, "no such file")
    try:
        with path.open("r", encoding="utf-8") as f:
            if any(text.strip() for text in f):
                return
    except UnicodeDecodeError:
        raise not_utf8(path) from None
    raise VCRDataError(path, "no items")


def iter_split(root: str | Path, split: str) -> Iterator[VCRItem]:
    """Yield the validated items of ``root/split.jsonl`` (labels required except on test)."""
    path = split_path(root, split)
    if not path.is_file():
        raise VCRDataError(path, "no such file")
    labeled = split in LABELED_SPLITS
    items = 0
    try:
        with path.open("r", encoding="utf-8") as f:
            for number, text in enumerate(f, start=1):
                if text.strip():
                    items += 1
                    yield parse_line(text, path, number, labeled)
    except UnicodeDecodeError:
        raise not_utf8(path) from None
    if not items:  # an empty split would pass every check, then fail extraction
        raise VCRDataError(path, "no items")


def read_split(root: str | Path, split: str) -> list[VCRItem]:
    return list(iter_split(root, split))


def parse_line(text: str, path: str | Path, number: int, labeled: bool) -> VCRItem:
    """Parse and validate one jsonl line."""

    def fail(problem: str, field: str | None = None) -> VCRDataError:
        return VCRDataError(path, problem, line=number, field=field)

    try:
        raw = json.loads(text)
    except json.JSONDecodeError as err:
        raise fail(f"malformed JSON ({err.msg} at column {err.colno})") from None
    if not isinstance(raw, dict):
        raise fail(f"expected a JSON object, got {type(raw).__name__}")
    for key in REQUIRED_KEYS + (LABEL_KEYS if labeled else ()):
        if key not in raw:
            raise fail("missing key", field=key)

    objects = raw["objects"]
    if not isinstance(objects, list) or not all(isinstance(o, str) for o in objects):
        raise fail("expected a list of class names", field="objects")
    for key in ("annot_id", "img_fn", "metadata_fn", "movie"):
        if key in raw and (not isinstance(raw[key], str) or not raw[key]):
            raise fail("expected a non-empty string", field=key)

    def tokens(value: object, field: str) -> list[Token]:
        if not isinstance(value, list) or not value:
            raise fail("expected a non-empty token list", field=field)
        for i, tok in enumerate(value):
            if isinstance(tok, str):
                continue
            if not isinstance(tok, list) or not tok or not all(_is_int(t) for t in tok):
                raise fail(
                    "a token must be a word or a non-empty list of ints", field=f"{field}[{i}]"
                )
            for t in tok:
                if not 0 <= t < len(objects):
                    raise fail(
                        f"object index {t} is beyond objects (which has {len(objects)})",
                        field=f"{field}[{i}]",
                    )
        return value

    def choices(key: str) -> list[list[Token]]:
        value = raw[key]
        if not isinstance(value, list) or len(value) != NUM_CHOICES:
            raise fail(f"expected {NUM_CHOICES} choices", field=key)
        return [tokens(c, f"{key}[{i}]") for i, c in enumerate(value)]

    def label(key: str) -> int | None:
        if key not in raw:
            return None
        value = raw[key]
        if not _is_int(value) or not 0 <= value < NUM_CHOICES:
            raise fail(f"{value!r} is not in 0..{NUM_CHOICES - 1}", field=key)
        return value

    return VCRItem(
        annot_id=raw["annot_id"],
        objects=objects,
        img_fn=raw["img_fn"],
        metadata_fn=raw["metadata_fn"],
        question=tokens(raw["question"], "question"),
        answer_choices=choices("answer_choices"),
        rationale_choices=choices("rationale_choices"),
        answer_label=label("answer_label"),
        rationale_label=label("rationale_label"),
        source=f"{path}:{number}",
        movie=raw.get("movie") or movie_of(raw["img_fn"]),
    )


def movie_of(img_fn: str) -> str:
    """A line's movie when it has no ``movie`` key: its image's folder (VCR's images are stored
    ``<movie folder>/<image>.jpg``), else the image itself."""
    folder = PurePosixPath(img_fn).parent.as_posix()
    return img_fn if folder in ("", ".") else folder


def image_path(root: str | Path, item: VCRItem) -> Path:
    """The item's JPEG; raises if it is missing."""
    path = Path(root) / IMAGES_DIR / item.img_fn
    if not path.is_file():
        raise _item_error(item, "img_fn", f"no such image file {path}")
    return path


def load_metadata(root: str | Path, item: VCRItem) -> ImageMetadata:
    """Load and check the item's metadata json against the item's ``objects``."""
    path = Path(root) / IMAGES_DIR / item.metadata_fn
    if not path.is_file():
        raise _item_error(item, "metadata_fn", f"no such metadata file {path}")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise not_utf8(path) from None
    except json.JSONDecodeError as err:
        raise VCRDataError(path, f"malformed JSON ({err})") from None
    if not isinstance(raw, dict):
        raise VCRDataError(path, "expected a JSON object")
    for key in ("boxes", "segms", "names", "width", "height"):
        if key not in raw:
            raise VCRDataError(path, "missing key", field=key)
    n = len(item.objects)
    width, height = raw["width"], raw["height"]
    for key, value in (("width", width), ("height", height)):
        if not _is_int(value) or value <= 0:
            raise VCRDataError(path, f"expected a positive int, got {value!r}", field=key)
    if raw["names"] != item.objects:
        raise VCRDataError(
            path,
            f"names {raw['names']} disagree with objects {item.objects} of {item.source}",
            field="names",
        )
    boxes = _boxes(raw["boxes"], n, path, item)
    segms = raw["segms"]
    if not isinstance(segms, list) or len(segms) != n:
        count = len(segms) if isinstance(segms, list) else "no"
        raise VCRDataError(
            path, f"has {count} entries but objects of {item.source} has {n}", field="segms"
        )
    polygons = [_polygons(s, path, f"segms[{i}]") for i, s in enumerate(segms)]
    return ImageMetadata(
        boxes=boxes, segms=polygons, names=list(raw["names"]), width=width, height=height
    )


def _boxes(value: object, n: int, path: Path, item: VCRItem) -> np.ndarray:
    if not isinstance(value, list) or len(value) != n:
        count = len(value) if isinstance(value, list) else "no"
        raise VCRDataError(
            path, f"has {count} rows but objects of {item.source} has {n}", field="boxes"
        )
    rows = []
    for i, row in enumerate(value):
        if (
            not isinstance(row, list)
            or len(row) not in (4, 5)
            or not all(_is_number(v) for v in row)
        ):
            raise VCRDataError(path, "expected [x1, y1, x2, y2, score]", field=f"boxes[{i}]")
        for v in row:
            if not abs(v) <= FLOAT32_MAX:  # NaN, inf, or beyond float32
                raise VCRDataError(
                    path, f"{v!r} is not a finite float32 number", field=f"boxes[{i}]"
                )
        x1, y1, x2, y2 = row[:4]
        if x2 < x1 or y2 < y1:
            raise VCRDataError(path, f"x2 < x1 or y2 < y1 in {row}", field=f"boxes[{i}]")
        rows.append(row[:4])
    return np.asarray(rows, dtype=np.float32).reshape(n, 4)


def _polygons(value: object, path: Path, field: str) -> list[np.ndarray]:
    if not isinstance(value, list):
        raise VCRDataError(path, "expected a list of polygons", field=field)
    out = []
    for j, poly in enumerate(value):
        try:
            with np.errstate(over="ignore"):  # beyond float32: inf, refused below
                arr = np.asarray(poly, dtype=np.float32)
        except OverflowError:  # an int beyond float64
            arr = np.full((1, 2), np.inf, dtype=np.float32)
        except (TypeError, ValueError):
            arr = None
        if arr is None or (arr.size and (arr.ndim != 2 or arr.shape[1] != 2)):
            raise VCRDataError(path, "expected a list of [x, y] points", field=f"{field}[{j}]")
        if not np.isfinite(arr).all():  # NaN, inf, or beyond float32 (read as inf)
            raise VCRDataError(
                path, "a point is not a finite float32 number", field=f"{field}[{j}]"
            )
        if len(arr) >= 3:  # degenerate polygons cover nothing
            out.append(arr)
    return out


def _item_error(item: VCRItem, field: str, problem: str) -> VCRDataError:
    path, _, line = item.source.rpartition(":")
    return VCRDataError(path, problem, line=int(line), field=field)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
