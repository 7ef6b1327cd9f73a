"""Weight-free propagation backend: dense optical flow carries soft masks frame to frame."""

import cv2
import numpy as np

from vos_ros.core.backends.base import Backend

#: DIS presets by name (the ``preset`` option).
DIS_PRESETS = {
    'ultrafast': cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
    'fast': cv2.DISOPTICAL_FLOW_PRESET_FAST,
    'medium': cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
}


def warp_backward(array, flow):
    """Sample ``array`` (C×h×w) at ``x + flow(x)``: pulls the previous frame onto this one."""
    height, width = flow.shape[:2]
    grid_x, grid_y = np.meshgrid(np.arange(width, dtype=np.float32),
                                 np.arange(height, dtype=np.float32))
    map_x = grid_x + flow[:, :, 0]
    map_y = grid_y + flow[:, :, 1]
    stacked = np.ascontiguousarray(array.transpose(1, 2, 0))
    warped = cv2.remap(stacked, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return warped.reshape(height, width, -1).transpose(2, 0, 1)


class FlowBackend(Backend):
    """Propagate probabilities with DIS optical flow from the current to the previous frame."""

    name = 'flow'

    def __init__(self, preset='medium'):
        if preset not in DIS_PRESETS:
            raise ValueError(f'unknown flow preset {preset!r}; choose one of '
                             f'{", ".join(DIS_PRESETS)}')
        self.preset = preset
        self._dis = cv2.DISOpticalFlow_create(DIS_PRESETS[preset])
        self.reset()

    def reset(self):
        self._prev_gray = None
        self._prev_probs = None

    def memorize(self, image, probs):
        self._prev_gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        self._prev_probs = np.asarray(probs, np.float32)

    def propagate(self, image):
        gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        if self._prev_probs is None:
            raise RuntimeError('flow backend asked to propagate before any mask was memorised')
        flow = self._dis.calc(gray, self._prev_gray, None)
        probs = warp_backward(self._prev_probs, flow)
        probs /= np.maximum(probs.sum(axis=0, keepdims=True), 1e-6)
        self._prev_gray = gray
        self._prev_probs = probs
        return probs

    def describe(self):
        return {'backend': self.name, 'preset': self.preset}
