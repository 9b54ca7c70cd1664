"""R2C's object handling: relevant detections, tag tokens, names, boxes on the canvas, masks."""

from __future__ import annotations

import numpy as np
import pytest

from vcrnet.data.grounding import (
    CLASS_INDEX,
    GENDER_NEUTRAL_NAMES,
    fit_image,
    ground_item,
    make_mask,
    relevant_objects,
    scale_boxes,
)
from vcrnet.data.records import VCRItem
from vcrnet.errors import VCRDataError


def item(objects, question, answers=None, rationales=None) -> VCRItem:
    return VCRItem(
        annot_id="val-0",
        objects=objects,
        img_fn="m/a.jpg",
        metadata_fn="m/a.json",
        question=question,
        answer_choices=answers or [["yes"]] * 4,
        rationale_choices=rationales or [["because"]] * 4,
        answer_label=0,
        rationale_label=0,
        source="val.jsonl:7",
    )


OBJECTS = ["person", "dog", "person", "car", "person"]


def test_keeps_mentioned_detections_from_question_and_every_choice():
    it = item(
        OBJECTS,
        ["Is", [1], "happy", "?"],
        answers=[["No"], [[3]], ["yes"], ["no"]],
        rationales=[["x"], ["y"], ["z"], [[1, 4], "run"]],
    )
    assert relevant_objects(it) == [1, 3, 4]


def test_everyone_adds_all_persons_and_nothing_mentioned_falls_back_to_persons():
    assert relevant_objects(item(OBJECTS, ["Is", "Everyone", "near", [3], "?"])) == [0, 2, 3, 4]
    assert relevant_objects(item(OBJECTS, ["What", "happens", "?"])) == [0, 2, 4]


def test_each_tag_int_is_a_token_with_names_for_persons_and_classes_otherwise():
    it = item(OBJECTS, ["Are", [0, 1, 4], "friends", "?"])
    g = ground_item(it)
    assert g.kept == [0, 1, 4]
    assert g.classes == [
        CLASS_INDEX["__background__"],
        CLASS_INDEX["person"],
        CLASS_INDEX["dog"],
        CLASS_INDEX["person"],
    ]
    # object 0 is the whole image; kept detections are 1..3; person names by new index
    assert g.question.words == [
        "Are",
        GENDER_NEUTRAL_NAMES[1],
        "dog",
        GENDER_NEUTRAL_NAMES[3],
        "friends",
        "?",
    ]
    assert g.question.tags == [0, 1, 2, 3, 0, 0]
    assert g.answers[0].tags == [0]  # untagged words go to the whole image


def test_unknown_class_names_the_field():
    with pytest.raises(VCRDataError, match=r"val.jsonl:7: objects\[1\]: unknown class 'robot'"):
        ground_item(item(["person", "robot"], ["Is", [1], "on", "?"]))


def test_fit_keeps_aspect_and_centres():
    fit = fit_image(1920, 797)  # a real VCR size into R2C's 768x384
    assert fit.scale == pytest.approx(0.4)
    assert (fit.resized_width, fit.resized_height) == (768, 319)
    assert (fit.left, fit.top) == (0, 32)
    assert fit.window.tolist() == [0, 32, 768, 351]
    tall = fit_image(300, 600)
    assert (tall.resized_width, tall.resized_height, tall.left, tall.top) == (192, 384, 288, 0)
    small = fit_image(200, 100)  # smaller images are scaled up, as R2C does
    assert small.scale == pytest.approx(3.84) and small.resized_width == 768


def test_boxes_move_with_the_image():
    fit = fit_image(1920, 797)
    boxes = np.array([[0, 0, 1920, 797], [100, 200, 300, 400]], dtype=np.float32)
    assert np.allclose(scale_boxes(boxes, fit), [[0, 32, 768, 350.8], [40, 112, 120, 192]])


def test_mask_of_a_polygon():
    box = np.array([0, 0, 14, 14], dtype=np.float32)
    square = np.array([[0, 0], [7, 0], [7, 14], [0, 14]], dtype=np.float32)  # the left half
    mask = make_mask(box, [square])
    assert mask.shape == (14, 14) and mask.dtype == np.float32
    assert mask[:, :7].all() and not mask[:, 7:].any()
    triangle = np.array([[0, 0], [14, 0], [0, 14]], dtype=np.float32)  # upper-left triangle
    tri = make_mask(box, [triangle])
    assert tri[0, 0] == 1 and tri[13, 13] == 0 and tri.sum() == pytest.approx(91, abs=8)
    assert make_mask(box, [square, triangle]).sum() > mask.sum()  # a union of polygons
    assert make_mask(box, []).sum() == 0


def test_mask_of_a_real_sized_polygon_with_hundreds_of_points():
    t = np.linspace(0, 2 * np.pi, 600, endpoint=False)
    circle = np.stack([960 + 300 * np.cos(t), 400 + 300 * np.sin(t)], axis=1)
    mask = make_mask(np.array([660, 100, 1260, 700]), [circle])
    area = mask.sum() / mask.size
    assert area == pytest.approx(np.pi / 4, abs=0.05)
    assert mask[7, 7] == 1 and mask[0, 0] == 0
