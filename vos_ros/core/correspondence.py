"""Dense correspondences between two frames from the memory model's affinity (seed system 002).

The memory network's key encoder maps every stride-16 cell of a frame to a key; the affinity
between the keys of two frames (negative squared L2 distance, STCN) says how alike two cells
are. The same affinity that reads the memory out during tracking answers:

- ``match_points``: where points of frame A land in frame B: the most similar cell of B,
  refined by a soft arg-max over its 3x3 neighbourhood (sub-cell precision), with a
  confidence (the share of the softmax over all of B that those cells hold);
- ``transfer_mask``: where a label map of frame A lands in frame B: frame A with its mask is
  the memory, frame B the query, and the decoder turns the read-out into a label map at B's
  full size (one propagation step of the ``memory`` backend).
"""

import math

import cv2
import numpy as np

from vos_ros.core.labels import labels_from_array


class Correspondence:
    """Point and mask correspondences between two frames from a ``memory`` model's keys."""

    def __init__(self, model_path=None, device='cpu', resolution=None, top_k=None):
        """Load a memory model (default: the shipped one); ``resolution`` = shorter side.

        Raises ModelError for a missing model or one of another kind.
        """
        from vos_ros.core.backends.memory import MemoryBackend

        self.backend = MemoryBackend(model_path=model_path, device=device, resolution=resolution,
                                     top_k=top_k, max_keyframes=0, recent_frames=0, threads=0)

    def match_points(self, image_a, image_b, points):
        """Return where ``points`` of ``image_a`` land in ``image_b``.

        ``image_a``, ``image_b``: H×W×3 uint8 RGB (sizes may differ); ``points``: N×2 array of
        (x, y) pixel coordinates in A. Returns ``(points_b, confidence)``: N×2 float32 (x, y)
        pixel coordinates in B and N float32 values in [0, 1]. Raises ValueError for points
        outside A.
        """
        import torch

        points = np.asarray(points, np.float64).reshape(-1, 2)
        height_a, width_a = image_a.shape[:2]
        height_b, width_b = image_b.shape[:2]
        if points.size and (points.min() < 0 or (points[:, 0] > width_a - 1).any()
                            or (points[:, 1] > height_a - 1).any()):
            raise ValueError(f'points must lie inside image A ({width_a}x{height_a})')
        key_a, size_a = self._key(image_a)
        key_b, size_b = self._key(image_b)
        channels, grid_h, grid_w = key_a.shape[1:]
        # sample A's key map at the points (grid_sample's coordinates are in [-1, 1])
        norm = torch.from_numpy(np.stack([
            (points[:, 0] + 0.5) / width_a * 2 - 1,
            (points[:, 1] + 0.5) / height_a * 2 - 1], axis=1)).float().view(1, 1, -1, 2)
        with torch.inference_mode():
            query = torch.nn.functional.grid_sample(
                key_a.float(), norm.to(key_a.device), mode='bilinear', align_corners=False)
            query = query.view(channels, -1)
            memory = key_b.float().flatten(2)[0]
            affinity = 2.0 * memory.t() @ query - memory.pow(2).sum(0).unsqueeze(1)
            affinity = affinity / math.sqrt(channels)
            weights = affinity.cpu().numpy()
        bh, bw = key_b.shape[2:]
        best = weights.argmax(axis=0)
        best_y, best_x = best // bw, best % bw
        # soft arg-max in the 3x3 cells around the best match: sub-cell precision without
        # the pull of distant look-alike cells that a global top-k mix would add
        dy, dx = np.meshgrid(np.arange(-1, 2), np.arange(-1, 2), indexing='ij')
        ys = np.clip(best_y[None] + dy.reshape(-1, 1), 0, bh - 1)
        xs = np.clip(best_x[None] + dx.reshape(-1, 1), 0, bw - 1)
        local = np.take_along_axis(weights, ys * bw + xs, axis=0)
        local = np.exp(local - local.max(axis=0, keepdims=True))
        local /= local.sum(axis=0, keepdims=True)
        x = (local * (xs + 0.5)).sum(axis=0) * (width_b / bw)
        y = (local * (ys + 0.5)).sum(axis=0) * (height_b / bh)
        # confidence: the share of the whole softmax (over all of B) held by those cells
        full = np.exp(weights - weights.max(axis=0, keepdims=True))
        confidence = np.take_along_axis(full, ys * bw + xs, axis=0).sum(axis=0) / \
            full.sum(axis=0)
        return (np.stack([x, y], axis=1).astype(np.float32),
                np.clip(confidence, 0.0, 1.0).astype(np.float32))

    def transfer_mask(self, image_a, labels_a, image_b):
        """Return ``image_b``'s H×W uint8 label map of the objects of ``labels_a`` in A.

        ``labels_a``: H×W label map of A (0 background, object ids kept). Objects absent
        from A are absent from the result.
        """
        labels_a = labels_from_array(labels_a)
        ids = [int(i) for i in np.unique(labels_a) if i != 0]
        height_b, width_b = image_b.shape[:2]
        if not ids:
            return np.zeros((height_b, width_b), np.uint8)
        backend = self.backend
        backend.reset()
        net_a = backend._net_image(image_a)
        small = cv2.resize(labels_a, (net_a.shape[1], net_a.shape[0]),
                           interpolation=cv2.INTER_NEAREST)
        probs = np.stack([small == 0] + [small == i for i in ids]).astype(np.float32)
        backend.memorize(net_a, probs)
        result = backend.propagate(backend._net_image(image_b))
        backend.reset()
        full = cv2.resize(np.ascontiguousarray(result.transpose(1, 2, 0)), (width_b, height_b),
                          interpolation=cv2.INTER_LINEAR)
        full = full.reshape(height_b, width_b, -1)
        lut = np.array([0] + ids, np.uint8)
        return lut[np.argmax(full, axis=2)]

    def _key(self, image):
        net = self.backend._net_image(np.ascontiguousarray(image))
        key = self.backend._encode(net)[0]
        return key, net.shape[:2]
