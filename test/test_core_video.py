"""Overlay video writing and panel tiling."""

import cv2
import numpy as np
import pytest

from vos_ros.core.video import side_by_side
from vos_ros.core.video import VideoWriter


def _frames(count, width=64, height=48):
    frames = []
    for index in range(count):
        frame = np.zeros((height, width, 3), np.uint8)
        frame[:, :, 0] = 40 * index % 256
        frame[10:30, 10 + index:30 + index] = (255, 255, 255)
        frames.append(frame)
    return frames


def _count_frames(path):
    capture = cv2.VideoCapture(path)
    count = 0
    while capture.read()[0]:
        count += 1
    capture.release()
    return count


def test_writes_a_readable_video(tmp_path):
    with VideoWriter(tmp_path / 'sub' / 'demo.mp4', fps=5) as writer:
        for frame in _frames(6):
            writer.write(frame)
    assert writer.frames_written == 6
    assert writer.path.endswith(('.mp4', '.avi'))
    assert _count_frames(writer.path) == 6


def test_odd_sizes_and_resizing(tmp_path):
    with VideoWriter(tmp_path / 'odd.avi', fps=5) as writer:
        writer.write(_frames(1, 65, 49)[0])
        writer.write(_frames(1, 130, 98)[0])
        writer.write(_frames(1, 65, 49)[0][:, :, 0])
    assert writer.size == (64, 48)
    assert writer.path.endswith('odd.avi')
    assert _count_frames(writer.path) == 3


def test_bad_frames_and_fps(tmp_path):
    with pytest.raises(ValueError):
        VideoWriter(tmp_path / 'x.mp4', fps=0)
    writer = VideoWriter(tmp_path / 'y.mp4')
    with pytest.raises(ValueError):
        writer.write(np.zeros((4, 4, 3), np.float32))
    with pytest.raises(ValueError):
        writer.write(np.zeros((4, 4, 5), np.uint8))
    writer.close()
    writer.close()


def test_side_by_side():
    left = np.full((40, 30, 3), 10, np.uint8)
    right = np.full((20, 20, 3), 200, np.uint8)
    tiled = side_by_side([left, right], gap=2)
    # The right panel is scaled to height 40 (width 40), after a 2-pixel gap.
    assert tiled.shape == (40, 30 + 2 + 40, 3)
    assert (tiled[:, :30] == 10).all()
    assert (tiled[:, 30:32] == 0).all()
    assert (tiled[:, 32:] == 200).all()
    captioned = side_by_side([left, right], labels=['image', ''], gap=0)
    assert not np.array_equal(captioned[:, :30], tiled[:, :30])
    assert side_by_side([left[:, :, 0]], height=20).shape == (20, 15, 3)
    with pytest.raises(ValueError):
        side_by_side([])
    with pytest.raises(ValueError):
        side_by_side([left], labels=['a', 'b'])
