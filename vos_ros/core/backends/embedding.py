"""Learned backend: per-pixel embeddings classified by nearest reference pixels (PML).

A TorchScript model (``kind: embedding`` in its ``vos.json``) maps an image to per-pixel
embeddings. The pixels of a given mask become references, one set per channel (background
and each object); the previous frame's confident pixels are added as a second, short-lived
set (PML's online adaptation). Each pixel of a new frame takes, per channel, the distance
to its nearest reference, and a softmax over ``-distance / temperature`` gives probabilities.

With ``prior='flow'`` the flow backend runs alongside (composition: it is a separate backend
instance) and the two probability maps are fused; the fused result is fed back to the flow
backend so both carry the same masks forward.
"""

import logging
import os

import cv2
import numpy as np

from vos_ros.core.backends.base import Backend
from vos_ros.core.errors import ModelError

_LOG = logging.getLogger(__name__)

PRIORS = ('none', 'flow')
FUSIONS = ('product', 'mean')


class EmbeddingBackend(Backend):
    """Segment by nearest-neighbour distance in a learned embedding space."""

    name = 'embedding'

    def __init__(self, model_path=None, device='auto', half=None, resolution=None,
                 prior='flow', prior_weight=0.5, fusion='product', temperature=0.1,
                 max_refs=1024, update_refs=True, confidence=0.9, prior_full_size=False, threads=1,
                 seed=0, **prior_options):
        """Load the model (default: the one shipped in vos_ros/data) and set options.

        ``resolution``: shorter side the network sees (None = the model's training size,
        0 = the session's working size). ``prior``: ``flow`` fuses with the flow backend,
        ``none`` uses embeddings alone; ``prior_weight`` is the flow's share in the fusion.
        ``max_refs``: reference pixels kept per channel and set. ``prior_full_size``: run the
        flow prior and the fusion at the session's working size instead of the network's
        (sharper boundaries, slower). ``threads``: torch CPU threads for this process on a CPU
        device (0 = leave torch's setting; on a shared CPU more threads made each frame up to
        10x slower here). ``prior_options`` go to the flow backend (e.g. ``quality``).
        """
        from vos_ros.core import model_io

        if prior not in PRIORS:
            raise ValueError(f'unknown prior {prior!r}; choose one of {", ".join(PRIORS)}')
        if fusion not in FUSIONS:
            raise ValueError(f'unknown fusion {fusion!r}; choose one of {", ".join(FUSIONS)}')
        if not 0.0 <= float(prior_weight) <= 1.0:
            raise ValueError(f'prior_weight must lie in [0, 1], got {prior_weight}')
        if float(temperature) <= 0:
            raise ValueError(f'temperature must be > 0, got {temperature}')
        if int(max_refs) < 1:
            raise ValueError(f'max_refs must be >= 1, got {max_refs}')
        if model_path in (None, ''):
            model_path = model_io.default_model_path()
            if not os.path.isfile(model_path):
                raise ModelError('no model_path given and no default model is installed '
                                 f'({model_path}); train one with vos_train and export it with '
                                 'vos_export, or use the flow backend')
        if int(threads) < 0:
            raise ValueError(f'threads must be >= 0, got {threads}')
        kind = model_io.read_metadata(model_path)['kind']
        if kind != 'embedding':
            raise ModelError(f'{model_path} is a {kind!r} model; the embedding backend needs an '
                             f'embedding model (use backend {kind!r} for it)')
        self.model = model_io.load_model(model_path, device=device, half=half,
                                         kinds=('embedding',))
        if int(threads) > 0 and self.model.device == 'cpu':
            import torch
            torch.set_num_threads(int(threads))
        meta = self.model.meta
        self.resolution = int(meta.get('resolution', 0) if resolution is None else resolution)
        if self.resolution < 0:
            raise ValueError(f'resolution must be >= 0, got {resolution}')
        self.multiple = max(int(meta['input_multiple']), 1)
        self.prior = prior
        self.prior_weight = float(prior_weight)
        self.fusion = fusion
        self.temperature = float(temperature)
        self.max_refs = int(max_refs)
        self.update_refs = bool(update_refs)
        self.confidence = float(confidence)
        self.prior_full_size = bool(prior_full_size)
        #: Session working size when the caller names none: the network's input size, so
        #: nothing is computed at a resolution the model never sees.
        self.default_resolution = 0 if self.prior_full_size else self.resolution
        self.seed = int(seed)
        self._flow = None
        if prior == 'flow':
            from vos_ros.core.backends import create_backend
            self._flow = create_backend('flow', **prior_options)
        elif prior_options:
            raise ValueError(f'options {sorted(prior_options)} need prior=flow')
        self.reset()

    # -- Backend interface ---------------------------------------------------------------

    def reset(self):
        self._rng = np.random.default_rng(self.seed)
        self._given = None
        self._recent = None
        self._channels = 0
        if self._flow is not None:
            self._flow.reset()

    def memorize(self, image, probs):
        small = self._small(image)
        small_probs = _resize_stack(probs, small.shape[1], small.shape[0])
        emb = self._embed(small)
        self._channels = small_probs.shape[0]
        self._given = self._references(emb, small_probs, hard=True)
        self._recent = None
        if self._flow is not None:
            if self.prior_full_size:
                self._flow.memorize(image, np.asarray(probs, np.float32))
            else:
                self._flow.memorize(small, small_probs)

    def propagate(self, image):
        if self._given is None:
            raise RuntimeError('embedding backend asked to propagate before any mask was '
                               'memorised')
        height, width = image.shape[:2]
        # everything runs at the network's input size; only the result is scaled back
        small = self._small(image)
        emb = self._embed(small)
        logits = -self._distances(emb) / self.temperature
        logits -= logits.max(axis=0, keepdims=True)
        learned = np.exp(logits)
        learned /= learned.sum(axis=0, keepdims=True)
        prior_image = image if self.prior_full_size else small
        learned = _resize_stack(learned, prior_image.shape[1], prior_image.shape[0])
        if self._flow is not None:
            warped = np.asarray(self._flow.propagate(prior_image), np.float32)
            probs = self._fuse(learned, warped)
            self._flow.memorize(prior_image, probs)
        else:
            probs = learned
        if self.update_refs:
            self._recent = self._references(emb, probs, hard=False)
        return _resize_stack(probs, width, height)

    def describe(self):
        return {'backend': self.name, 'model': self.model.path, 'device': self.model.device,
                'dtype': str(self.model.dtype).replace('torch.', ''), 'prior': self.prior,
                'resolution': self.resolution, 'version': self.model.meta.get('version')}

    # -- internals -----------------------------------------------------------------------

    def _net_size(self, width, height):
        scale = 1.0
        if self.resolution > 0:
            scale = min(1.0, self.resolution / min(width, height))
        multiple = self.multiple
        net_w = max(multiple, int(round(width * scale / multiple)) * multiple)
        net_h = max(multiple, int(round(height * scale / multiple)) * multiple)
        return net_w, net_h

    def _small(self, image):
        """Resize an image to the network's input size (``resolution``, size multiple)."""
        height, width = image.shape[:2]
        net_w, net_h = self._net_size(width, height)
        if (net_w, net_h) == (width, height):
            return image
        interpolation = cv2.INTER_AREA if net_w < width else cv2.INTER_LINEAR
        return cv2.resize(image, (net_w, net_h), interpolation=interpolation)

    def _embed(self, image):
        """Return (D, h, w) float32 torch embeddings of an image at network input size."""
        out = self.model(self.model.normalize(np.ascontiguousarray(image)))
        if out.ndim != 4 or out.shape[0] != 1:
            raise ModelError(f'{self.model.path}: expected [1,D,h,w] embeddings, got '
                             f'{tuple(out.shape)}')
        return out[0].float()

    def _references(self, emb, probs, hard):
        """Pick reference embeddings per channel from pixels ``probs`` assigns to it."""
        import torch

        dim, emb_h, emb_w = emb.shape
        small = _resize_stack(probs, emb_w, emb_h)
        labels = small.argmax(axis=0)
        confident = np.ones_like(labels, bool) if hard else small.max(axis=0) >= self.confidence
        flat = emb.reshape(dim, -1)
        refs = []
        for channel in range(probs.shape[0]):
            index = np.flatnonzero((labels == channel) & confident)
            if index.size > self.max_refs:
                index = np.sort(self._rng.choice(index, self.max_refs, replace=False))
            if index.size == 0:
                refs.append(None)
                continue
            chosen = flat[:, torch.from_numpy(index).to(flat.device)]
            # [-2r; |r|^2] so that one matmul with [e; 1] gives |r|^2 - 2 r.e for every pair
            refs.append(torch.cat([-2.0 * chosen, (chosen * chosen).sum(dim=0, keepdim=True)]))
        return refs

    def _distances(self, emb):
        """Return (C, h, w) float32 squared distances to each channel's nearest reference."""
        import torch

        dim, emb_h, emb_w = emb.shape
        flat = emb.reshape(dim, -1)
        norms = (flat * flat).sum(dim=0)
        # (N, D + 1) rows [e, 1]: pixels along rows so the min runs over contiguous memory
        pixels = torch.cat([flat, torch.ones_like(norms)[None]]).t().contiguous()
        # channels without references are "far": 4 is the largest distance of unit vectors
        far = 4.0 if self.model.meta.get('normalized') else float(norms.max()) * 4.0 + 4.0
        best = torch.full((self._channels, flat.shape[1]), far, device=flat.device)
        with torch.inference_mode():
            for channel in range(self._channels):
                parts = [refs[channel] for refs in (self._given, self._recent)
                         if refs is not None and channel < len(refs)
                         and refs[channel] is not None]
                if not parts:
                    continue
                matrix = parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)
                best[channel] = (pixels @ matrix).min(dim=1).values + norms
        return best.clamp_(min=0.0).reshape(-1, emb_h, emb_w).cpu().numpy()

    def _fuse(self, learned, warped):
        weight = self.prior_weight
        if self.fusion == 'mean':
            fused = (1.0 - weight) * learned + weight * warped
        else:
            fused = np.power(learned + 1e-4, 1.0 - weight) * np.power(warped + 1e-4, weight)
        return fused / np.maximum(fused.sum(axis=0, keepdims=True), 1e-6)


def _resize_stack(probs, width, height):
    """Resize (C, h, w) float arrays bilinearly to (C, height, width)."""
    from vos_ros.core.session import resize_probs
    return resize_probs(np.asarray(probs, np.float32), width, height)
