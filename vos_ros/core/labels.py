"""Label maps: the package's one reading of mask files, palette writing and overlays.

Contract: 0 is background, 1..N are objects. A grayscale mask holding only 0 and 255
(DAVIS-2016) reads as object 1; a palette PNG's index is the object id; extra channels
(grayscale+alpha, RGBA) are ignored. Masks we write are palette PNGs with the DAVIS palette.
"""

import os

import numpy as np
from PIL import Image

from vos_ros.core.errors import DataError


def _davis_palette():
    """Return the DAVIS / PASCAL VOC palette as a flat list of 768 ints."""
    palette = np.zeros((256, 3), dtype=np.uint8)
    for index in range(256):
        value = index
        red = green = blue = 0
        for bit in range(8):
            red |= ((value >> 0) & 1) << (7 - bit)
            green |= ((value >> 1) & 1) << (7 - bit)
            blue |= ((value >> 2) & 1) << (7 - bit)
            value >>= 3
        palette[index] = (red, green, blue)
    return palette


DAVIS_PALETTE = _davis_palette()


def labels_from_array(array):
    """Convert a decoded mask array to a uint8 label map following the label contract.

    ``array`` is H×W (gray or palette indices), H×W×2 (gray+alpha) or H×W×3/4 (colour).
    """
    array = np.asarray(array)
    if array.ndim == 3:
        if array.shape[2] in (1, 2):
            array = array[:, :, 0]
        elif array.shape[2] in (3, 4):
            array = _labels_from_colour(array[:, :, :3])
        else:
            raise ValueError(f'mask has {array.shape[2]} channels; expected 1 to 4')
    elif array.ndim != 2:
        raise ValueError(f'mask must be 2-D or 3-D, got shape {array.shape}')
    if array.dtype != np.uint8:
        if array.size and (array.min() < 0 or array.max() > 255):
            raise ValueError('mask values must lie in 0..255 (object ids 1..255)')
        array = array.astype(np.uint8)
    values = np.unique(array)
    if values.size and values.max() == 255 and set(values.tolist()) <= {0, 255}:
        return (array == 255).astype(np.uint8)
    return np.ascontiguousarray(array)


def _labels_from_colour(rgb):
    """Map a colour mask to ids: gray if channels agree, else by DAVIS palette colours.

    Colours outside the palette take the lowest ids not already used by palette colours.
    """
    if np.array_equal(rgb[:, :, 0], rgb[:, :, 1]) and np.array_equal(rgb[:, :, 0], rgb[:, :, 2]):
        return rgb[:, :, 0]
    colours, inverse = np.unique(rgb.reshape(-1, 3), axis=0, return_inverse=True)
    ids = np.zeros(len(colours), dtype=np.int64)
    unmatched = []
    for index, colour in enumerate(colours):
        if not colour.any():
            continue
        match = np.nonzero((DAVIS_PALETTE[1:] == colour).all(axis=1))[0]
        if match.size:
            ids[index] = match[0] + 1
        else:
            unmatched.append(index)
    free_ids = [value for value in range(1, 256) if value not in set(ids.tolist())]
    if len(unmatched) > len(free_ids):
        # A photo, not a label map: more colours than object ids exist.
        raise ValueError(f'colour mask has {len(colours)} distinct colours; a label map holds '
                         'at most 255 objects')
    for index, free_id in zip(unmatched, free_ids):
        ids[index] = free_id
    return ids[inverse.reshape(-1)].reshape(rgb.shape[:2]).astype(np.uint8)


def read_labels(path):
    """Read a mask file as a uint8 label map; DataError names the file on failure."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DataError(f'mask file not found: {path}')
    try:
        with Image.open(path) as image:
            if image.mode == 'P':
                array = np.array(image)
            elif image.mode in ('L', 'LA', 'RGB', 'RGBA', 'I', 'I;16', '1'):
                array = np.array(image)
                if image.mode == '1':
                    array = array.astype(np.uint8) * 255
            else:
                array = np.array(image.convert('RGB'))
    except (OSError, ValueError) as error:
        raise DataError(f'cannot read mask {path}: {error}') from error
    try:
        return labels_from_array(array)
    except ValueError as error:
        raise DataError(f'bad mask {path}: {error}') from error


def write_labels(path, labels):
    """Write a label map as a palette PNG with the DAVIS palette (parents created)."""
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f'label map must be 2-D, got shape {labels.shape}')
    if labels.size and labels.max() > 255:
        raise ValueError('label ids above 255 cannot be stored in a palette PNG')
    directory = os.path.dirname(os.fspath(path))
    if directory:
        os.makedirs(directory, exist_ok=True)
    image = Image.fromarray(labels.astype(np.uint8), mode='P')
    image.putpalette(DAVIS_PALETTE.reshape(-1).tolist())
    image.save(path)


def object_ids(labels):
    """Return the sorted object ids (non-zero labels) present in a label map."""
    return [int(value) for value in np.unique(labels) if value != 0]


def colourise(labels):
    """Return an H×W×3 RGB image of a label map in DAVIS palette colours."""
    return DAVIS_PALETTE[np.asarray(labels, dtype=np.uint8)]


def overlay(image_rgb, labels, alpha=0.5, contour=True):
    """Blend palette colours of ``labels`` over an RGB image; object outlines drawn in white."""
    import cv2

    image_rgb = np.asarray(image_rgb, dtype=np.uint8)
    labels = np.asarray(labels, dtype=np.uint8)
    blended = image_rgb.copy()
    foreground = labels > 0
    if foreground.any():
        colours = colourise(labels)
        mixed = (1.0 - alpha) * image_rgb[foreground] + alpha * colours[foreground]
        blended[foreground] = mixed.astype(np.uint8)
        if contour:
            edges = cv2.morphologyEx(labels, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8)) > 0
            blended[edges] = 255
    return blended


def resize_labels(labels, width, height):
    """Resize a label map with nearest-neighbour sampling (ids are never blended)."""
    import cv2

    labels = np.asarray(labels, dtype=np.uint8)
    if labels.shape[:2] == (height, width):
        return labels
    return cv2.resize(labels, (width, height), interpolation=cv2.INTER_NEAREST)
