"""Writing overlay videos (demo, bag evaluation): an mp4 writer and a panel tiler."""

import logging
import os

import cv2
import numpy as np

logger = logging.getLogger(__name__)


class VideoWriter:
    """Write RGB frames to ``path`` (mp4, 'mp4v'); falls back to MJPG ``.avi`` if needed.

    The size is taken from the first frame; later frames of another size are resized to it.
    Use as a context manager or call ``close()``. ``path`` holds the file actually written.
    """

    def __init__(self, path, fps=10.0):
        if fps <= 0:
            raise ValueError(f'fps must be > 0, got {fps}')
        self.requested_path = os.fspath(path)
        self.path = self.requested_path
        self.fps = float(fps)
        self.size = None
        self.frames_written = 0
        self._writer = None

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def _open(self, width, height):
        directory = os.path.dirname(self.requested_path)
        if directory:
            os.makedirs(directory, exist_ok=True)
        root, ext = os.path.splitext(self.requested_path)
        attempts = []
        if ext.lower() != '.avi':
            attempts.append((self.requested_path, 'mp4v'))
        attempts.append((root + '.avi', 'MJPG'))
        for path, codec in attempts:
            writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*codec), self.fps,
                                     (width, height))
            if writer.isOpened():
                if path != self.requested_path:
                    logger.warning('cannot write %s with this OpenCV build; writing %s (%s) '
                                   'instead', self.requested_path, path, codec)
                self.path = path
                return writer
            writer.release()
        raise OSError(f'cannot open a video writer for {self.requested_path} '
                      '(tried mp4v .mp4 and MJPG .avi)')

    def write(self, frame_rgb):
        """Append one H×W×3 uint8 RGB frame (gray H×W is accepted too)."""
        frame = np.asarray(frame_rgb)
        if frame.dtype != np.uint8:
            raise ValueError(f'video frames must be uint8, got {frame.dtype}')
        if frame.ndim == 2:
            frame = np.repeat(frame[:, :, None], 3, axis=2)
        if frame.ndim != 3 or frame.shape[2] != 3:
            raise ValueError(f'video frames must be H×W×3 RGB, got shape {frame.shape}')
        height, width = frame.shape[:2]
        if self._writer is None:
            # Codecs want even sizes; crop the last row/column when odd.
            self.size = (width - width % 2, height - height % 2)
            self._writer = self._open(*self.size)
        if (width, height) != self.size:
            if (width - width % 2, height - height % 2) == self.size:
                frame = frame[:self.size[1], :self.size[0]]
            else:
                frame = cv2.resize(frame, self.size, interpolation=cv2.INTER_AREA)
        self._writer.write(cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2BGR))
        self.frames_written += 1

    def close(self):
        """Finish the file (safe to call twice)."""
        if self._writer is not None:
            self._writer.release()
            self._writer = None


def _as_rgb(panel):
    panel = np.asarray(panel)
    if panel.dtype != np.uint8:
        raise ValueError(f'panels must be uint8, got {panel.dtype}')
    if panel.ndim == 2:
        panel = np.repeat(panel[:, :, None], 3, axis=2)
    if panel.ndim != 3 or panel.shape[2] not in (3, 4):
        raise ValueError(f'panels must be H×W or H×W×3, got shape {panel.shape}')
    return panel[:, :, :3]


def side_by_side(panels, labels=None, height=None, gap=4):
    """Tile RGB panels left to right at one height (the first's unless given).

    ``labels`` are optional captions drawn in the top-left corner of each panel.
    """
    panels = [_as_rgb(p) for p in panels]
    if not panels:
        raise ValueError('side_by_side needs at least one panel')
    if labels is not None and len(labels) != len(panels):
        raise ValueError(f'{len(panels)} panels but {len(labels)} labels')
    height = int(height or panels[0].shape[0])
    resized = []
    for index, panel in enumerate(panels):
        if panel.shape[0] != height:
            width = max(1, int(round(panel.shape[1] * height / panel.shape[0])))
            panel = cv2.resize(panel, (width, height), interpolation=cv2.INTER_AREA)
        else:
            panel = panel.copy()
        if labels is not None and labels[index]:
            put_caption(panel, str(labels[index]))
        resized.append(panel)
        if gap and index < len(panels) - 1:
            resized.append(np.zeros((height, gap, 3), np.uint8))
    return np.hstack(resized)


def put_caption(image_rgb, text, origin=(6, 18)):
    """Draw ``text`` in place with a dark outline so it reads on any background."""
    for colour, thickness in (((0, 0, 0), 3), ((255, 255, 255), 1)):
        cv2.putText(image_rgb, text, origin, cv2.FONT_HERSHEY_SIMPLEX, 0.5, colour, thickness,
                    cv2.LINE_AA)
    return image_rgb
