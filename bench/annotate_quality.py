"""First-frame annotation quality: the box model beside GrabCut, box only and 1/3/5 clicks.

Images: the first frame (``--frame``) of every sequence in the given DAVIS-layout roots
(``--sequences-file`` limits them; the box model's hold-out is ``bench/memory_holdout.txt``)
and the last ``--ecssd-last`` images of an ECSSD folder (``--ecssd``; the box model never
trained on them). The box is the tight bounding box of the ground truth (``--loosen`` grows
it). Clicks are simulated as interactive-segmentation benchmarks do: each next click at the
centre of the largest error region, positive on missed object, negative on wrong background.
The model refines its last mask with each click (as the window does); GrabCut takes all
clicks at once (as ``annotate --box … --points …`` did before the model). Prints per-image IoU
and time, then mean and worst per method and data set. ``--cli N`` also times the
``annotate`` command itself (process start-up included) on the first N images.

    .venv/bin/python bench/annotate_quality.py ../shared/data/davis2016/train \
        --sequences-file bench/memory_holdout.txt --ecssd ../shared/data/ecssd \
        --methods grabcut,model --cli 8
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

import cv2
import numpy as np

from vos_ros.core.annotation import check_box
from vos_ros.core.annotation import grabcut_rect
from vos_ros.core.davis import Dataset
from vos_ros.core.davis import read_image
from vos_ros.core.errors import VosError
from vos_ros.core.interactive import iou
from vos_ros.core.interactive import next_click
from vos_ros.core.interactive import PromptSegmenter
from vos_ros.core.labels import read_labels
from vos_ros.tools.cli import progress_bar

REPORTED_CLICKS = (1, 3, 5)


def first_frames(roots, frame=0, names=None):
    """Yield ``(set, name, image_path, image, truth)`` for a frame of every sequence."""
    for root in roots:
        dataset = Dataset(root)
        for name in dataset.sequence_names():
            if names and name not in names:
                continue
            sequence = dataset.sequence(name)
            yield ('davis', name, sequence.frame_paths[frame], sequence.read_frame(frame),
                   sequence.read_mask(frame) > 0)


def ecssd_images(root, last):
    """Yield the last ``last`` ECSSD images by name (the box model's image hold-out)."""
    from vos_ros.tools.train_box import ecssd_holdout_items

    for image_path, mask_path in ecssd_holdout_items(root, last):
        yield ('ecssd', os.path.basename(image_path), image_path, read_image(image_path),
               cv2.imread(mask_path, cv2.IMREAD_GRAYSCALE) > 127)


def read_names(path):
    with open(path, encoding='utf-8') as handle:
        return {line.split('#', 1)[0].strip() for line in handle} - {''}


def tight_box(truth, loosen=0.0):
    ys, xs = np.nonzero(truth)
    pad_x = loosen * (xs.max() - xs.min() + 1)
    pad_y = loosen * (ys.max() - ys.min() + 1)
    return check_box((xs.min() - pad_x, ys.min() - pad_y, xs.max() + pad_x, ys.max() + pad_y),
                     truth.shape[1], truth.shape[0])


def run_method(segmenter, method, image, truth, box, clicks):
    """Return ([IoU after 0..clicks clicks], box seconds, [click seconds])."""
    start = time.perf_counter()
    if method == 'cv2':
        mask = grabcut_rect(image, box)
    else:
        mask = segmenter.box(image, box)
    box_time = time.perf_counter() - start
    scores, click_times, done = [iou(mask, truth)], [], []
    for _ in range(clicks if method != 'cv2' else 0):
        click = next_click(mask, truth)
        if click is None:
            scores.append(1.0)
            continue
        done.append((click[0], click[1], int(click[2])))
        start = time.perf_counter()
        if method == 'model':
            mask = segmenter.refine(image, done, box=box, previous=mask)
        else:
            mask = segmenter.clicks(image, done, box=box)
        click_times.append(time.perf_counter() - start)
        scores.append(iou(mask, truth))
    return scores, box_time, click_times


def cli_times(items, count, out_dir):
    """Time ``annotate --image F --box B --out O`` (new process each) on the first items."""
    exe = shutil.which('annotate', path=os.path.dirname(sys.executable)) or 'annotate'
    rows = []
    for _, name, path, image, truth in items[:count]:
        box = tight_box(truth)
        out = os.path.join(out_dir, f'{name}.png')
        start = time.perf_counter()
        result = subprocess.run([exe, '--image', path, '--box', ','.join(map(str, box)),
                                 '--out', out, '--force'], capture_output=True, text=True)
        seconds = time.perf_counter() - start
        if result.returncode != 0:
            print(f'{name}: annotate failed: {result.stderr.strip()}', file=sys.stderr)
            continue
        labels = read_labels(out)
        rows.append((name, iou(labels > 0, truth), seconds, labels.shape == truth.shape))
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('roots', nargs='*', help='DAVIS-layout dataset folders')
    parser.add_argument('--sequences-file', help='only these sequences of the roots')
    parser.add_argument('--ecssd', help='ECSSD folder: its last --ecssd-last images are used')
    parser.add_argument('--ecssd-last', type=int, default=50, help='ECSSD images (last by name)')
    parser.add_argument('--methods', default='grabcut,model',
                        help='comma list of cv2 (plain cv2.grabCut, box only), grabcut '
                             '(vos_ros GrabCut, the fallback), model (the box model)')
    parser.add_argument('--model', default=None, help='box model file (default: shipped)')
    parser.add_argument('--clicks', type=int, default=5, help='simulated clicks per image')
    parser.add_argument('--frame', type=int, default=0, help='frame index of DAVIS sequences')
    parser.add_argument('--loosen', type=float, default=0.0,
                        help='grow the tight box by this fraction of its size on every side')
    parser.add_argument('--threads', type=int, default=0, help='torch threads (0 = default)')
    parser.add_argument('--no-flip', action='store_true',
                        help='model without its mirror-image test-time augmentation')
    parser.add_argument('--crop-size', type=int, default=0,
                        help='run the model on crops of this side (0 = its metadata)')
    parser.add_argument('--cli', type=int, default=0, metavar='N',
                        help='also time the annotate command (start-up included) on N images')
    args = parser.parse_args(argv)
    methods = [m for m in args.methods.split(',') if m]
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    try:
        names = read_names(args.sequences_file) if args.sequences_file else None
        items = list(first_frames(args.roots, args.frame, names))
        if args.ecssd:
            items += list(ecssd_images(args.ecssd, args.ecssd_last))
    except (VosError, OSError) as error:
        print(f'error: {error}', file=sys.stderr)
        return 1
    items = [item for item in items if item[4].any()]
    if not items:
        print('error: no images with an object', file=sys.stderr)
        return 1
    segmenters = {m: PromptSegmenter('grabcut' if m == 'cv2' else m, args.model)
                  for m in methods}
    start = time.perf_counter()
    if 'model' in segmenters:
        model = segmenters['model'].model
        model.flip = not args.no_flip
        model.size = args.crop_size or model.size
        print(f'model {model.path} ({model.meta.get("version")}) loaded in '
              f'{time.perf_counter() - start:.2f} s; crop {model.size}, flip {model.flip}')
    results = {m: [] for m in methods}
    for data, name, _, image, truth in progress_bar(items, desc='images', leave=False):
        box = tight_box(truth, args.loosen)
        for method in methods:
            results[method].append(run_method(segmenters[method], method, image, truth, box,
                                              args.clicks))
    shown = [k for k in REPORTED_CLICKS if k <= args.clicks]
    header = f'{"image":24s}' + ''.join(
        f' {m[:7] + ":box":>11s}' + ''.join(f' {f"{k}cl":>5s}' for k in shown) for m in methods)
    print(header)
    for index, (data, name, *_rest) in enumerate(items):
        line = f'{data[0]}:{name:22s}'
        for method in methods:
            scores = results[method][index][0]
            line += f' {scores[0]:11.3f}' + ''.join(
                f' {scores[k]:5.3f}' if k < len(scores) else f' {"-":>5s}' for k in shown)
        print(line)
    print()
    print(f'{"summary":28s} {"n":>3s} {"box mean":>8s} {"worst":>6s}'
          + ''.join(f' {f"{k}cl mean":>8s}' for k in shown)
          + f' {"t_box s":>7s} {"t_click s":>9s}')
    for data in ('davis', 'ecssd', 'all'):
        chosen = [i for i, item in enumerate(items) if data in ('all', item[0])]
        if not chosen:
            continue
        for method in methods:
            rows = [results[method][i] for i in chosen]
            box_scores = np.array([r[0][0] for r in rows])
            line = (f'{data + " " + method:28s} {len(rows):3d} {box_scores.mean():8.3f} '
                    f'{box_scores.min():6.3f}')
            for k in shown:
                values = [r[0][k] for r in rows if k < len(r[0])]
                line += f' {np.mean(values):8.3f}' if values else f' {"-":>8s}'
            clicks = [t for r in rows for t in r[2]]
            line += (f' {np.mean([r[1] for r in rows]):7.3f}'
                     f' {np.mean(clicks) if clicks else float("nan"):9.3f}')
            print(line)
    if args.cli > 0:
        with tempfile.TemporaryDirectory() as out_dir:
            rows = cli_times(items, args.cli, out_dir)
        print()
        print(f'annotate command (new process per image, start-up included), '
              f'{len(rows)} images:')
        for name, score, seconds, same_size in rows:
            print(f'  {name:22s} IoU {score:.3f}  {seconds:5.2f} s'
                  f'{"" if same_size else "  WRONG SIZE"}')
        if rows:
            times = [r[2] for r in rows]
            print(f'  mean IoU {np.mean([r[1] for r in rows]):.3f}, time mean {np.mean(times):.2f}'
                  f' s, max {max(times):.2f} s')
    return 0


if __name__ == '__main__':
    sys.exit(main())
