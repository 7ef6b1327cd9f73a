"""Synthetic DAVIS-layout sequences whose label files are made the ways people make them.

Shared by the tests of vos_eval, vos_make_bag + vos_bag_eval scoring and annotate (issue 17):
palette colours drawn with anti-aliasing and saved as RGB, 0/255 masks resized bilinearly, and
an object that enters after the first frame.
"""

import os

import cv2
import numpy as np

from vos_ros.core.labels import DAVIS_PALETTE

WIDTH, HEIGHT = 160, 120


def _background(seed):
    rng = np.random.default_rng(seed)
    noise = rng.integers(0, 256, (HEIGHT // 8, WIDTH // 8, 3)).astype(np.uint8)
    texture = cv2.resize(noise, (WIDTH, HEIGHT), interpolation=cv2.INTER_CUBIC)
    return (0.5 * texture + 40).astype(np.uint8)


def make_sequence(count=12, late_square_at=None, seed=0):
    """Return (frames RGB, clean label maps): a red-textured disc moving right; optionally a
    blue square (id 2) entering at frame ``late_square_at``."""
    background = _background(seed)
    frames, labels = [], []
    for index in range(count):
        image = background.copy()
        truth = np.zeros((HEIGHT, WIDTH), np.uint8)
        centre = (50 + 3 * index, 60)
        cv2.circle(truth, centre, 26, 1, -1)
        if late_square_at is not None and index >= late_square_at:
            truth[15:45, 110:140] = 2
        image[truth == 1] = (220, 40, 30)
        image[truth == 2] = (30, 40, 220)
        frames.append(image)
        labels.append(truth)
    return frames, labels


def messy_mask(truth, kind):
    """Return the file array a person would have for ``truth`` (clean ids) made by ``kind``."""
    if kind == 'clean':
        return truth
    if kind == 'rgb_aa':
        rgb = np.zeros(truth.shape + (3,), np.uint8)
        for object_id in (1, 2):
            if (truth == object_id).any():
                contours, _ = cv2.findContours((truth == object_id).astype(np.uint8),
                                               cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
                colour = tuple(int(v) for v in DAVIS_PALETTE[object_id])
                cv2.drawContours(rgb, contours, -1, colour, -1, cv2.LINE_AA)
                cv2.drawContours(rgb, contours, -1, colour, 1, cv2.LINE_AA)
        return rgb
    if kind == 'gray_resized':
        binary = (truth > 0).astype(np.uint8) * 255
        small = cv2.resize(binary, (truth.shape[1] // 2, truth.shape[0] // 2),
                           interpolation=cv2.INTER_AREA)
        return cv2.resize(small, (truth.shape[1], truth.shape[0]),
                          interpolation=cv2.INTER_LINEAR)
    raise ValueError(kind)


def write_sequence(root, name, frames, labels, kind):
    """Write DAVIS layout: JPEGImages/480p/<name>/*.jpg and Annotations/480p/<name>/*.png."""
    image_dir = os.path.join(root, 'JPEGImages', '480p', name)
    mask_dir = os.path.join(root, 'Annotations', '480p', name)
    os.makedirs(image_dir, exist_ok=True)
    os.makedirs(mask_dir, exist_ok=True)
    for index, (image, truth) in enumerate(zip(frames, labels)):
        cv2.imwrite(os.path.join(image_dir, f'{index:05d}.jpg'), image[:, :, ::-1],
                    [cv2.IMWRITE_JPEG_QUALITY, 95])
        array = messy_mask(truth, kind)
        path = os.path.join(mask_dir, f'{index:05d}.png')
        cv2.imwrite(path, array[:, :, ::-1] if array.ndim == 3 else array)
    return image_dir, mask_dir
