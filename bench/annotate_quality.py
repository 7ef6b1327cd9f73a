"""Box-only annotation quality: vos_ros box_to_mask against plain cv2.grabCut, same run.

For the first frame of every sequence in the given DAVIS-layout roots, the box is the tight
bounding box of the ground-truth mask (all objects together, as DAVIS-2016 has one). Prints
per-sequence IoU and time for both methods, the means and the time ratio.

    .venv/bin/python bench/annotate_quality.py ../shared/data/davis2016/train \
        ../shared/data/davis2016/examples
"""

import argparse
import sys
import time

import numpy as np
from tqdm import tqdm

from vos_ros.core.annotation import box_to_mask
from vos_ros.core.annotation import check_box
from vos_ros.core.annotation import grabcut_rect
from vos_ros.core.davis import Dataset
from vos_ros.core.errors import VosError
from vos_ros.core.metrics import db_eval_iou


def first_frames(roots, frame=0):
    """Yield ``(name, image, gt_bool)`` for frame ``frame`` of every sequence under the roots."""
    for root in roots:
        dataset = Dataset(root)
        for name in dataset.sequence_names():
            sequence = dataset.sequence(name)
            yield name, sequence.read_frame(frame), sequence.read_mask(frame) > 0


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('roots', nargs='+', help='DAVIS-layout dataset folders')
    parser.add_argument('--iterations', type=int, default=5, help='GrabCut iterations (both)')
    parser.add_argument('--frame', type=int, default=0, help='frame index to annotate')
    parser.add_argument('--loosen', type=float, default=0.0,
                        help='grow the tight box by this fraction of its size on every side '
                             '(a hand-drawn box is rarely tight)')
    args = parser.parse_args(argv)
    rows = []
    try:
        items = list(first_frames(args.roots, args.frame))
    except VosError as error:
        print(f'error: {error}', file=sys.stderr)
        return 1
    for name, image, truth in tqdm(items, desc='sequences', leave=False):
        if not truth.any():
            continue
        ys, xs = np.nonzero(truth)
        pad_x = args.loosen * (xs.max() - xs.min() + 1)
        pad_y = args.loosen * (ys.max() - ys.min() + 1)
        box = check_box((xs.min() - pad_x, ys.min() - pad_y, xs.max() + pad_x,
                         ys.max() + pad_y), truth.shape[1], truth.shape[0])
        start = time.perf_counter()
        baseline = grabcut_rect(image, box, args.iterations)
        time_baseline = time.perf_counter() - start
        start = time.perf_counter()
        ours = box_to_mask(image, box, args.iterations)
        time_ours = time.perf_counter() - start
        rows.append((name, db_eval_iou(truth, baseline), db_eval_iou(truth, ours),
                     time_baseline, time_ours))
    print(f'{"sequence":22s} {"grabcut":>8s} {"vos_ros":>8s} {"t_gc":>6s} {"t_ours":>6s}')
    for name, iou_gc, iou_ours, t_gc, t_ours in rows:
        print(f'{name:22s} {iou_gc:8.3f} {iou_ours:8.3f} {t_gc:6.2f} {t_ours:6.2f}')
    table = np.array([row[1:] for row in rows], dtype=np.float64)
    mean = table.mean(axis=0)
    print(f'{"mean (" + str(len(rows)) + ")":22s} {mean[0]:8.3f} {mean[1]:8.3f} '
          f'{mean[2]:6.2f} {mean[3]:6.2f}')
    print(f'mean IoU gain over GrabCut: {mean[1] - mean[0]:+.3f}; time ratio ours/grabcut: '
          f'{mean[3] / max(mean[2], 1e-9):.2f}; sequences improved: '
          f'{int((table[:, 1] > table[:, 0] + 0.01).sum())}, worse: '
          f'{int((table[:, 1] < table[:, 0] - 0.01).sum())}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
