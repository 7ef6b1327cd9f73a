"""DAVIS metrics computed exactly as davis2017-evaluation does.

J is region similarity (IoU), F the boundary F-measure with a tolerance of
ceil(0.008 * image diagonal) pixels. Per object and sequence: mean, recall (fraction of
frames above 0.5) and decay (mean of the first quarter minus the last quarter, 4 bins).
The first and last frames of a sequence are excluded, as in the official evaluation.
"""

import math
import warnings

import cv2
import numpy as np

# the parameters here are called object_ids: the function goes by another name
from vos_ros.core.labels import object_ids as _ids


def db_eval_iou(annotation, segmentation):
    """Return J (IoU) of two boolean masks; 1.0 when both are empty."""
    annotation = np.asarray(annotation).astype(bool)
    segmentation = np.asarray(segmentation).astype(bool)
    union = np.sum(annotation | segmentation, axis=(-2, -1))
    inters = np.sum(annotation & segmentation, axis=(-2, -1))
    with np.errstate(divide='ignore', invalid='ignore'):
        j = inters / union
    if np.ndim(j) == 0:
        return 1.0 if np.isclose(union, 0) else float(j)
    j[np.isclose(union, 0)] = 1.0
    return j


def seg2bmap(seg):
    """Return the one-pixel-wide boundary map of a binary mask (davis2017 ``_seg2bmap``)."""
    seg = np.asarray(seg).astype(bool)
    east = np.zeros_like(seg)
    south = np.zeros_like(seg)
    south_east = np.zeros_like(seg)
    east[:, :-1] = seg[:, 1:]
    south[:-1, :] = seg[1:, :]
    south_east[:-1, :-1] = seg[1:, 1:]
    boundary = seg ^ east | seg ^ south | seg ^ south_east
    boundary[-1, :] = seg[-1, :] ^ east[-1, :]
    boundary[:, -1] = seg[:, -1] ^ south[:, -1]
    boundary[-1, -1] = 0
    return boundary


def disk(radius):
    """Return a disk structuring element like ``skimage.morphology.disk``."""
    radius = int(radius)
    y, x = np.ogrid[-radius:radius + 1, -radius:radius + 1]
    return (x * x + y * y <= radius * radius).astype(np.uint8)


def boundary_tolerance(shape, bound_th=0.008):
    """Return the boundary tolerance in pixels for an image of ``shape`` (H, W)."""
    if bound_th >= 1:
        return bound_th
    return math.ceil(bound_th * math.hypot(shape[0], shape[1]))


def _object_window(masks, margin):
    """Return slices of the smallest window holding every True pixel of ``masks``, grown by
    ``margin`` pixels and clipped to the image; None when all masks are empty."""
    union = masks[0] | masks[1]
    rows = np.flatnonzero(union.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(union.any(axis=0))
    height, width = union.shape
    return (slice(max(rows[0] - margin, 0), min(rows[-1] + margin + 1, height)),
            slice(max(cols[0] - margin, 0), min(cols[-1] + margin + 1, width)))


def f_measure(foreground_mask, gt_mask, bound_th=0.008):
    """Return the boundary F-measure of a predicted and a ground-truth binary mask.

    Same result as davis2017-evaluation's ``f_measure``, computed on the window around both
    masks grown by 2 pixels: boundary pixels lie within one pixel of a mask, and matches are
    counted on boundary pixels only, so the dilations need nothing outside the window (2-3x
    faster on 480p frames, where scoring took a sixth of vos_eval's time).
    """
    foreground_mask = np.asarray(foreground_mask).astype(bool)
    gt_mask = np.asarray(gt_mask).astype(bool)
    bound_pix = boundary_tolerance(foreground_mask.shape, bound_th)
    window = _object_window((foreground_mask, gt_mask), 2)
    if window is None:
        return 1.0  # no boundary on either side
    foreground_mask = foreground_mask[window]
    gt_mask = gt_mask[window]
    fg_boundary = seg2bmap(foreground_mask)
    gt_boundary = seg2bmap(gt_mask)
    kernel = disk(bound_pix)
    fg_dil = cv2.dilate(fg_boundary.astype(np.uint8), kernel)
    gt_dil = cv2.dilate(gt_boundary.astype(np.uint8), kernel)
    gt_match = gt_boundary * fg_dil
    fg_match = fg_boundary * gt_dil
    n_fg = np.sum(fg_boundary)
    n_gt = np.sum(gt_boundary)
    if n_fg == 0 and n_gt > 0:
        precision, recall = 1.0, 0.0
    elif n_fg > 0 and n_gt == 0:
        precision, recall = 0.0, 1.0
    elif n_fg == 0 and n_gt == 0:
        precision, recall = 1.0, 1.0
    else:
        precision = np.sum(fg_match) / float(n_fg)
        recall = np.sum(gt_match) / float(n_gt)
    if precision + recall == 0:
        return 0.0
    return float(2 * precision * recall / (precision + recall))


def db_statistics(per_frame_values):
    """Return (mean, recall, decay) of per-frame values as davis2017-evaluation does."""
    values = np.asarray(per_frame_values, dtype=np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', category=RuntimeWarning)
        mean = np.nanmean(values)
        recall = np.nanmean(values > 0.5)
        n_bins = 4
        # The official code casts these indices to uint8; int keeps them right past 256 frames.
        ids = (np.round(np.linspace(1, len(values), n_bins + 1) + 1e-10) - 1).astype(int)
        bins = [values[ids[i]:ids[i + 1] + 1] for i in range(n_bins)]
        decay = np.nanmean(bins[0]) - np.nanmean(bins[3])
    return float(mean), float(recall), float(decay)


def evaluate_sequence(gt_labels, pred_labels, object_ids=None):
    """Score one sequence of label maps (lists of H×W arrays, same length).

    Returns a dict with per-object per-frame arrays ``J_frames``/``F_frames`` (objects ×
    frames, first and last frame excluded) and the summary ``J``, ``F``, ``JF``,
    ``J_recall``, ``J_decay``, ``F_recall``, ``F_decay`` as fractions (0..1) averaged over
    objects. ``object_ids`` defaults to the ids present in any ground-truth frame.
    """
    if len(gt_labels) != len(pred_labels):
        raise ValueError(f'{len(gt_labels)} ground-truth frames but {len(pred_labels)} '
                         'predicted frames')
    if object_ids is None:
        present = set()
        for gt in gt_labels:
            present.update(_ids(gt))
        object_ids = sorted(present)
    frames = range(1, len(gt_labels) - 1) if len(gt_labels) > 2 else range(len(gt_labels))
    j_frames = np.zeros((len(object_ids), len(frames)))
    f_frames = np.zeros((len(object_ids), len(frames)))
    for column, index in enumerate(frames):
        gt = np.asarray(gt_labels[index])
        pred = np.asarray(pred_labels[index])
        if gt.shape != pred.shape:
            raise ValueError(f'frame {index}: prediction {pred.shape} and ground truth '
                             f'{gt.shape} differ in size')
        for row, object_id in enumerate(object_ids):
            j_frames[row, column] = db_eval_iou(gt == object_id, pred == object_id)
            f_frames[row, column] = f_measure(pred == object_id, gt == object_id)
    summary = {'J_frames': j_frames, 'F_frames': f_frames, 'object_ids': list(object_ids)}
    stats = {name: [db_statistics(row) for row in table]
             for name, table in (('J', j_frames), ('F', f_frames))}
    for name in ('J', 'F'):
        rows = np.array(stats[name]) if stats[name] else np.zeros((0, 3))
        summary[name] = float(rows[:, 0].mean()) if len(rows) else float('nan')
        summary[name + '_recall'] = float(rows[:, 1].mean()) if len(rows) else float('nan')
        summary[name + '_decay'] = float(rows[:, 2].mean()) if len(rows) else float('nan')
        summary[name + '_objects'] = rows[:, 0].tolist()
    summary['JF'] = (summary['J'] + summary['F']) / 2.0
    return summary


def scored_object_ids(annotation):
    """Return the ids a video is scored on: the objects of the mask the tracker was given.

    davis2017-evaluation instead counts 1..max id of the first frame, so first-frame ids
    {1, 3} give it a phantom object 2 (empty in every frame, scoring J = F = 1 wherever the
    prediction has no 2); objects that enter later without a mask were never given to the
    tracker, so no tool scores them.
    """
    return _ids(annotation)


def evaluate_video(ground_truth, predictions, annotation, skip=()):
    """Score one video by the package's one rule (vos_eval, vos_bag_eval and vos_demo use it).

    ``ground_truth``: per frame a label map or None (no ground truth); ``predictions``: per
    frame a label map; ``annotation``: the label map the tracker was given on the first frame.

    * objects: :func:`scored_object_ids` of ``annotation``; ids that appear in the ground
      truth but not in it (objects entering later) are listed in ``unscored_objects`` and not
      scored;
    * frames: those with ground truth, except the video's first and last frame (as
      davis2017-evaluation) and the indices in ``skip`` (frames whose answer is unknown).

    Returns None when no frame or no object is left, else the dict of
    :func:`evaluate_sequence` plus ``frames`` (the scored indices) and ``unscored_objects``.
    """
    count = len(predictions)
    if len(ground_truth) != count:
        raise ValueError(f'{len(ground_truth)} ground-truth entries but {count} predictions')
    object_ids = scored_object_ids(annotation)
    skip = set(skip)
    first, stop = (1, count - 1) if count > 2 else (1, count)
    frames = [i for i in range(first, stop) if ground_truth[i] is not None and i not in skip]
    if not frames or not object_ids:
        return None
    pad = np.zeros(np.asarray(predictions[frames[0]]).shape, np.uint8)
    # evaluate_sequence drops its lists' first and last entries (the davis rule): pad both.
    summary = evaluate_sequence([pad] + [ground_truth[i] for i in frames] + [pad],
                                [pad] + [predictions[i] for i in frames] + [pad],
                                object_ids=object_ids)
    present = set()
    for labels in ground_truth:
        if labels is not None:
            present.update(_ids(labels))
    summary['frames'] = frames
    summary['unscored_objects'] = sorted(present - set(object_ids))
    return summary
