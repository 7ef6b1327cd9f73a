"""DAVIS metrics: J and F cross-checked with PyPI vos-benchmark; recall/decay by hand."""

import math
import os

import cv2
import numpy as np
import pytest

from vos_ros.core.labels import write_labels
from vos_ros.core.metrics import boundary_tolerance
from vos_ros.core.metrics import db_eval_iou
from vos_ros.core.metrics import db_statistics
from vos_ros.core.metrics import evaluate_sequence
from vos_ros.core.metrics import f_measure
from vos_ros.core.synthetic import make_clip

vb_evaluator = pytest.importorskip('vos_benchmark.evaluator')
vb_benchmark = pytest.importorskip('vos_benchmark.benchmark')


def _reference_frame(pred, gt):
    """Per-object (J, F) of one frame pair computed by vos-benchmark's Evaluator."""
    evaluator = vb_evaluator.Evaluator()
    evaluator.feed_frame(pred, gt)
    return ({k: v[0] for k, v in evaluator.object_iou.items()},
            {k: v[0] for k, v in evaluator.boundary_f.items()})


def _random_shapes(rng, shape, count):
    labels = np.zeros(shape, np.uint8)
    for object_id in range(1, count + 1):
        for _ in range(int(rng.integers(1, 4))):
            centre = (int(rng.integers(0, shape[1])), int(rng.integers(0, shape[0])))
            axes = (int(rng.integers(2, shape[1] // 3)), int(rng.integers(2, shape[0] // 3)))
            cv2.ellipse(labels, centre, axes, float(rng.uniform(0, 180)), 0, 360, object_id, -1)
    return labels


def _perturb(rng, labels):
    """A plausible prediction: per object shifted, eroded or dilated, with speckle noise."""
    pred = np.zeros_like(labels)
    for object_id in np.unique(labels):
        if object_id == 0:
            continue
        mask = (labels == object_id).astype(np.uint8)
        choice = rng.integers(0, 4)
        kernel = np.ones((int(rng.integers(2, 6)),) * 2, np.uint8)
        if choice == 0:
            mask = np.roll(mask, (int(rng.integers(-6, 7)), int(rng.integers(-6, 7))), (0, 1))
        elif choice == 1:
            mask = cv2.erode(mask, kernel)
        elif choice == 2:
            mask = cv2.dilate(mask, kernel)
        pred[mask > 0] = object_id
    speckle = rng.random(labels.shape) < 0.002
    pred[speckle] = rng.integers(0, 4, int(speckle.sum()))
    return pred


def _assert_frame_agrees(pred, gt):
    ref_j, ref_f = _reference_frame(pred, gt)
    assert ref_j, 'test needs at least one object'
    for object_id in ref_j:
        j = db_eval_iou(gt == object_id, pred == object_id)
        f = f_measure(pred == object_id, gt == object_id)
        assert abs(j - ref_j[object_id]) < 1e-6, (object_id, j, ref_j[object_id])
        assert abs(f - ref_f[object_id]) < 1e-6, (object_id, f, ref_f[object_id])


@pytest.mark.parametrize('seed', range(12))
@pytest.mark.parametrize('shape', [(48, 64), (61, 97), (120, 90)])
def test_random_shapes_agree_with_vos_benchmark(seed, shape):
    rng = np.random.default_rng(seed)
    gt = _random_shapes(rng, shape, int(rng.integers(1, 4)))
    pred = _random_shapes(rng, shape, int(rng.integers(1, 4))) if seed % 3 == 0 else \
        _perturb(rng, gt)
    _assert_frame_agrees(pred, gt)


@pytest.mark.parametrize('seed', range(3))
def test_realistic_masks_agree_with_vos_benchmark(seed):
    clip = make_clip(num_frames=6, width=200, height=150, num_objects=3, seed=seed)
    rng = np.random.default_rng(seed)
    for gt in clip.masks:
        _assert_frame_agrees(_perturb(rng, gt), gt)
        # Exact prediction and a prediction that misses everything.
        _assert_frame_agrees(gt.copy(), gt)
        _assert_frame_agrees(np.zeros_like(gt), gt)


@pytest.mark.parametrize('seed', range(6))
def test_small_objects_in_large_frames_agree_with_vos_benchmark(seed):
    # f_measure works on the window around both masks: small objects far from (and, for
    # some seeds, touching) the image edges exercise the window's margins and clipping
    rng = np.random.default_rng(100 + seed)
    gt = np.zeros((240, 427), np.uint8)
    for object_id in (1, 2):
        x = int(rng.integers(-10, 427)) if seed % 2 else int(rng.integers(40, 380))
        y = int(rng.integers(-10, 240)) if seed % 2 else int(rng.integers(40, 200))
        cv2.ellipse(gt, (x, y), (int(rng.integers(3, 30)), int(rng.integers(3, 30))),
                    float(rng.uniform(0, 180)), 0, 360, object_id, -1)
    if not gt.any():
        gt[0:5, 420:427] = 1
    # no speckle here (it would spread the window over the whole frame)
    pred = np.roll(gt, (int(rng.integers(-6, 7)), int(rng.integers(-6, 7))), (0, 1))
    pred = cv2.erode(pred, np.ones((3, 3), np.uint8)) if seed % 3 == 0 else pred
    _assert_frame_agrees(pred, gt)


def test_edge_cases_agree_with_vos_benchmark():
    gt = np.zeros((30, 40), np.uint8)
    gt[5:10, 5:10] = 1
    pred = np.zeros_like(gt)
    pred[20:25, 20:30] = 2  # predicts an object absent from the ground truth
    pred[29, :] = 1  # boundary row touching the image edge
    _assert_frame_agrees(pred, gt)
    assert db_eval_iou(np.zeros((5, 5)), np.zeros((5, 5))) == 1.0
    assert f_measure(np.zeros((5, 5)), np.zeros((5, 5))) == 1.0
    square = np.zeros((9, 9), bool)
    square[2:6, 2:6] = True
    assert f_measure(np.zeros((9, 9)), square) == 0.0
    assert f_measure(square, np.zeros((9, 9))) == 0.0


def test_boundary_tolerance_by_hand():
    # ceil(0.008 * diagonal): 854x480 -> ceil(7.84) = 8; 320x240 -> ceil(3.2) = 4.
    assert boundary_tolerance((480, 854)) == 8
    assert boundary_tolerance((240, 320)) == 4
    assert boundary_tolerance((240, 320), bound_th=3) == 3


def test_iou_by_hand():
    a = np.zeros((10, 10), bool)
    b = np.zeros((10, 10), bool)
    a[0:4, 0:5] = True  # 20 pixels
    b[2:6, 0:5] = True  # 20 pixels, 10 shared
    assert db_eval_iou(a, b) == pytest.approx(10 / 30)


def test_statistics_by_hand_eight_frames():
    values = [1, 1, 1, 1, 0, 0, 0, 0]
    mean, recall, decay = db_statistics(values)
    # Bins (davis2017 indices 0, 2, 4, 5, 7): first [1, 1, 1], last [0, 0, 0].
    assert mean == pytest.approx(0.5)
    assert recall == pytest.approx(0.5)
    assert decay == pytest.approx(1.0)


def test_statistics_by_hand_five_frames():
    values = [0.9, 0.8, 0.6, 0.4, 0.2]
    mean, recall, decay = db_statistics(values)
    # Bin edges 0..4: first bin frames 0-1 (0.85), last bin frames 3-4 (0.3).
    assert mean == pytest.approx(0.58)
    assert recall == pytest.approx(0.6)
    assert decay == pytest.approx(0.85 - 0.3)


def test_statistics_recall_is_strictly_above_half():
    _, recall, decay = db_statistics([0.5, 0.5, 0.51, 0.49])
    assert recall == pytest.approx(0.25)
    assert math.isfinite(decay)


def test_sequence_excludes_first_and_last_frames():
    gt = [np.zeros((20, 20), np.uint8) for _ in range(6)]
    for labels in gt:
        labels[4:12, 4:12] = 1
        labels[14:18, 2:19] = 2
    pred = [labels.copy() for labels in gt]
    pred[0][:] = 0
    pred[-1][:] = 2
    summary = evaluate_sequence(gt, pred)
    assert summary['object_ids'] == [1, 2]
    assert summary['J_frames'].shape == (2, 4)
    assert summary['J'] == pytest.approx(1.0)
    assert summary['F'] == pytest.approx(1.0)
    assert summary['JF'] == pytest.approx(1.0)
    pred[2][:] = 0
    summary = evaluate_sequence(gt, pred)
    # Scored J per object [1, 0, 1, 1]: mean 0.75, recall 0.75; bin indices 0, 1, 2, 2, 3
    # give a first bin [1, 0] and a last bin [1, 1], so decay = 0.5 - 1.
    assert summary['J'] == pytest.approx(0.75)
    assert summary['J_recall'] == pytest.approx(0.75)
    assert summary['J_decay'] == pytest.approx(-0.5)
    with pytest.raises(ValueError):
        evaluate_sequence(gt, pred[:-1])


def test_sequence_agrees_with_vos_benchmark_video(tmp_path):
    clip = make_clip(num_frames=10, width=160, height=120, num_objects=3, seed=11)
    rng = np.random.default_rng(0)
    preds = [_perturb(rng, gt) for gt in clip.masks]
    # vos-benchmark only scores an object from the first scored frame that shows it.
    assert set(np.unique(clip.masks[1]).tolist()) == {0, 1, 2, 3}
    for root, maps in (('gt', clip.masks), ('pred', preds)):
        for index, labels in enumerate(maps):
            write_labels(os.path.join(tmp_path, root, 'seq', f'{index:05d}.png'), labels)
    _, ref_iou, ref_f = vb_benchmark.VideoEvaluator(str(tmp_path / 'gt'),
                                                    str(tmp_path / 'pred'))('seq')
    summary = evaluate_sequence(clip.masks, preds)
    assert summary['object_ids'] == sorted(ref_iou)
    for row, object_id in enumerate(summary['object_ids']):
        assert summary['J_objects'][row] * 100 == pytest.approx(ref_iou[object_id], abs=1e-6)
        assert summary['F_objects'][row] * 100 == pytest.approx(ref_f[object_id], abs=1e-6)


# -- the one scoring rule of every tool (issue 17) --------------------------------------------


def _late_object_video(count=8, enters=4):
    """A disc throughout, a square entering at frame ``enters``; predictions track the disc."""
    truth, preds = [], []
    for index in range(count):
        labels = np.zeros((60, 80), np.uint8)
        cv2.circle(labels, (20 + 2 * index, 30), 10, 1, -1)
        if index >= enters:
            labels[10:30, 50:70] = 2
        truth.append(labels)
        preds.append(np.where(labels == 1, 1, 0).astype(np.uint8))
    return truth, preds


def test_evaluate_video_scores_the_annotated_objects_only():
    from vos_ros.core.metrics import evaluate_video

    truth, preds = _late_object_video()
    summary = evaluate_video(truth, preds, truth[0])
    assert summary['object_ids'] == [1]
    assert summary['unscored_objects'] == [2]
    assert summary['JF'] == pytest.approx(1.0)
    assert summary['frames'] == list(range(1, 7))  # first and last frame excluded
    # The old default (every id of any ground-truth frame) is what made the tools disagree.
    assert evaluate_sequence(truth, preds)['JF'] < 0.8


def test_evaluate_video_skips_unknown_and_missing_frames():
    from vos_ros.core.metrics import evaluate_video

    truth, preds = _late_object_video()
    sparse = [t if i % 2 == 0 else None for i, t in enumerate(truth)]
    assert evaluate_video(sparse, preds, truth[0])['frames'] == [2, 4, 6]
    preds[3] = np.zeros_like(preds[3])
    assert evaluate_video(truth, preds, truth[0])['JF'] < 1.0
    summary = evaluate_video(truth, preds, truth[0], skip=[3])
    assert summary['frames'] == [1, 2, 4, 5, 6] and summary['JF'] == pytest.approx(1.0)
    assert evaluate_video([truth[0], None, None], preds[:3], truth[0]) is None


def test_gap_in_first_frame_ids_has_no_phantom_object():
    """Ids {1, 3}: we score two objects; davis2017-evaluation would score a phantom 2."""
    from vos_ros.core.metrics import evaluate_video
    from vos_ros.core.metrics import scored_object_ids

    truth, preds = _late_object_video(enters=99)
    truth = [np.where(t == 1, 3, 0).astype(np.uint8) for t in truth]
    for labels in truth:
        labels[50:58, 70:78] = 1
    preds = [t.copy() for t in truth]
    preds[2][50:58, 70:78] = 0
    assert scored_object_ids(truth[0]) == [1, 3]
    summary = evaluate_video(truth, preds, truth[0])
    assert summary['object_ids'] == [1, 3]
    # A phantom object 2 (empty everywhere, J = F = 1) would lift the mean.
    phantom = evaluate_sequence(truth, preds, object_ids=[1, 2, 3])
    assert phantom['JF'] > summary['JF']
