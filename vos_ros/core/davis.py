"""DAVIS-layout data: ``JPEGImages/480p/<seq>/*.jpg`` and ``Annotations/480p/<seq>/*.png``.

Also accepted: the same without the ``480p`` level, and a flat sequence folder holding
``JPEGImages/`` and ``Annotations/`` directly (one sequence named after the folder).
"""

import dataclasses
import os

import cv2
import numpy as np

from vos_ros.core.errors import DataError
from vos_ros.core.labels import read_labels
from vos_ros.core.labels import resize_labels

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp')


def read_image(path):
    """Read an image file as H×W×3 uint8 RGB; DataError names the file on failure."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise DataError(f'{path} is a folder, not an image file (give one frame inside it)')
    if not os.path.isfile(path):
        raise DataError(f'image file not found: {path}')
    image = cv2.imread(path, cv2.IMREAD_COLOR)
    if image is None:
        raise DataError(f'cannot read image {path} (corrupt or not an image)')
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def list_images(directory):
    """Return the sorted image file paths in ``directory``."""
    names = sorted(n for n in os.listdir(directory) if n.lower().endswith(IMAGE_EXTENSIONS))
    return [os.path.join(directory, n) for n in names]


@dataclasses.dataclass
class Sequence:
    """One video: its frame files and the folder of its masks (may hold only a few)."""

    name: str
    frame_paths: list
    annotation_dir: str

    def __len__(self):
        return len(self.frame_paths)

    @property
    def frame_names(self):
        """Frame file names without extension (``00000`` …), used for mask names."""
        return [os.path.splitext(os.path.basename(p))[0] for p in self.frame_paths]

    def mask_path(self, index):
        """Return the path the mask of frame ``index`` has (whether or not it exists)."""
        return os.path.join(self.annotation_dir, self.frame_names[index] + '.png')

    def has_mask(self, index):
        """True if frame ``index`` has a mask file."""
        return os.path.isfile(self.mask_path(index))

    def read_frame(self, index):
        """Read frame ``index`` as RGB."""
        return read_image(self.frame_paths[index])

    def read_mask(self, index, log=None):
        """Read the label map of frame ``index`` (``log``: see ``labels.read_labels``)."""
        return read_labels(self.mask_path(index), log=log)

    def frames(self):
        """Yield the frames in order (RGB)."""
        for index in range(len(self)):
            yield self.read_frame(index)

    def given_masks(self):
        """Return ``{index: labels}`` for every frame that has a mask file."""
        return {i: self.read_mask(i) for i in range(len(self)) if self.has_mask(i)}


class Dataset:
    """A DAVIS-layout root folder."""

    def __init__(self, root, resolution='480p'):
        self.root = os.fspath(root)
        if not os.path.isdir(self.root):
            raise DataError(f'dataset folder not found: {self.root}')
        images = os.path.join(self.root, 'JPEGImages')
        annotations = os.path.join(self.root, 'Annotations')
        if not os.path.isdir(images):
            raise DataError(f'no JPEGImages folder in {self.root} (expected DAVIS layout '
                            'JPEGImages/480p/<sequence>/*.jpg)')
        if os.path.isdir(os.path.join(images, resolution)):
            images = os.path.join(images, resolution)
            annotations = os.path.join(annotations, resolution)
        self.flat = bool(list_images(images))
        self.images_dir = images
        self.annotations_dir = annotations

    def sequence_names(self):
        """Return the sorted names of the sequences present."""
        if self.flat:
            return [os.path.basename(os.path.normpath(self.root))]
        return sorted(n for n in os.listdir(self.images_dir)
                      if os.path.isdir(os.path.join(self.images_dir, n)))

    def sequence(self, name):
        """Return one Sequence; DataError if it is missing or has no frames."""
        if self.flat:
            if name != self.sequence_names()[0]:
                raise DataError(f'sequence {name!r} not found in {self.root}')
            frame_dir, mask_dir = self.images_dir, self.annotations_dir
        else:
            frame_dir = os.path.join(self.images_dir, name)
            mask_dir = os.path.join(self.annotations_dir, name)
        if not os.path.isdir(frame_dir):
            import difflib

            close = difflib.get_close_matches(name, self.sequence_names(), n=3)
            hint = f'; did you mean {", ".join(close)}?' if close else ''
            raise DataError(f'sequence {name!r} not found: no folder {frame_dir}{hint}')
        frames = list_images(frame_dir)
        if not frames:
            raise DataError(f'sequence {name!r} has no frames in {frame_dir}')
        return Sequence(name=name, frame_paths=frames, annotation_dir=mask_dir)


def read_sequences_file(path):
    """Read sequence names, one per line (blank lines and ``#`` comments skipped)."""
    path = os.fspath(path)
    try:
        # utf-8-sig: Windows editors start a UTF-8 file with a byte-order mark
        with open(path, encoding='utf-8-sig') as handle:
            lines = handle.read().splitlines()
    except OSError as error:
        raise DataError(f'cannot read sequences file {path}: {error}') from error
    names = [line.split('#', 1)[0].strip() for line in lines]
    return [name for name in names if name]


#: Largest relative difference of aspect ratio between a mask and its frame that ``fit_labels``
#: resizes over (853x480 against 854x480 is 0.1 %; 480p masks on 1080p frames 0.07 %).
ASPECT_TOLERANCE = 0.02


def same_aspect(size, other):
    """Say whether two (w, h) sizes in px share an aspect ratio within ``ASPECT_TOLERANCE``.

    The one rule for "the same picture at another size": a mask resized to its frame
    (``fit_labels``), a frame resized to a stream's working size (``Session.step``). A size
    with a zero side has no aspect ratio and matches nothing.
    """
    (width, height), (other_w, other_h) = size, other
    if not (width and height and other_w and other_h):
        return False
    return abs((width / height) / (other_w / other_h) - 1.0) <= ASPECT_TOLERANCE


def fit_labels(labels, shape, what, log=None):
    """Return an H×W label map at ``shape`` (H, W): the frame's size.

    A mask of another size with the frame's aspect ratio (within ``ASPECT_TOLERANCE``: a
    pixel lost at export, a mask made at another resolution) is resized by nearest neighbour
    (``Session.step`` applies the same rule to a given mask), and ``log`` (a callable taking
    one line; the label reader's) is told. Another aspect ratio is a mask of another video:
    DataError naming ``what`` (the mask's file).
    """
    labels = np.asarray(labels)
    height, width = int(shape[0]), int(shape[1])
    if labels.shape[:2] == (height, width):
        return labels
    mask_h, mask_w = labels.shape[:2]
    if not same_aspect((mask_w, mask_h), (width, height)):
        raise DataError(f'{what}: mask size {mask_w}x{mask_h} differs from image size '
                        f'{width}x{height} (another aspect ratio: not a mask of this frame)')
    if log is not None:
        log(f'mask {mask_w}x{mask_h} resized to the frame size {width}x{height}')
    return resize_labels(labels, width, height)
