"""Tests of vos_ros.core.annotation: box, clicks and scribbles to masks, on synthetic images."""

import cv2
import numpy as np
import pytest

from vos_ros.core.annotation import box_to_mask
from vos_ros.core.annotation import check_box
from vos_ros.core.annotation import geodesic_distance
from vos_ros.core.annotation import labels_from_masks
from vos_ros.core.annotation import points_to_mask
from vos_ros.core.annotation import refine_mask
from vos_ros.core.annotation import sides_touched


def iou(a, b):
    return np.logical_and(a, b).sum() / max(np.logical_or(a, b).sum(), 1)


def bbox(mask):
    ys, xs = np.nonzero(mask)
    return int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())


def scene(seed=0, height=120, width=160):
    """A noisy two-colour background with a textured ellipse object; returns (rgb, truth)."""
    rng = np.random.default_rng(seed)
    image = rng.normal(0, 8, (height, width, 3))
    image += np.array([90.0, 140.0, 90.0])
    image[:, width // 2:] += np.array([60.0, -40.0, 30.0])
    truth = np.zeros((height, width), np.uint8)
    cv2.ellipse(truth, (width // 2 - 5, height // 2), (30, 22), 20, 0, 360, 1, -1)
    truth = truth > 0
    image[truth] = rng.normal(0, 8, (int(truth.sum()), 3)) + np.array([200.0, 60.0, 50.0])
    return np.clip(image, 0, 255).astype(np.uint8), truth


def test_box_to_mask_finds_the_object():
    image, truth = scene()
    mask = box_to_mask(image, bbox(truth))
    assert mask.shape == truth.shape and mask.dtype == bool
    assert iou(mask, truth) > 0.85


def test_box_to_mask_rejects_background_that_enters_the_box():
    # A bar of a unique colour crosses the box and continues outside it: plain rectangle
    # GrabCut learns it as foreground; the geodesic start must keep it out.
    image, truth = scene(seed=1)
    bar = np.zeros(truth.shape, bool)
    bar[:, 40:50] = True
    bar &= ~truth
    image[bar] = (30, 30, 200)
    mask = box_to_mask(image, bbox(truth))
    assert iou(mask, truth) > 0.8
    assert (mask & bar).sum() < 0.2 * bar[truth.any(axis=1)].sum()


def test_box_to_mask_is_repeatable():
    image, truth = scene(seed=2)
    box = bbox(truth)
    assert np.array_equal(box_to_mask(image, box), box_to_mask(image, box))


def test_uniform_image_falls_back_to_a_mask_inside_the_box():
    image = np.full((60, 80, 3), 120, np.uint8)
    box = (20, 10, 59, 49)
    mask = box_to_mask(image, box)
    assert mask.any()
    assert not mask[:, :20].any() and not mask[:, 60:].any()
    assert not mask[:10].any() and not mask[50:].any()


def test_box_touching_image_border():
    image, truth = scene(seed=3)
    shifted = np.roll(image, -50, axis=1)
    truth = np.roll(truth, -50, axis=1)
    assert truth[:, 0].any()
    assert iou(box_to_mask(shifted, bbox(truth)), truth) > 0.75


@pytest.mark.parametrize('box, message', [
    ((200, 10, 300, 50), 'outside'),
    ((-50, -50, -1, -1), 'outside'),
    ((10, 10, 10, 40), 'too small'),
    (('a', 1, 2, 3), 'four numbers'),
])
def test_check_box_rejects(box, message):
    with pytest.raises(ValueError, match=message):
        check_box(box, 160, 120)


def test_check_box_orders_and_clips():
    assert check_box((50, 60, -5, 10), 40, 30) == (0, 10, 39, 29)


def test_clicks_alone_mark_the_object():
    image, truth = scene(seed=4)
    ys, xs = np.nonzero(truth)
    centre = (int(xs.mean()), int(ys.mean()))
    mask = points_to_mask(image, [(centre[0], centre[1], 1), (5, 5, 0)])
    assert mask[centre[1], centre[0]]
    assert not mask[5, 5]
    assert iou(mask, truth) > 0.7


def test_clicks_with_box_force_pixels():
    image, truth = scene(seed=5)
    outside = (bbox(truth)[0] + 1, bbox(truth)[1] + 1)
    assert not truth[outside[1], outside[0]]
    mask = points_to_mask(image, [(outside[0], outside[1], 1)], box=bbox(truth))
    assert mask[outside[1], outside[0]]


@pytest.mark.parametrize('points, message', [
    ([(5, 5, 0)], 'positive'),
    ([(500, 5, 1)], 'outside'),
    ([(5, 5, 2)], 'label'),
    ([(5, 5)], 'x,y,label'),
])
def test_bad_clicks(points, message):
    image, _ = scene()
    with pytest.raises(ValueError, match=message):
        points_to_mask(image, points)


def test_refine_adds_and_removes_from_scribbles():
    image, truth = scene(seed=6)
    partial = truth.copy()
    cut = bbox(truth)[0] + 25
    partial[:, cut:] = False
    positive = np.zeros_like(truth)
    ys, xs = np.nonzero(truth[:, cut:])
    positive[ys[len(ys) // 2], xs[len(xs) // 2] + cut] = True
    positive = cv2.dilate(positive.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    grown = refine_mask(image, partial, positive, np.zeros_like(truth))
    assert iou(grown, truth) > iou(partial, truth) + 0.2
    spill = truth | (np.abs(np.arange(truth.shape[1]) - 10)[None, :] < 6)
    negative = np.zeros_like(truth)
    negative[60, 8:13] = True
    cleaned = refine_mask(image, spill, np.zeros_like(truth), negative)
    assert iou(cleaned, truth) > iou(spill, truth) + 0.1


def test_refine_checks_shapes():
    image, truth = scene()
    with pytest.raises(ValueError, match='shape'):
        refine_mask(image, truth[:10], truth, truth)


def test_geodesic_distance_on_uniform_image_is_manhattan():
    features = np.zeros((9, 11, 3), np.float32)
    seeds = np.zeros((9, 11), bool)
    seeds[4, 5] = True
    distance = geodesic_distance(features, seeds)
    yy, xx = np.mgrid[0:9, 0:11]
    assert np.allclose(distance, 0.1 * (np.abs(yy - 4) + np.abs(xx - 5)), atol=1e-5)


def test_geodesic_distance_is_blocked_by_edges():
    features = np.zeros((10, 20, 1), np.float32)
    features[:, 10:] = 100.0
    seeds = np.zeros((10, 20), bool)
    seeds[:, 0] = True
    distance = geodesic_distance(features, seeds, tau=3.0)
    assert distance[:, 9].max() < 1.0
    assert distance[:, 10].min() > 90.0


def test_sides_touched():
    mask = np.zeros((50, 50), bool)
    mask[10:40, 20:30] = True
    assert sides_touched(mask, (20, 10, 29, 39)) == 4
    assert sides_touched(mask, (0, 10, 49, 39)) == 2
    assert sides_touched(np.zeros_like(mask), (0, 0, 49, 49)) == 0


def test_labels_from_masks_smaller_object_wins():
    big = np.zeros((20, 20), bool)
    big[2:18, 2:18] = True
    small = np.zeros((20, 20), bool)
    small[8:12, 8:12] = True
    labels = labels_from_masks((20, 20), [(2, small), (7, big)])
    assert labels.dtype == np.uint8
    assert (labels[small] == 2).all()
    assert (labels[big & ~small] == 7).all()
    assert (labels[~big] == 0).all()
    with pytest.raises(ValueError, match='1..255'):
        labels_from_masks((20, 20), [(0, big)])
