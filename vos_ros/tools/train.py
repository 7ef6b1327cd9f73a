"""``vos_train``: train a pixel-embedding (PML) or a space-time memory model (``--kind memory``).

Each training sample is a pair of frames of one sequence (reference and query) with their
masks. The loss is PML's nearest-neighbour triplet loss: for every sampled query pixel, the
nearest reference pixel of its own object must be closer than the nearest one of any other
object (or the background) by a margin. That is exactly the rule the ``embedding`` backend
applies at run time, so the training metric (nearest-neighbour pair IoU) predicts tracking.

Sampling is a pure function of (seed, sample index), so runs are reproducible, resumable
(``--resume``) and identical whatever the number of data-loading workers. Under ``torchrun``
(WORLD_SIZE > 1) every rank draws its own indices and the model is wrapped in
DistributedDataParallel; only rank 0 writes files.
"""

import argparse
import csv
import gc
import json
import math
import os
import signal
import sys
import tempfile
import time

import cv2
import numpy as np

from vos_ros.core.davis import Dataset
from vos_ros.core.davis import fit_labels
from vos_ros.core.davis import read_sequences_file
from vos_ros.core.errors import DataError
from vos_ros.core.errors import ModelError
from vos_ros.core.errors import VosError
from vos_ros.tools.cli import check_out_folder
from vos_ros.tools.cli import progress_bar
from vos_ros.tools.cli import ToolParser
from vos_ros.tools.export import error_text

#: Input normalisation (ImageNet statistics, 0..255 scale) stored in the model's metadata.
MEAN = (123.675, 116.28, 103.53)
STD = (58.395, 57.12, 57.375)
CSV_FIELDS = ('iteration', 'epoch', 'loss', 'nn_acc', 'pair_iou', 'val_pair_iou', 'lr',
              'elapsed_s')
#: Exit code of a run stopped before the end of its schedule (SIGTERM, --max-minutes) with its
#: checkpoint saved: EX_TEMPFAIL of sysexits.h ("try again"), so a script loops until done.
EXIT_STOPPED = 75
#: Exit code after Ctrl-C (128 + SIGINT), the checkpoint saved or not.
EXIT_INTERRUPTED = 130
#: What a stop request is called in the line that reports it.
CTRL_C = 'Ctrl-C'


def build_parser():
    """Return the argument parser of vos_train."""
    parser = ToolParser(
        prog='vos_train', description=__doc__.split('\n\n')[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('--kind', choices=('embedding', 'memory'), default='embedding',
                        help='model kind: PML pixel embeddings, or the space-time memory '
                             'network on ImageNet MobileNetV2 (train_memory.py)')
    parser.add_argument('data', nargs='*',
                        help='DAVIS-layout dataset folders (JPEGImages/480p/<seq>, '
                             'Annotations/480p/<seq>, every frame annotated)')
    parser.add_argument('--sequences-file', default=None,
                        help='train only on the sequences listed here (one per line; a name '
                             'that is not in the data folders is an error, as in the two '
                             'options below)')
    parser.add_argument('--exclude-file', action='append', default=None,
                        help='never train on the sequences listed here (your hold-out); '
                             'repeatable')
    parser.add_argument('--val-file', default=None,
                        help='sequences (in the data folders) scored for val_pair_iou '
                             '(embedding model only)')
    parser.add_argument('--synthetic', type=int, default=0,
                        help='number of procedural synthetic clips to add to the data')
    parser.add_argument('--synthetic-ratio', type=float, default=0.3,
                        help='share of samples drawn from synthetic clips when both kinds exist')
    parser.add_argument('--epochs', type=int, default=10, help='epochs to train in total')
    parser.add_argument('--iters-per-epoch', type=int, default=500,
                        help='iterations per epoch (samples are drawn at random)')
    parser.add_argument('--batch-size', type=int, default=8, help='frame pairs per iteration '
                        '(per process under torchrun)')
    parser.add_argument('--lr', type=float, default=2e-3, help='peak learning rate (AdamW)')
    parser.add_argument('--crop', type=int, default=192, help='training crop side (pixels)')
    parser.add_argument('--resolution', type=int, default=240,
                        help='frames are loaded with this shorter side (pixels)')
    parser.add_argument('--embedding-dim', type=int, default=32, help='embedding size D')
    parser.add_argument('--width', type=float, default=1.0, help='channel width multiplier')
    parser.add_argument('--margin', type=float, default=0.3, help='triplet margin')
    parser.add_argument('--ref-pixels', type=int, default=512,
                        help='reference pixels sampled per pair')
    parser.add_argument('--anchor-pixels', type=int, default=512,
                        help='query pixels sampled per pair')
    parser.add_argument('--checkpoint-every', type=int, default=200,
                        help='write a checkpoint every N iterations (and at each epoch end)')
    parser.add_argument('--keep-checkpoints', type=int, default=3,
                        help='how many numbered checkpoints to keep (last.pt is always kept)')
    parser.add_argument('--log-every', type=int, default=10,
                        help='append averaged metrics to metrics.csv every N iterations')
    parser.add_argument('--resume', default=None,
                        help='checkpoint to continue from ("last" = OUT/last.pt if it exists); '
                             "the architecture options must be the checkpoint's")
    parser.add_argument('--init', default=None, metavar='MODEL',
                        help='start a new run from the weights of an exported model of the '
                             "same kind and architecture options (vos_export's file, e.g. "
                             'vos_ros/data/memory.pt); a checkpoint --resume finds comes first')
    parser.add_argument('--device', default='auto', help='auto, cpu, cuda or cuda:N')
    parser.add_argument('--workers', type=int, default=0, help='data-loading processes')
    parser.add_argument('--threads', type=int, default=0,
                        help='torch CPU threads (0 = torch default)')
    parser.add_argument('--max-minutes', type=float, default=0.0,
                        help='stop (with a checkpoint, exit code 75) after this much wall time; '
                             '0 = no limit')
    parser.add_argument('--seed', type=int, default=0, help='seed of all sampling')
    memory = parser.add_argument_group('memory model (--kind memory)')
    memory.add_argument('--static', action='append', default=None, metavar='DIR',
                        help='ECSSD-layout folder (images/, masks/) of static images turned '
                             'into pseudo-videos; repeatable')
    memory.add_argument('--static-iters', type=int, default=0,
                        help='first iterations on static images only (pre-training)')
    memory.add_argument('--static-ratio', type=float, default=0.2,
                        help='share of static-image clips after pre-training')
    memory.add_argument('--clip-frames', type=int, default=3, help='frames per training clip')
    memory.add_argument('--max-objects', type=int, default=2, help='objects per clip at most')
    memory.add_argument('--min-skip', type=int, default=5,
                        help='largest frame gap in a clip when video training starts')
    memory.add_argument('--max-skip', type=int, default=15,
                        help='largest frame gap in a clip at the end of training')
    memory.add_argument('--key-dim', type=int, default=64, help='key channels')
    memory.add_argument('--value-dim', type=int, default=128, help='value channels')
    memory.add_argument('--top-k', type=int, default=20, help='memory read-out top-k')
    memory.add_argument('--backbone-lr-scale', type=float, default=0.1,
                        help='learning-rate factor of the stride-16 encoder stage (0 = frozen)')
    memory.add_argument('--inference-resolution', type=int, default=240,
                        help='shorter side the exported model runs at by default')
    parser.add_argument('--out', default='out/train', help='output folder')
    return parser


# -- data ------------------------------------------------------------------------------------


def _resize_pair(image, labels, resolution):
    height, width = image.shape[:2]
    scale = resolution / min(height, width)
    if resolution <= 0 or scale >= 1.0:
        return image, labels
    size = (max(1, int(round(width * scale))), max(1, int(round(height * scale))))
    return (cv2.resize(image, size, interpolation=cv2.INTER_AREA),
            cv2.resize(labels, size, interpolation=cv2.INTER_NEAREST))


def load_davis_sequences(root, names, resolution, progress=True):
    """Load whole sequences (frames + masks) at ``resolution``; DataError names bad files."""
    dataset = Dataset(root)
    sequences = []
    for name in progress_bar(names, desc=f'loading {os.path.basename(os.path.normpath(root))}',
                             enabled=progress, unit='seq'):
        sequence = dataset.sequence(name)
        frames, masks = [], []
        for index in range(len(sequence)):
            image = sequence.read_frame(index)
            path = sequence.mask_path(index)
            if not os.path.isfile(path):
                raise DataError(f'missing mask {path}: training needs a mask for every frame')
            labels = sequence.read_mask(index)
            labels = fit_labels(labels, image.shape[:2], path)
            image, labels = _resize_pair(image, labels, resolution)
            frames.append(image)
            masks.append(labels)
        sequences.append({'name': f'{root}:{name}', 'frames': frames, 'masks': masks,
                          'synthetic': False})
    return sequences


def make_synthetic_sequences(count, seed, resolution):
    """Return ``count`` procedural clips (vos_ros.core.synthetic) as training sequences."""
    from vos_ros.core.synthetic import clip_stream

    height = max(32, resolution)
    width = int(round(height * 4 / 3))
    stream = clip_stream(seed=seed + 7919, num_frames=16, width=width, height=height)
    sequences = []
    for index in range(count):
        clip = next(stream)
        sequences.append({'name': f'synthetic{index:04d}', 'frames': clip.frames,
                          'masks': clip.masks, 'synthetic': True})
    return sequences


def _sample_pixels(rng, labels, allowed, count):
    """Sample ``count`` flat indices of pixels whose label is in ``allowed``, class-balanced."""
    flat = labels.reshape(-1)
    mask = np.isin(flat, allowed)
    if not mask.any():
        return np.zeros(count, np.int64), False
    present, counts = np.unique(flat[mask], return_counts=True)
    weight = np.zeros(256)
    weight[present] = 1.0 / counts
    probs = weight[flat] * mask
    probs /= probs.sum()
    return rng.choice(flat.size, size=count, replace=True, p=probs).astype(np.int64), True


def crop_window(rng, labels, crop, scale, object_p, spread, max_angle=0.0):
    """Return the affine map (2×3) from a frame to a crop of side ``crop`` at ``scale``.

    With probability ``object_p`` (when ``labels`` show an object) the crop is centred on the
    objects' centroid plus a normal offset of ``crop / scale / spread``, else anywhere; it stays
    inside the frame where possible. ``max_angle`` > 0 adds a random rotation (degrees).
    """
    height, width = labels.shape
    side = crop / scale
    ys, xs = np.nonzero(labels)
    if xs.size and rng.random() < object_p:
        centre = np.array([xs.mean(), ys.mean()]) + rng.normal(0, side / spread, 2)
    else:
        centre = np.array([rng.uniform(0, width), rng.uniform(0, height)])
    # keep the window inside the frame where possible (borders replicate otherwise)
    centre[0] = np.clip(centre[0], min(side / 2, width / 2), max(width - side / 2, width / 2))
    centre[1] = np.clip(centre[1], min(side / 2, height / 2),
                        max(height - side / 2, height / 2))
    angle = rng.uniform(-max_angle, max_angle) if max_angle else 0.0
    matrix = cv2.getRotationMatrix2D((float(centre[0]), float(centre[1])), angle, scale)
    matrix[:, 2] += crop / 2 - centre
    return matrix


def warp_pair(image, labels, matrix, crop, flip, label_border=cv2.BORDER_REFLECT):
    """Warp a frame (reflected borders) and its labels by ``matrix`` into a ``crop`` square.

    Labels outside the frame are reflected too, or 0 with ``cv2.BORDER_CONSTANT``; ``flip``
    mirrors both. Returns contiguous arrays.
    """
    size = (crop, crop)
    image = cv2.warpAffine(image, matrix, size, flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_REFLECT)
    labels = cv2.warpAffine(labels, matrix, size, flags=cv2.INTER_NEAREST,
                            borderMode=label_border, borderValue=0)
    if flip:
        image, labels = image[:, ::-1], labels[:, ::-1]
    return np.ascontiguousarray(image), np.ascontiguousarray(labels)


class PairDataset:
    """Sample ``index`` -> one augmented (reference, query) pair; a pure function of index."""

    def __init__(self, sequences, crop, stride, seed, ref_pixels, anchor_pixels,
                 synthetic_ratio=0.3, augment=True):
        if not sequences:
            raise DataError('no training sequences: give DAVIS folders and/or --synthetic N')
        if crop % 16:
            raise ValueError(f'--crop must be a multiple of 16, got {crop}')
        self.sequences = [s for s in sequences if len(s['frames']) >= 1]
        self.real = [i for i, s in enumerate(self.sequences) if not s['synthetic']]
        self.synth = [i for i, s in enumerate(self.sequences) if s['synthetic']]
        self.crop = crop
        self.stride = stride
        self.seed = seed
        self.ref_pixels = ref_pixels
        self.anchor_pixels = anchor_pixels
        self.synthetic_ratio = synthetic_ratio
        self.augment = augment
        self.mean = np.array(MEAN, np.float32)
        self.std = np.array(STD, np.float32)

    def __len__(self):
        return 2 ** 62

    def _pick_sequence(self, rng):
        if self.real and self.synth:
            pool = self.synth if rng.random() < self.synthetic_ratio else self.real
        else:
            pool = self.real or self.synth
        return self.sequences[pool[int(rng.integers(len(pool)))]]

    def _colour(self, rng, image):
        image = image.astype(np.float32)
        if self.augment:
            gain = rng.uniform(0.7, 1.3) * rng.uniform(0.9, 1.1, 3)
            image = (image - 128.0) * rng.uniform(0.7, 1.3) + 128.0
            image = image * gain + rng.uniform(-20, 20)
            if rng.random() < 0.3:
                image = cv2.GaussianBlur(image, (0, 0), rng.uniform(0.5, 1.5))
        image = np.clip(image, 0, 255)
        return ((image - self.mean) / self.std).transpose(2, 0, 1).astype(np.float32)

    def __getitem__(self, index):
        rng = np.random.default_rng([self.seed, int(index)])
        sequence = self._pick_sequence(rng)
        count = len(sequence['frames'])
        ref = int(rng.integers(count))
        query = int(rng.integers(count)) if count > 1 else ref
        if query == ref and count > 1:
            query = (ref + 1 + int(rng.integers(count - 1))) % count
        scale = rng.uniform(0.7, 1.3) if self.augment else 1.0
        flip = bool(self.augment and rng.random() < 0.5)
        base = crop_window(rng, sequence['masks'][query], self.crop, scale, 0.8, 4,
                           10.0 if self.augment else 0.0)
        out = {}
        for key, frame, jitter in (('ref', ref, True), ('query', query, False)):
            matrix = base.copy()
            if jitter and self.augment:
                # the two frames see slightly different windows, as a moving camera would
                matrix[:, 2] += rng.normal(0, self.crop / 12, 2)
                matrix[:, :2] *= rng.uniform(0.9, 1.1)
            image, labels = warp_pair(sequence['frames'][frame], sequence['masks'][frame],
                                      matrix, self.crop, flip)
            small = labels[self.stride // 2::self.stride, self.stride // 2::self.stride]
            out[key + '_image'] = self._colour(rng, image)
            out[key + '_labels'] = np.ascontiguousarray(small).astype(np.int64)
        ref_classes = np.unique(out['ref_labels'])
        ref_idx, ok_ref = _sample_pixels(rng, out['ref_labels'], ref_classes, self.ref_pixels)
        anchor_idx, ok_anchor = _sample_pixels(rng, out['query_labels'], ref_classes,
                                               self.anchor_pixels)
        out['ref_idx'] = ref_idx
        out['anchor_idx'] = anchor_idx
        # a pair teaches nothing unless the reference shows an object and the background
        out['valid'] = bool(ok_ref and ok_anchor and len(ref_classes) >= 2)
        return out


class IndexSampler:
    """Indices of iterations ``start..stop-1`` for one rank (``batch`` per iteration)."""

    def __init__(self, start, stop, batch, rank=0, world=1):
        self.start, self.stop, self.batch, self.rank, self.world = start, stop, batch, rank, world

    def __iter__(self):
        for iteration in range(self.start, self.stop):
            base = (iteration * self.world + self.rank) * self.batch
            yield from range(base, base + self.batch)

    def __len__(self):
        return max(0, self.stop - self.start) * self.batch


# -- loss ------------------------------------------------------------------------------------


def nn_triplet_loss(ref_emb, query_emb, batch, margin):
    """PML nearest-neighbour triplet loss and metrics for a batch of pairs.

    Returns (loss, nn_acc, pair_iou): nn_acc is the share of sampled query pixels whose nearest
    reference pixel has the right label; pair_iou is the mean object IoU of nearest-neighbour
    labels over every query pixel.
    """
    import torch

    n, dim = ref_emb.shape[:2]
    ref_flat = ref_emb.reshape(n, dim, -1)
    query_flat = query_emb.reshape(n, dim, -1)
    ref_labels = batch['ref_labels'].reshape(n, -1)
    query_labels = batch['query_labels'].reshape(n, -1)
    ref_idx, anchor_idx = batch['ref_idx'], batch['anchor_idx']
    refs = torch.gather(ref_flat, 2, ref_idx[:, None, :].expand(-1, dim, -1))
    anchors = torch.gather(query_flat, 2, anchor_idx[:, None, :].expand(-1, dim, -1))
    ref_lab = torch.gather(ref_labels, 1, ref_idx)
    anchor_lab = torch.gather(query_labels, 1, anchor_idx)
    # unit vectors: squared distance = 2 - 2 cos
    dist = 2.0 - 2.0 * torch.einsum('bda,bdr->bar', anchors, refs)
    same = anchor_lab[:, :, None] == ref_lab[:, None, :]
    inf = torch.tensor(float('inf'), device=dist.device, dtype=dist.dtype)
    d_pos = torch.where(same, dist, inf).min(dim=2).values
    d_neg = torch.where(same, inf, dist).min(dim=2).values
    valid = batch['valid'][:, None] & torch.isfinite(d_pos) & torch.isfinite(d_neg)
    hinge = torch.relu(d_pos - d_neg + margin)
    count = valid.sum()
    loss = (hinge * valid).sum() / count.clamp(min=1)
    with torch.no_grad():
        acc = ((d_pos < d_neg) & valid).sum().float() / count.clamp(min=1)
        full = 2.0 - 2.0 * torch.einsum('bdq,bdr->bqr', query_flat, refs)
        pred = torch.gather(ref_lab, 1, full.argmin(dim=2))
        ious = []
        for b in range(n):
            if not bool(batch['valid'][b]):
                continue
            for label in torch.unique(ref_lab[b]).tolist():
                if label == 0:
                    continue
                p, g = pred[b] == label, query_labels[b] == label
                union = (p | g).sum()
                ious.append(float((p & g).sum() / union) if union > 0 else 1.0)
        iou = float(np.mean(ious)) if ious else float('nan')
    return loss, float(acc), iou


# -- training --------------------------------------------------------------------------------


def _collate(items):
    import torch

    out = {}
    for key in items[0]:
        values = [item[key] for item in items]
        if key == 'valid':
            out[key] = torch.tensor(values, dtype=torch.bool)
        else:
            out[key] = torch.from_numpy(np.stack(values))
    return out


def _read_names(path, what):
    names = read_sequences_file(path)
    if not names:
        raise DataError(f'{what} {path} lists no sequences')
    return names


def _not_found(datasets, names):
    """Why no data folder holds the sequences ``names``, as ``Dataset.sequence`` says it."""
    if not datasets:
        return f'sequence {", ".join(map(repr, names))} not found: no DAVIS folder given'
    others = [dataset.root for dataset in datasets[1:]]
    reasons = []
    for name in names:
        try:
            datasets[0].sequence(name)
            reasons.append(f'sequence {name!r} not found')  # not reached: it has no folder
        except DataError as error:
            reasons.append(str(error) + (f' (nor in {", ".join(others)})' if others else ''))
    return '; '.join(reasons)


def listed_sequences(roots, sequences_file=None, exclude_files=(), val_file=None):
    """Return (names to train on or None for all, names excluded, validation names).

    Read from the list files (``davis.read_sequences_file``); DataError for a file that lists
    nothing, and one naming every listed sequence that no folder of ``roots`` holds: a typo in
    a hold-out list would otherwise train on the hold-out, silently. No frame is read.
    """
    if isinstance(exclude_files, str):
        exclude_files = [exclude_files]
    files = [('--sequences-file', sequences_file)] if sequences_file else []
    files += [('--exclude-file', path) for path in exclude_files or []]
    files += [('--val-file', val_file)] if val_file else []
    listed = [(option, path, _read_names(path, option)) for option, path in files]
    datasets = [Dataset(root) for root in roots]
    present = set(name for dataset in datasets for name in dataset.sequence_names())
    unknown = []
    for option, path, names in listed:
        missing = [name for name in dict.fromkeys(names) if name not in present]
        if missing:
            unknown.append(f'{option} {path}: {_not_found(datasets, missing)}')
    if unknown:
        raise DataError('; '.join(unknown))
    include = set(listed[0][2]) if sequences_file else None
    exclude = set(name for option, _, names in listed if option == '--exclude-file'
                  for name in names)
    val_names = set(listed[-1][2]) if val_file else set()
    return include, exclude, val_names


def gather_sequences(args, progress, validation=True, required=True, listed=None):
    """Return (train sequences, validation sequences, description of the training data).

    ``validation`` False ignores ``--val-file`` (no validation sequences); ``required`` False
    returns an empty training list rather than raising DataError. ``listed``: what
    :func:`listed_sequences` returned for ``args``, when checked already.
    """
    if listed is None:
        listed = listed_sequences(args.data, args.sequences_file, args.exclude_file,
                                  args.val_file if validation else None)
    include, exclude, val_names = listed
    train, val, described = [], [], []
    for root in args.data:
        names = Dataset(root).sequence_names()
        chosen = [n for n in names if (include is None or n in include) and n not in exclude
                  and n not in val_names]
        train += load_davis_sequences(root, chosen, args.resolution, progress)
        held_out = [n for n in names if n in val_names]
        if held_out:
            val += load_davis_sequences(root, held_out, args.resolution, progress)
        described.append({'root': os.path.abspath(root), 'sequences': chosen})
    if args.synthetic > 0:
        train += make_synthetic_sequences(args.synthetic, args.seed, args.resolution)
        described.append({'synthetic_clips': args.synthetic})
    if required and not train:
        raise DataError('no training sequences: give DAVIS folders and/or --synthetic N')
    return train, val, described


def _lr_at(iteration, total, peak):
    warmup = min(200, max(1, total // 20))
    if iteration < warmup:
        return peak * (iteration + 1) / warmup
    progress = (iteration - warmup) / max(1, total - warmup)
    return peak * (0.02 + 0.98 * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress))))


def _save_atomic(obj, path):
    import torch

    tmp = path + '.tmp'
    torch.save(obj, tmp)
    os.replace(tmp, path)


def write_curves(csv_path, png_path, loss_title='triplet loss',
                 metrics=('nn_acc', 'pair_iou', 'val_pair_iou'),
                 metrics_title='nearest-neighbour metrics'):
    """Plot the loss and the ``metrics`` columns (0-1) of metrics.csv into a PNG."""
    import matplotlib
    matplotlib.use('Agg')
    from matplotlib import pyplot

    rows = _read_csv(csv_path)
    if not rows:
        return
    its = [int(r['iteration']) for r in rows]

    def column(name):
        return [float(r[name]) if r.get(name) not in (None, '') else float('nan') for r in rows]

    figure, axes = pyplot.subplots(1, 2, figsize=(10, 4))
    axes[0].plot(its, column('loss'))
    axes[0].set_title(loss_title)
    axes[0].set_xlabel('iteration')
    for name in metrics:
        values = column(name)
        points = [(i, v) for i, v in zip(its, values) if not math.isnan(v)]
        if points:
            axes[1].plot(*zip(*points), marker='.' if name.startswith('val') else None,
                         label=name)
    axes[1].set_title(metrics_title)
    axes[1].set_xlabel('iteration')
    axes[1].set_ylim(0, 1)
    axes[1].legend()
    figure.tight_layout()
    figure.savefig(png_path, dpi=80)
    pyplot.close(figure)


def _read_csv(path):
    if not os.path.isfile(path):
        return []
    with open(path, newline='', encoding='utf-8') as handle:
        return list(csv.DictReader(handle))


#: The command that trains each model kind (what a message about a checkpoint suggests).
TRAINERS = {'embedding': 'vos_train', 'memory': 'vos_train --kind memory',
            'box': 'vos_train_box'}


def _exported_model_error(path, kind):
    """DataError for an exported model given to --resume, saying what to do instead."""
    from vos_ros.core.model_io import read_metadata

    try:
        meta = read_metadata(path)
    except ModelError:
        return None  # a checkpoint (or no model file at all): torch.load says which
    what = f'{path} is an exported model (TorchScript), not a training checkpoint'
    if meta['kind'] == 'box':
        # vos_export freezes a box network: batch norm folded, no weights left to train
        return DataError(f'{what}: an exported box model cannot be trained further; '
                         'continue its training checkpoint (OUT/last.pt) instead')
    if meta['kind'] != kind:
        return DataError(f'{what}, and of kind {meta["kind"]}: train that kind with '
                         f'{TRAINERS[meta["kind"]]}')
    return DataError(f'{what}: start a new run from its weights with --init {path}')


def load_resume_checkpoint(args, kind=None):
    """Return ``(checkpoint dict or None, its path)`` for ``--resume`` (``last`` = OUT/last.pt
    when it exists); DataError names a missing or unreadable file, an exported model, or a
    checkpoint of another model ``kind`` (None: any)."""
    import torch

    from vos_ros.core.model_io import load_checkpoint

    path = args.resume
    if path == 'last':
        candidate = os.path.join(args.out, 'last.pt')
        path = candidate if os.path.isfile(candidate) else None
    if not path:
        return None, None
    if not os.path.isfile(path):
        raise DataError(f'checkpoint to resume not found: {path}')
    refusal = _exported_model_error(path, kind)
    if refusal is not None:
        raise refusal
    try:
        checkpoint = load_checkpoint(path)  # a TorchScript archive: refused below
    except Exception as error:
        raise DataError(f'cannot read checkpoint {path}: {error_text(error)}') from error
    if isinstance(checkpoint, torch.jit.ScriptModule):
        raise DataError(f'{path} is a TorchScript model, not a training checkpoint')
    if not isinstance(checkpoint, dict) or 'state_dict' not in checkpoint:
        raise DataError(f'{path} is not a training checkpoint (no state_dict)')
    found = (checkpoint.get('meta') or {}).get('kind', 'embedding')
    if kind is not None and found != kind:
        raise DataError(f'{path} is a checkpoint of kind {found}, not {kind}: resume it with '
                        f'{TRAINERS.get(found, "the tool that wrote it")}')
    return checkpoint, path


def check_counts(args):
    """Raise ValueError unless the epoch, batch, checkpoint and log counts are >= 1."""
    for name in ('epochs', 'iters_per_epoch', 'batch_size', 'checkpoint_every', 'log_every'):
        if getattr(args, name) < 1:
            raise ValueError(f'--{name.replace("_", "-")} must be >= 1')


def check_out_path(path, option='--out', folder=True):
    """Raise ValueError unless ``path``, an output ``folder`` (else a file), can be written.

    Folders missing on the way are fine (they are made later), but the nearest existing one must
    be a folder that takes a new entry: tried by making and removing a temporary folder there
    (``os.access`` says yes to root, even in /proc). Checked before any work, leaving nothing
    behind: ``os.makedirs`` or the first save would otherwise fail late, with a traceback.
    """
    if folder:
        check_out_folder(path, option)
    elif os.path.isdir(path):
        raise ValueError(f'{option} {path} is a folder, expected a model file path')
    existing = os.path.abspath(path)
    if not folder:
        existing = os.path.dirname(existing)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise ValueError(f'{option} {path}: {existing} is a file, not a folder')
    try:
        tempfile.TemporaryDirectory(dir=existing).cleanup()
    except OSError as error:
        raise ValueError(f'{option} {path}: cannot write in {existing} '
                         f'({error.strerror or error_text(error)})') from None
    if not folder and os.path.isfile(path) and not os.access(path, os.W_OK):
        raise ValueError(f'{option} {path}: the file is not writable')


def _options(model_kwargs, keys):
    """``--key-dim 64 --top-k 20``: ``model_kwargs`` as the options that set them."""
    return ' '.join(f'--{key.replace("_", "-")} {model_kwargs.get(key)}' for key in keys)


def check_architecture(found_arch, found_kwargs, arch, model_kwargs, what, resume=False):
    """Raise DataError unless ``what`` (a checkpoint, a model) has the asked architecture.

    Its options are compared with the command's: the weights fit only the network they were
    trained in, and config.json would record options the run does not use. ``what`` reads
    '--resume PATH was trained with' (and ``resume`` is True) or '--init PATH has'.
    """
    if found_arch != arch:
        raise DataError(f'{what} the {found_arch!r} network; this command trains {arch!r}')
    found_kwargs = found_kwargs or {}
    differ = sorted(key for key in set(found_kwargs) | set(model_kwargs)
                    if found_kwargs.get(key) != model_kwargs.get(key))
    if differ:
        note = (' (architecture options cannot change on resume; schedule options such as '
                '--epochs can)') if resume else ''
        raise DataError(f'{what} {_options(found_kwargs, differ)}, this command gives '
                        f'{_options(model_kwargs, differ)}: give the same values{note}')


def load_init_weights(path, kind, arch, model_kwargs):
    """Return ``(state dict, provenance)`` of the exported model ``--init`` names.

    A TorchScript module has the parameters and buffers of the network it was made from, so
    its ``state_dict()`` loads into the network built from the ``arch`` and ``model_kwargs``
    its ``vos.json`` records (``vos_export`` writes them). DataError when the file is not such
    a model, is of another kind, or has another architecture than the command asks for.
    """
    from vos_ros.core.model_io import jit_load
    from vos_ros.core.model_io import read_metadata

    try:
        meta = read_metadata(path)
    except ModelError as error:
        raise DataError(f'--init needs an exported model: {error}') from error
    if meta['kind'] != kind:
        raise DataError(f'--init {path} is a model of kind {meta["kind"]}, this run trains '
                        f'kind {kind} (kind {meta["kind"]}: {TRAINERS[meta["kind"]]})')
    if 'arch' not in meta or 'model_kwargs' not in meta:
        raise DataError(f'--init {path}: its vos.json records no architecture (arch, '
                        'model_kwargs): only a model vos_export made from a training '
                        'checkpoint can be trained further')
    check_architecture(meta['arch'], meta['model_kwargs'], arch, model_kwargs,
                       f'--init {path} has')
    try:
        state = jit_load(path, 'cpu').state_dict()
    except Exception as error:  # torch raises RuntimeError and friends with long messages
        raise DataError(f'--init: cannot load {path}: {error_text(error)}') from error
    return state, {'path': os.path.abspath(path), 'version': meta.get('version')}


def starting_weights(args, kind, arch, model_kwargs):
    """Return ``(checkpoint or None, state dict or None, --init provenance or None)``.

    A checkpoint ``--resume`` finds comes first (so ``--init M --resume last`` starts from M
    once, then continues), then ``--init``'s model; either must have the architecture the
    command asks for. A resumed run keeps the provenance its checkpoint recorded.
    """
    checkpoint, path = load_resume_checkpoint(args, kind)
    if checkpoint is not None:
        check_architecture(checkpoint.get('arch'), checkpoint.get('model_kwargs'), arch,
                           model_kwargs, f'--resume {path} was trained with', resume=True)
        return checkpoint, checkpoint['state_dict'], (checkpoint.get('meta') or {}).get('init')
    if getattr(args, 'init', None):
        state, provenance = load_init_weights(args.init, kind, arch, model_kwargs)
        return None, state, provenance
    return None, None, None


def resumed_model(state, arch, model_kwargs, build, device):
    """Return ``build(arch, model_kwargs)`` with the weights ``state`` (None: as built)."""
    model = build(arch, model_kwargs)
    if state is not None:
        try:
            model.load_state_dict(state)
        except RuntimeError as error:
            raise DataError(f'the weights do not fit the {arch!r} network: '
                            f'{error_text(error)}') from error
    model.to(device)
    return model


def resume_optimizer(optimizer, checkpoint):
    """Load the checkpoint's optimizer state; return the iteration to start from (0 if new)."""
    if checkpoint is None:
        return 0
    optimizer.load_state_dict(checkpoint['optimizer'])
    return int(checkpoint['iteration'])


class RunningMeans:
    """Means of per-iteration metrics since the last metrics.csv row.

    NaN values of the ``skip_nan`` metrics (an IoU with no object to score) are left out; a
    metric without any value reads ``''``.
    """

    def __init__(self, names, skip_nan=()):
        self.names, self.skip_nan = tuple(names), set(skip_nan)
        self._sums = dict.fromkeys(self.names, 0.0)
        self._counts = dict.fromkeys(self.names, 0)

    def add(self, **values):
        """Add one iteration's values."""
        for name, value in values.items():
            if name in self.skip_nan and math.isnan(value):
                continue
            self._sums[name] += value
            self._counts[name] += 1

    def take(self):
        """Return the means by name, and start again."""
        means = {name: self._sums[name] / self._counts[name] if self._counts[name] else ''
                 for name in self.names}
        self._sums = dict.fromkeys(self.names, 0.0)
        self._counts = dict.fromkeys(self.names, 0)
        return means


class StopRequests:
    """Why a training loop should stop early: SIGTERM, Ctrl-C, or ``max_minutes`` passed.

    The signals only set a flag, so the loop stops after a whole iteration and saves it (an
    exception raised inside an optimizer step could leave half the weights updated). A
    second Ctrl-C raises KeyboardInterrupt at once, for a loop that does not get there.
    :meth:`close` gives both signals back to their previous handlers. Main thread only.
    """

    def __init__(self, max_minutes=0.0):
        self.max_minutes = max_minutes
        self.started = time.monotonic()
        self._signals = []
        self._previous = {number: signal.signal(number, self._handle)
                          for number in (signal.SIGTERM, signal.SIGINT)}

    def _handle(self, number, frame):
        if number == signal.SIGINT and signal.SIGINT in self._signals:
            raise KeyboardInterrupt
        self._signals.append(number)

    def reason(self):
        """None, or the stop's name in messages: 'SIGTERM', 'Ctrl-C' or '--max-minutes'."""
        if self._signals:
            return CTRL_C if self._signals[0] == signal.SIGINT else 'SIGTERM'
        if self.max_minutes > 0 and time.monotonic() - self.started > self.max_minutes * 60.0:
            return '--max-minutes'
        return None

    def close(self):
        """Give SIGTERM and SIGINT back to their previous handlers."""
        for number, previous in self._previous.items():
            # None: the handler was not set from Python; the default is what stands then
            signal.signal(number, signal.SIG_DFL if previous is None else previous)


def stopped_line(prog, iteration, total, reason, path):
    """The line that says a run stopped early, and the option that continues it."""
    return (f'{prog}: stopped at iteration {iteration} of {total} ({reason}): continue with '
            f'--resume last; checkpoint {path}')


def stopped_code(reason):
    """Exit code of a run stopped early and saved: 130 after Ctrl-C, else EXIT_STOPPED."""
    return EXIT_INTERRUPTED if reason == CTRL_C else EXIT_STOPPED


class RunOutput:
    """What a training run writes in ``--out``, and when it should stop.

    config.json, metrics.csv (rows after the resumed iteration dropped, then one row a
    :meth:`log`), TensorBoard scalars when tensorboard is installed, numbered checkpoints (the
    last ``--keep-checkpoints`` kept) with last.pt and ``curves(csv, png)`` at each
    :meth:`save`. ``write`` False (ranks other than 0) writes nothing. :meth:`stop_reason`
    says why the run should stop (``StopRequests``); :meth:`close` restores the signal handlers.
    """

    def __init__(self, args, meta, checkpoint, start, fields, curves, write=True):
        self.args, self.meta, self.fields, self.curves = args, meta, fields, curves
        self.write = write
        self.csv_path = os.path.join(args.out, 'metrics.csv')
        self.png_path = os.path.join(args.out, 'curves.png')
        self.ckpt_dir = os.path.join(args.out, 'checkpoints')
        self.writer = None
        if write:
            os.makedirs(self.ckpt_dir, exist_ok=True)
            _prepare_csv(self.csv_path, start, fields)
            with open(os.path.join(args.out, 'config.json'), 'w', encoding='utf-8') as handle:
                json.dump({'args': vars(args), 'meta': meta}, handle, indent=2)
            try:
                from torch.utils.tensorboard import SummaryWriter
                self.writer = SummaryWriter(os.path.join(args.out, 'tensorboard'))
            except ImportError:  # tensorboard is optional
                self.writer = None
        self.stops = StopRequests(args.max_minutes)
        self.started = time.monotonic()
        self.elapsed_before = float(checkpoint.get('elapsed_s', 0.0)) if checkpoint else 0.0

    def elapsed(self):
        """Training seconds so far, the runs before a resume included."""
        return self.elapsed_before + time.monotonic() - self.started

    def stop_reason(self):
        """None, or why the run should stop now (SIGTERM, Ctrl-C, ``--max-minutes``)."""
        return self.stops.reason()

    def log(self, iteration, metrics, scalars):
        """Append a metrics.csv row, and the non-empty ``scalars`` to TensorBoard.

        The row is ``metrics`` with the iteration, the epoch and the elapsed seconds added.
        """
        if not self.write:
            return
        row = dict(metrics, iteration=iteration, elapsed_s=round(self.elapsed(), 1),
                   epoch=f'{iteration / self.args.iters_per_epoch:.3f}')
        with open(self.csv_path, 'a', newline='', encoding='utf-8') as handle:
            csv.DictWriter(handle, fieldnames=self.fields).writerow(row)
        if self.writer is not None:
            for key in scalars:
                if row[key] != '':
                    self.writer.add_scalar(key, float(row[key]), iteration)

    def save(self, iteration, model, optimizer):
        """Write the checkpoint of ``iteration`` (architecture from the meta) and the curves."""
        if not self.write:
            return
        args = self.args
        state = {'arch': self.meta['arch'], 'model_kwargs': self.meta['model_kwargs'],
                 'state_dict': model.state_dict(), 'optimizer': optimizer.state_dict(),
                 'iteration': iteration, 'epoch': iteration / args.iters_per_epoch,
                 'meta': self.meta, 'args': vars(args), 'elapsed_s': self.elapsed()}
        _save_atomic(state, os.path.join(self.ckpt_dir, f'ckpt_{iteration:07d}.pt'))
        _save_atomic(state, os.path.join(args.out, 'last.pt'))
        old = sorted(n for n in os.listdir(self.ckpt_dir) if n.startswith('ckpt_'))
        for name in old[:-args.keep_checkpoints] if args.keep_checkpoints > 0 else []:
            os.remove(os.path.join(self.ckpt_dir, name))
        self.curves(self.csv_path, self.png_path)

    def close(self):
        """Close TensorBoard and give SIGTERM and SIGINT back to their previous handlers."""
        if self.writer is not None:
            self.writer.close()
        self.stops.close()


def _prepare_csv(path, resume_iteration, fields=CSV_FIELDS):
    """Keep rows up to the resumed iteration (a crash may have logged past the checkpoint)."""
    rows = [r for r in _read_csv(path) if int(r['iteration']) <= resume_iteration]
    with open(path, 'w', newline='', encoding='utf-8') as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def validate(model, dataset, device, count, margin):
    """Mean nearest-neighbour pair IoU over ``count`` fixed validation pairs."""
    import torch

    was_training = model.training
    model.eval()
    ious = []
    with torch.no_grad():
        for start in range(0, count, 8):
            batch = _collate([dataset[i] for i in range(start, min(count, start + 8))])
            batch = {k: v.to(device) for k, v in batch.items()}
            emb = model(torch.cat([batch['ref_image'], batch['query_image']]))
            half = emb.shape[0] // 2
            _, _, iou = nn_triplet_loss(emb[:half], emb[half:], batch, margin)
            if not math.isnan(iou):
                ious.append(iou)
    model.train(was_training)
    return float(np.mean(ious)) if ious else float('nan')


def train(args):
    """Run training as configured by parsed ``args``.

    Returns ``(path of last.pt, iteration reached, iterations in the schedule, None or why it
    stopped early)``.
    """
    import torch
    from torch import distributed
    from vos_ros.core.device import resolve_device
    from vos_ros.core.models import build_model

    world = int(os.environ.get('WORLD_SIZE', '1'))
    rank = int(os.environ.get('RANK', '0'))
    local_rank = int(os.environ.get('LOCAL_RANK', '0'))
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    if world > 1 and device.startswith('cuda'):
        device = f'cuda:{local_rank}'
        torch.cuda.set_device(device)
    if world > 1:
        distributed.init_process_group('nccl' if device.startswith('cuda') else 'gloo')
    main_rank = rank == 0
    check_counts(args)
    # everything that can refuse the run does before the first file is written
    check_out_path(args.out)
    listed = listed_sequences(args.data, args.sequences_file, args.exclude_file, args.val_file)
    arch, model_kwargs = 'embednet', {'embedding_dim': args.embedding_dim, 'width': args.width}
    checkpoint, state, init = starting_weights(args, 'embedding', arch, model_kwargs)
    os.makedirs(args.out, exist_ok=True)

    torch.manual_seed(args.seed)
    model = resumed_model(state, arch, model_kwargs,
                          lambda name, kwargs: build_model(name, **kwargs), device)
    train_seqs, val_seqs, described = gather_sequences(args, progress=main_rank, listed=listed)
    if init:
        described.append({'init_model': init['path'], 'version': init['version']})
    dataset = PairDataset(train_seqs, args.crop, model.stride, args.seed, args.ref_pixels,
                          args.anchor_pixels, args.synthetic_ratio)
    val_set = PairDataset(val_seqs, args.crop, model.stride, args.seed + 1, args.ref_pixels,
                          args.anchor_pixels, augment=False) if val_seqs else None

    net = model
    if world > 1:
        if device.startswith('cuda'):
            net = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        net = torch.nn.parallel.DistributedDataParallel(
            net, device_ids=[local_rank] if device.startswith('cuda') else None)
    optimizer = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=1e-4)
    start = resume_optimizer(optimizer, checkpoint)
    total = args.epochs * args.iters_per_epoch

    meta = {
        'kind': 'embedding', 'arch': arch, 'model_kwargs': model_kwargs,
        'mean': list(MEAN), 'std': list(STD), 'stride': model.stride,
        'input_multiple': model.input_multiple, 'embedding_dim': model.embedding_dim,
        'normalized': True, 'resolution': args.resolution, 'training_data': described,
        'loss': f'PML nearest-neighbour triplet, margin {args.margin}',
    }
    if init:
        meta['init'] = init
    run = RunOutput(args, meta, checkpoint, start, CSV_FIELDS, write_curves, write=main_rank)
    try:
        iteration, reason = _train_loop(args, run, net, model, optimizer, dataset, val_set,
                                        start, total, device, rank, world)
    finally:
        run.close()
    if world > 1:
        # Tear down together and while Python is alive: the DDP reducer holds the process
        # group, and a gloo group left to interpreter shutdown aborted rank 1 ('terminate
        # called without an active exception', SIGABRT) in about 1 run in 12.
        distributed.barrier()
        del net, optimizer
        gc.collect()
        distributed.destroy_process_group()
    return os.path.join(args.out, 'last.pt'), iteration, total, reason


def _train_loop(args, run, net, model, optimizer, dataset, val_set, start, total, device,
                rank, world):
    """Train iterations ``start..total-1``; return (iteration reached, None or stop reason)."""
    import torch
    from torch import distributed
    from torch.utils.data import DataLoader

    main_rank = rank == 0
    loader = DataLoader(dataset, batch_size=args.batch_size, collate_fn=_collate,
                        sampler=IndexSampler(start, total, args.batch_size, rank, world),
                        num_workers=args.workers, persistent_workers=False)
    net.train()
    means = RunningMeans(('loss', 'nn_acc', 'pair_iou'), skip_nan=('pair_iou',))
    iteration, reason = start, None
    progress = progress_bar(total=total, initial=start, desc='training', unit='it',
                            enabled=main_rank, dynamic_ncols=True)
    try:
        for batch in loader:
            lr = _lr_at(iteration, total, args.lr)
            for group in optimizer.param_groups:
                group['lr'] = lr
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            emb = net(torch.cat([batch['ref_image'], batch['query_image']]))
            half = emb.shape[0] // 2
            loss, acc, iou = nn_triplet_loss(emb[:half], emb[half:], batch, args.margin)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            iteration += 1
            means.add(loss=float(loss.detach()), nn_acc=acc, pair_iou=iou)
            progress.update(1)
            progress.set_postfix(loss=f'{float(loss.detach()):.3f}', acc=f'{acc:.2f}')
            epoch_end = iteration % args.iters_per_epoch == 0 or iteration == total
            reason = run.stop_reason()
            stopping = reason is not None
            if world > 1:
                # every rank must stop at the same iteration or the others hang in all-reduce
                flag = torch.tensor([1.0 if stopping else 0.0], device=device)
                distributed.all_reduce(flag, op=distributed.ReduceOp.MAX)
                stopping = bool(flag.item() > 0)
                reason = reason or ('another process stopped' if stopping else None)
            if main_rank and (iteration % args.log_every == 0 or epoch_end or stopping):
                val_iou = ''
                if val_set is not None and (epoch_end or iteration % args.checkpoint_every == 0):
                    val_iou = validate(model, val_set, device, 32, args.margin)
                run.log(iteration, dict(means.take(), val_pair_iou=val_iou, lr=lr),
                        ('loss', 'nn_acc', 'pair_iou', 'val_pair_iou', 'lr'))
            if iteration % args.checkpoint_every == 0 or epoch_end or stopping:
                run.save(iteration, model, optimizer)
            if stopping:
                break
    finally:
        progress.close()
    # a stop at the last iteration is the end of the schedule, no stop
    return iteration, reason if iteration < total else None


def main(argv=None):
    """Console entry point; returns the exit code.

    0 at the end of the schedule; EXIT_STOPPED (75) stopped early by SIGTERM or --max-minutes
    and 130 by Ctrl-C, either saved (``--resume last`` continues); 2 after an error (one line).
    """
    args = build_parser().parse_args(argv)
    try:
        if not args.data and args.synthetic <= 0 and not (args.kind == 'memory' and args.static):
            raise ValueError('give at least one DAVIS folder or --synthetic N')
        if args.kind == 'memory':
            if args.val_file:
                # the memory trainer scores no validation pairs: a silent ignore would leave a
                # user believing the run was checked on those sequences
                raise ValueError('--val-file is for the embedding model (val_pair_iou); the '
                                 'memory model is scored on its hold-out with vos_eval '
                                 '--model after export')
            from vos_ros.tools import train_memory
            path, iteration, total, reason = train_memory.train(args)
        else:
            path, iteration, total, reason = train(args)
    except (VosError, ValueError) as error:
        print(f'vos_train: error: {error}', file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print('vos_train: interrupted, not saved', file=sys.stderr)
        return EXIT_INTERRUPTED
    main_rank = int(os.environ.get('RANK', '0')) == 0
    if reason is not None:
        if main_rank:
            print(stopped_line('vos_train', iteration, total, reason, path), file=sys.stderr)
        return stopped_code(reason)
    if main_rank:
        print(f'vos_train: iteration {iteration}; checkpoint {path}; '
              f'curves {os.path.join(args.out, "curves.png")}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
