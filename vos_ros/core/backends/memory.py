"""Learned backend: space-time memory read-out (seed system 002: STM / MiVOS mask propagation).

A TorchScript model of kind ``memory`` (``vos_ros.core.models.memory_net``) encodes each frame
into a key and, for frames whose mask is known, one value per object. The backend holds the
memory as tensors and bounds it (constant size however long the stream runs):

- the *given* frames: the first mask, and the latest re-initialisation with the same objects
  (at most ``max_given``; they are never replaced by predictions);
- the *recent* frames with their predicted masks (``recent_frames``, default the previous
  frame only: STM/XMem, the most recent frame is the most similar one);
- *keyframes*: every ``memory_every``-th frame whose prediction is confident
  (mean max-probability >= ``keyframe_confidence``), first in first out, at most
  ``max_keyframes``.

Each new frame reads the memory out (L2 affinity, top-k softmax) and the decoder turns the read
out values into per-object logits; soft aggregation gives the probabilities.
"""

import logging
import os
import warnings

import cv2
import numpy as np

from vos_ros.core.backends.base import Backend
from vos_ros.core.errors import ModelError

_LOG = logging.getLogger(__name__)


class MemoryBackend(Backend):
    """Segment by reading a bounded space-time memory (STM / MiVOS / STCN family)."""

    name = 'memory'

    def __init__(self, model_path=None, device='auto', half=None, resolution=None, top_k=None,
                 memory_every=10, max_keyframes=3, max_given=2, keyframe_confidence=0.8,
                 recent_frames=1, threads=2):
        """Load the model (default: the one shipped in vos_ros/data) and set the memory policy.

        ``resolution``: shorter side the network sees (None = the model's own setting from its
        metadata). ``top_k``: memory positions each query reads (None = the model's setting).
        ``memory_every``: frames between keyframe candidates; ``max_keyframes``: keyframes kept
        (0 = none); ``max_given``: given masks kept; ``recent_frames``: latest predicted
        frames kept (0 = none). ``threads``: torch CPU threads (0 = leave torch's setting). Raises
        ModelError for a missing or wrong model file, ValueError for bad options.
        """
        from vos_ros.core import model_io

        for name, value, low in (('memory_every', memory_every, 1),
                                 ('max_keyframes', max_keyframes, 0),
                                 ('max_given', max_given, 1), ('threads', threads, 0),
                                 ('recent_frames', recent_frames, 0)):
            if int(value) < low:
                raise ValueError(f'{name} must be >= {low}, got {value}')
        if not 0.0 <= float(keyframe_confidence) <= 1.0:
            raise ValueError(f'keyframe_confidence must lie in [0, 1], got {keyframe_confidence}')
        if model_path in (None, ''):
            model_path = model_io.default_model_path('memory')
            if not os.path.isfile(model_path):
                raise ModelError('no model_path given and no memory model is installed '
                                 f'({model_path}); train one with vos_train --kind memory and '
                                 'export it with vos_export, or use the flow backend')
        meta = model_io.read_metadata(model_path)
        if meta['kind'] != 'memory':
            raise ModelError(f'{model_path} is a {meta["kind"]!r} model; the memory backend '
                             f'needs a memory model (use backend {meta["kind"]!r} for it)')
        self.model = model_io.load_model(model_path, device=device, half=half,
                                         kinds=('memory',))
        import torch
        if int(threads) > 0 and self.model.device == 'cpu':
            torch.set_num_threads(int(threads))
        self._encoder = self._optimized_encoder()
        meta = self.model.meta
        self.resolution = int(meta.get('resolution', 0) if resolution is None else resolution)
        if self.resolution < 0:
            raise ValueError(f'resolution must be >= 0, got {resolution}')
        self.top_k = int(meta.get('top_k', 20) if top_k is None else top_k)
        if self.top_k < 1:
            raise ValueError(f'top_k must be >= 1, got {top_k}')
        self.multiple = max(int(meta['input_multiple']), 1)
        self.memory_every = int(memory_every)
        self.max_keyframes = int(max_keyframes)
        self.max_given = int(max_given)
        self.keyframe_confidence = float(keyframe_confidence)
        self.recent_frames = int(recent_frames)
        #: (net size, objects) the networks have run at (see _warm_up)
        self._warmed = set()
        #: The session works at the network's size, so nothing is resized twice.
        self.default_resolution = self.resolution
        self.reset()

    # -- Backend interface ---------------------------------------------------------------

    def reset(self):
        self._given = []
        self._keyframes = []
        self._recent = []
        self._channels = 0
        self._since_keyframe = 0
        self._cache = None
        self.last_roi = None

    def memorize(self, image, probs):
        probs = np.asarray(probs, np.float32)
        net = self._net_image(image)
        key, f16, _, _ = self._encode(net)
        entry = self._entry(key, f16, probs, net.shape[:2])
        if probs.shape[0] != self._channels:
            # a new object layout: earlier values describe other objects, start afresh
            self._given = []
            self._keyframes = []
        self._channels = probs.shape[0]
        self._warm_up_net(net.shape[:2], probs.shape[0] - 1)
        if self._given and self.max_given > 1:
            # the first mask is the one a person gave: keep it, and the latest corrections
            self._given = [self._given[0]] + (self._given[1:] + [entry])[1 - self.max_given:]
        else:
            self._given = [entry]
        self._recent = []
        self._since_keyframe = 0
        self._cache = None

    def propagate(self, image):
        if not self._given:
            raise RuntimeError('memory backend asked to propagate before any mask was memorised')
        height, width = image.shape[:2]
        net = self._net_image(image)
        if self._channels < 2:
            return np.ones((1, height, width), np.float32)
        probs_np, key, f16 = self._read_out(net, net.shape[:2])
        self._update_memory(key, f16, probs_np)
        if probs_np.shape[1:] != (height, width):
            from vos_ros.core.session import resize_probs
            probs_np = resize_probs(probs_np, width, height)
        return probs_np

    def propagate_light(self, image, resolution):
        """Segment ``image`` from a query encoded at ``resolution``; the memory is unchanged.

        The light pass of the adaptive backend's cheap path (issue 15). The key encoder and the
        decoder cost grows with the pixels (a 160 px query costs about 0.4 of a 256 px one),
        while the memory read out is the one the full-resolution frames built: the affinity
        compares keys by appearance, not position, so a smaller query finds the same memory
        positions. Nothing is written to the memory: the coarser results would blur what the
        full path reads (writing each light result as the recent frame scored 0.7 J&F lower).
        ``image``: h×w×3 uint8 RGB at working size; ``resolution``: shorter
        side of the query (rounded to the network's size multiple). Returns (K + 1)×h×w
        float32 probabilities at the image's size (logits interpolated before the softmax:
        0.4 J&F better than resizing probabilities).
        Measured (DAVIS-2016 train, 10 sequences the estimate was not fitted on): with every
        third frame full, 160 px lost 2.9 J&F, the flow cheap path 8.5; with every second frame
        full, 160 px lost 2.5 and 128 px 5.9.
        """
        if not self._given:
            raise RuntimeError('memory backend asked to propagate before any mask was memorised')
        height, width = image.shape[:2]
        if self._channels < 2:
            return np.ones((1, height, width), np.float32)
        probs, _, _ = self._read_out(self._net_image(image, resolution), (height, width))
        return np.ascontiguousarray(probs, np.float32)

    def propagate_roi(self, image, previous, budget=1.0, margin=0.15, min_margin=16):
        """Segment ``image`` from a query cropped around ``previous``; the memory is unchanged.

        The region-of-interest light pass (issue 15): the crop is the bounding box of the
        foreground of ``previous`` ((K + 1)×h×w probabilities at the image's size, e.g. the last
        result), widened on each side by ``margin`` times its longer side (at least
        ``min_margin`` px). It is encoded at the full path's scale (``budget`` 1.0, the
        default), or scaled down so that it holds about ``budget`` of the full query's pixels
        at most (the cost of the key encoder and the decoder grows with them; scaled-down
        crops lost about 3 IoU points per frame on large objects); its query sides are rounded
        up to twice the size multiple and the crop widened to match (a few shapes recur). The
        query reads the memory the full frames built (the affinity compares keys by
        appearance, not position, as ``propagate_light``); outside the crop every pixel is
        background. An empty foreground crops nothing (the whole frame under the budget).
        Follows the search-region cropping of trackers (SiamMask) and of the RoI refinement in
        MiVOS-style VOS; the objects of DAVIS fill 5-30 % of a frame, so most of the saving
        keeps the full detail.
        ``image``: h×w×3 uint8 RGB at working size. Returns (K + 1)×h×w float32; ``last_roi``
        holds the crop (y0, y1, x0, x1) and the query's share of the full query's pixels.
        Measured: bench/README.md "The ROI pass at full scale" (adaptive, DAVIS-2016 train
        sequences).
        Raises ValueError for a ``previous`` of another size or a ``budget`` outside (0, 1].
        """
        import torch

        from vos_ros.core.models.memory_net import aggregate

        if not self._given:
            raise RuntimeError('memory backend asked to propagate before any mask was memorised')
        if not 0.0 < float(budget) <= 1.0:
            raise ValueError(f'budget must lie in (0, 1], got {budget}')
        height, width = image.shape[:2]
        previous = np.asarray(previous)
        if previous.ndim != 3 or previous.shape[1:] != (height, width):
            raise ValueError(f'previous probabilities {previous.shape} do not match the image '
                             f'({height}x{width})')
        if self._channels < 2:
            return np.ones((1, height, width), np.float32)
        y0, y1, x0, x1 = _roi_box(previous[0] < 0.5, margin, min_margin)
        full_w, full_h = self._net_size(width, height)
        scale = (full_w / width) * min(1.0, (float(budget) * width * height
                                             / float((y1 - y0) * (x1 - x0))) ** 0.5)
        # Query sides on a coarse grid, the crop widened to match: a moving box then reuses a
        # few query shapes (a new shape costs oneDNN/TorchScript ~30 % more on its first call).
        y0, y1, net_h = _roi_side(y0, y1, height, scale, self.multiple)
        x0, x1, net_w = _roi_side(x0, x1, width, scale, self.multiple)
        crop_h, crop_w = y1 - y0, x1 - x0
        crop = np.ascontiguousarray(image[y0:y1, x0:x1])
        if (net_w, net_h) != (crop_w, crop_h):
            crop = cv2.resize(crop, (net_w, net_h), interpolation=cv2.INTER_AREA
                              if net_w < crop_w else cv2.INTER_LINEAR)
        logits, _, _ = self._logits(crop, (crop_h, crop_w))
        with torch.inference_mode():
            inside = torch.softmax(aggregate(logits), dim=1)[0].cpu().float().numpy()
        # outside the crop: background (what a logit of -30 for every object gives there)
        probs = np.zeros((inside.shape[0], height, width), np.float32)
        probs[0] = 1.0
        probs[:, y0:y1, x0:x1] = inside
        #: the last crop (y0, y1, x0, x1) and the query's share of the full query's pixels
        self.last_roi = ((y0, y1, x0, x1), net_w * net_h / float(full_w * full_h))
        return probs

    def describe(self):
        """Return the backend's settings; ``resolution`` is the network's input (shorter side).

        The network scales every frame to ``resolution`` (up or down) whatever the session's
        working size: ``SessionConfig(resolution=360)`` hands it 360 px frames that the shipped
        model (256) still reads at 256 px; ``Session('memory', resolution=360)`` runs the
        network at 360 px (and the session works at that size too).
        """
        return {'backend': self.name, 'model': self.model.path, 'device': self.model.device,
                'dtype': str(self.model.dtype).replace('torch.', ''),
                'resolution': self.resolution, 'top_k': self.top_k,
                'memory_frames': self.max_given + self.max_keyframes + self.recent_frames,
                'version': self.model.meta.get('version')}

    @property
    def memory_frames(self):
        """Frames in memory now (at most max_given + max_keyframes + recent_frames)."""
        return len(self._given) + len(self._keyframes) + len(self._recent)

    # -- internals -----------------------------------------------------------------------

    def _net_size(self, width, height, resolution=None):
        """Return the network's input size (w, h) for a ``width``×``height`` image: shorter
        side ``resolution`` (None = the backend's), up or down; sides rounded to the size
        multiple."""
        resolution = self.resolution if resolution is None else resolution
        scale = 1.0
        if resolution > 0:
            # small inputs are enlarged too: on a 16 px key grid a 72 px frame has 4 rows
            scale = resolution / min(width, height)
        multiple = self.multiple
        return (max(multiple, int(round(width * scale / multiple)) * multiple),
                max(multiple, int(round(height * scale / multiple)) * multiple))

    def _net_image(self, image, resolution=None):
        """Resize an image to the network's input size (see ``_net_size``)."""
        height, width = image.shape[:2]
        net_w, net_h = self._net_size(width, height, resolution)
        if (net_w, net_h) == (width, height):
            return image
        interpolation = cv2.INTER_AREA if net_w < width else cv2.INTER_LINEAR
        return cv2.resize(image, (net_w, net_h), interpolation=interpolation)

    def _optimized_encoder(self):
        """Return a module whose ``encode_key`` is frozen and optimised for CPU inference.

        Freezing folds batch norm into the convolutions and ``optimize_for_inference`` picks
        oneDNN kernels: the key encoder ran 2.2x faster here (35 -> 16 ms at 240x432, same
        keys to 1e-5 relative). Only ``encode_key`` is converted: the small stride-16 to 4
        layers of the other methods ran slower through oneDNN. Falls back to the scripted
        module where either step is unavailable (older torch, CUDA, fp16).
        """
        import torch

        module = self.model.module
        if self.model.device != 'cpu' or self.model.dtype != torch.float32:
            return module
        try:
            with warnings.catch_warnings():
                # deprecated with TorchScript itself, still the fastest CPU path in torch 2.13
                warnings.simplefilter('ignore', DeprecationWarning)
                frozen = torch.jit.freeze(module, preserved_attrs=['encode_key'])
                return torch.jit.optimize_for_inference(frozen, other_methods=['encode_key'])
        except Exception as error:  # torch raises RuntimeError and friends: keep the plain one
            _LOG.info('key encoder not optimised (%s); running it as scripted', error)
            return module

    def warm_up(self, width, height, objects, resolution=None):
        """Warm the networks up for ``width``×``height`` frames (see ``_warm_up_net``).

        ``resolution``: the query's shorter side (None = the backend's; the light pass's
        ``propagate_light`` resolution warms its smaller shape).
        """
        net_w, net_h = self._net_size(int(width), int(height), resolution)
        self._warm_up_net((net_h, net_w), objects)

    def _warm_up_net(self, size, objects):
        """Run every network method twice on blank inputs of this net size and object count.

        The first calls at a new input shape are 2-4x slower (oneDNN picks and builds its
        kernels, TorchScript profiles the graph): measured 114, 94, 65 ms for the first three
        frames against ~40 ms after. Paying this once when the mask is given keeps the
        following frames on time (a live camera's p95 latency otherwise shows it).
        """
        import torch

        key = (tuple(size), int(objects))
        if key in self._warmed or objects < 1:
            return
        self._warmed.add(key)
        module = self.model.module
        blank = np.zeros((size[0], size[1], 3), np.uint8)
        with torch.inference_mode():
            for _ in range(2):
                query, f16, f8, f4 = self._encode(blank)
                masks = torch.zeros((1, objects) + tuple(size), dtype=self.model.dtype,
                                    device=self.model.device)
                value = module.encode_value(f16, masks)
                readout = module.read_memory(query, query.flatten(2), value.flatten(3),
                                             self.top_k)
                module.segment(readout, f16, f8, f4)

    def _read_out(self, net_image, size):
        """Encode ``net_image``, read the memory out and decode: ``(probs, key, f16)``.

        ``probs``: (K + 1)×h×w float32 numpy at ``size`` (h, w); the logits are interpolated
        there before the soft aggregation and softmax. ``key`` and ``f16`` for a memory entry.
        """
        import torch

        from vos_ros.core.models.memory_net import aggregate

        logits, key, f16 = self._logits(net_image, size)
        with torch.inference_mode():
            probs = torch.softmax(aggregate(logits), dim=1)[0]
        return probs.cpu().numpy(), key, f16

    def _logits(self, net_image, size):
        """Encode, read out and decode: per-object logits [1,K,h,w] float at ``size``, key, f16."""
        import torch
        from torch.nn import functional as F

        key, f16, f8, f4 = self._encode(net_image)
        keys, values = self._memory()
        module = self.model.module
        with torch.inference_mode():
            readout = module.read_memory(key, keys, values, self.top_k)
            logits = module.segment(readout, f16, f8, f4)
            logits = F.interpolate(logits.float(), size=tuple(size), mode='bilinear',
                                   align_corners=False)
        return logits, key, f16

    def _encode(self, net_image):
        import torch

        with torch.inference_mode():
            return self._encoder.encode_key(self.model.normalize(net_image))

    def _entry(self, key, f16, probs, size):
        """Encode a memory entry (key, values) for a frame and its (K + 1, h, w) probs."""
        import torch

        from vos_ros.core.session import resize_probs

        height, width = size
        if probs.shape[1:] != (height, width):
            probs = resize_probs(probs, width, height)
        masks = torch.from_numpy(np.ascontiguousarray(probs[1:]))[None]
        masks = masks.to(self.model.device, self.model.dtype)
        with torch.inference_mode():
            value = self.model.module.encode_value(f16, masks)
        return {'key': key.flatten(2), 'value': value.flatten(3)}

    def _update_memory(self, key, f16, probs):
        self._since_keyframe += 1
        keyframe = self.max_keyframes > 0 and self._since_keyframe >= self.memory_every
        confident = keyframe and float(probs.max(axis=0).mean()) >= self.keyframe_confidence
        if not (self.recent_frames or confident):
            return
        entry = self._entry(key, f16, probs, probs.shape[1:])
        if confident:
            self._keyframes = (self._keyframes + [entry])[-self.max_keyframes:]
            self._since_keyframe = 0
        if self.recent_frames and not confident:
            # a frame that became a keyframe is in memory already
            self._recent = (self._recent + [entry])[-self.recent_frames:]
        self._cache = None

    def _memory(self):
        """Concatenated memory keys [1,Ck,N] and values [1,K,Cv,N] (cached until it changes)."""
        import torch

        if self._cache is None:
            entries = self._given + self._keyframes + self._recent
            self._cache = (torch.cat([e['key'] for e in entries], dim=2),
                           torch.cat([e['value'] for e in entries], dim=3))
        return self._cache


def _roi_box(foreground, margin, min_margin):
    """Bounding box (y0, y1, x0, x1) of a boolean h×w mask, widened and clipped to the frame.

    Each side grows by ``margin`` times the box's longer side, at least ``min_margin`` px; an
    empty mask gives the whole frame.
    """
    height, width = foreground.shape
    rows = np.flatnonzero(foreground.any(axis=1))
    if rows.size == 0:
        return 0, height, 0, width
    cols = np.flatnonzero(foreground.any(axis=0))
    y0, y1, x0, x1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    grow = max(int(min_margin), int(float(margin) * max(y1 - y0, x1 - x0)))
    return max(0, y0 - grow), min(height, y1 + grow), max(0, x0 - grow), min(width, x1 + grow)


def _roi_side(low, high, limit, scale, multiple):
    """One side of the ROI crop: ``(low, high, net)`` with the query side ``net`` px.

    The query side is ``(high - low) * scale`` rounded up to twice ``multiple`` and the crop
    widened about its centre to ``net / scale`` px, inside ``[0, limit)``; a crop that would
    not fit becomes the whole side (the query side then rounded to ``multiple``, as
    ``_net_size`` does).
    """
    grid = 2 * multiple
    net = max(grid, int(np.ceil((high - low) * scale / grid)) * grid)
    size = int(round(net / scale))
    if size >= limit:
        return 0, limit, max(multiple, int(round(limit * scale / multiple)) * multiple)
    low = max(0, min(low - (size - (high - low)) // 2, limit - size))
    return low, low + size, net
