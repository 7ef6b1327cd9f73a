"""One segmentation session per stream: ``step(image, mask=None) -> Result``.

The session owns the object ids (caller's ids, kept stable; Cutie's ObjectManager idea),
converts between input size and the backend's working size, and merges newly given masks
with what it is already tracking. Nothing here knows about ROS or about a particular model.
"""

import dataclasses
import numbers
import time
import typing

import cv2
import numpy as np

from vos_ros.core.backends import create_backend_with_target
from vos_ros.core.backends.base import Backend
from vos_ros.core.davis import fit_labels
from vos_ros.core.davis import same_aspect
from vos_ros.core.errors import DataError
from vos_ros.core.labels import labels_from_array
from vos_ros.core.labels import resize_labels


@dataclasses.dataclass
class SessionConfig:
    """How a session runs, independent of the backend."""

    #: Shorter side of the working size in pixels (aspect kept); 0 = work at input size;
    #: None = the backend's ``default_resolution``. It sizes the frames the backend is given;
    #: a model backend's network still scales them to its own ``resolution`` (a backend
    #: option, e.g. ``Session('memory', resolution=360)``; what ``backend.describe()`` says).
    resolution: typing.Optional[int] = None
    #: Working sizes are rounded to a multiple of this (networks with a stride need it).
    size_multiple: int = 1

    def __post_init__(self):
        if self.resolution is not None and int(self.resolution) < 0:
            raise ValueError(f'resolution must be >= 0 (0 = input size), got {self.resolution}')
        if int(self.size_multiple) < 1:
            raise ValueError(f'size_multiple must be >= 1, got {self.size_multiple}')


@dataclasses.dataclass
class Result:
    """What one step produced."""

    #: H×W uint8 label map at input size (0 background, caller's object ids).
    labels: np.ndarray
    #: Object ids, in the order of ``probs`` channels 1..K.
    object_ids: list
    #: (K + 1)×h×w float32 probabilities at working size (channel 0 = background).
    probs: np.ndarray
    #: Milliseconds spent: ``backend`` (the model), ``total`` (the whole step).
    timing: dict
    #: 0-based index of the frame in this session (since the last reset).
    frame_index: int
    #: What produced the labels: ``given`` (a mask was given with the frame; objects absent
    #: from it were propagated), ``none`` (no object tracked yet), else what propagated the
    #: frame, per backend: ``full`` on every frame of a model backend (``memory``,
    #: ``embedding``); ``cheap`` on every frame of ``flow`` (a cheap path itself, with no full
    #: model); the adaptive backend's ``full`` model or its ``cheap`` path, frame by frame.
    #: A backend of your own says it in ``last_path`` (default ``full``).
    path: str = 'full'
    #: The adaptive backend's estimate (0-100, a predicted IoU in percent) of the cheap path's
    #: result on this frame; None where the cheap path did not run.
    confidence: typing.Optional[float] = None

    def probability(self, object_id):
        """Return the H×W float32 probability of one object at input size."""
        channel = self.object_ids.index(object_id) + 1
        height, width = self.labels.shape
        return cv2.resize(self.probs[channel], (width, height), interpolation=cv2.INTER_LINEAR)


def as_rgb_image(image):
    """Validate and normalise an image to H×W×3 uint8 (gray is stacked, alpha dropped)."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f'image must be uint8, got {image.dtype}')
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    elif image.ndim == 3 and image.shape[2] == 4:
        image = image[:, :, :3]
    elif image.ndim == 3 and image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f'image must be H×W×3 RGB, got shape {image.shape}')
    if image.shape[0] < 2 or image.shape[1] < 2:
        raise ValueError(f'image is too small: {image.shape[1]}x{image.shape[0]}')
    return np.ascontiguousarray(image)


def working_size(width, height, resolution, multiple=1):
    """Return (w, h) with the shorter side ``resolution`` (never upscaled), aspect kept."""
    short = min(width, height)
    scale = 1.0 if resolution <= 0 or resolution >= short else resolution / short
    work_w = max(multiple, int(round(width * scale / multiple)) * multiple)
    work_h = max(multiple, int(round(height * scale / multiple)) * multiple)
    return work_w, work_h


def resize_probs(probs, width, height):
    """Resize (C, h, w) probabilities bilinearly to (C, height, width)."""
    if probs.shape[1:] == (height, width):
        return probs
    channels = probs.shape[0]
    # cv2.resize handles up to 512 channels in one call when they are the last axis.
    if channels <= 512:
        stacked = cv2.resize(np.ascontiguousarray(probs.transpose(1, 2, 0)), (width, height),
                             interpolation=cv2.INTER_LINEAR)
        return stacked.reshape(height, width, channels).transpose(2, 0, 1)
    return np.stack([cv2.resize(p, (width, height)) for p in probs])


class Session:
    """Segment one stream of frames, given label masks on some of them."""

    def __init__(self, backend=None, config=None, **backend_options):
        """Create a session with a Backend instance or a backend name (None = default).

        With a name, ``backend_options`` go to the backend; ``target_confidence`` (0-100) among
        them runs it adaptively (``create_backend_with_target``: e.g. ``memory`` at 70).
        """
        if isinstance(backend, Backend):
            if backend_options:
                raise ValueError('backend options are only accepted with a backend name')
            self.backend = backend
        else:
            target = backend_options.pop('target_confidence', None)
            self.backend = create_backend_with_target(backend, target, **backend_options)
        self.config = config if config is not None else SessionConfig()
        self.reset()

    # -- state ---------------------------------------------------------------------------

    @property
    def object_ids(self):
        """Ids of the objects being tracked, in channel order."""
        return list(self._object_ids)

    @property
    def initialized(self):
        """True once some object is being tracked."""
        return bool(self._object_ids)

    def warm_up(self, width, height, objects=1):
        """Let the backend run once at the working size of ``width``×``height`` frames.

        Returns the milliseconds it took (see ``Backend.warm_up``); the stream's state is
        untouched.
        """
        tic = time.perf_counter()
        self.backend.warm_up(*self._working_size(int(width), int(height)), int(objects))
        return (time.perf_counter() - tic) * 1000.0

    def _working_size(self, width, height):
        """(w, h) the backend works at for ``width``×``height`` frames (config, else the
        backend's default resolution)."""
        resolution = self.config.resolution
        if resolution is None:
            resolution = getattr(self.backend, 'default_resolution', 0) or 0
        return working_size(width, height, int(resolution), int(self.config.size_multiple))

    def reset(self):
        """Forget all objects and the backend's memory."""
        self.backend.reset()
        self._object_ids = []
        #: (w, h) of the stream's first frame and the working size fixed on it
        self._first_size = None
        self._work_size = None
        self._last_image = None
        self._last_probs = None
        self._frame_index = 0

    def remove_objects(self, ids):
        """Stop tracking ``ids``: one object id or an iterable of them.

        Unknown ids and bools raise ValueError and nothing is removed.
        """
        if isinstance(ids, (numbers.Integral, np.bool_)):  # int, numpy integers (bools: below)
            ids = [ids]
        ids = list(ids)
        if any(isinstance(i, (bool, np.bool_)) for i in ids):
            # True would otherwise read as object 1: a mask given where ids were meant
            raise ValueError('object ids are integers, got a bool (give the ids to remove)')
        ids = [int(i) for i in ids]
        unknown = [i for i in ids if i not in self._object_ids]
        if unknown:
            raise ValueError(f'cannot remove unknown object id(s) {unknown}; '
                             f'tracking {self._object_ids}')
        keep = [c + 1 for c, i in enumerate(self._object_ids) if i not in ids]
        self._object_ids = [i for i in self._object_ids if i not in ids]
        if self._last_probs is None:
            return
        if not self._object_ids:
            self.backend.reset()
            self._last_probs = None
            return
        probs = self._last_probs[[0] + keep].copy()
        probs[0] = np.clip(1.0 - probs[1:].sum(axis=0), 0.0, 1.0)
        self._last_probs = probs
        self.backend.memorize(self._last_image, probs)

    # -- stepping ------------------------------------------------------------------------

    def step(self, image, mask=None):
        """Segment ``image`` (H×W×3 uint8 RGB); ``mask`` (H×W labels) sets or adds objects.

        Objects present in ``mask`` take exactly its pixels; objects tracked before but absent
        from it keep their propagated region outside the mask's objects. A mask of another
        size is resized when it has the image's aspect ratio (``davis.fit_labels``); another
        aspect ratio raises DataError and leaves the session as it was. ``mask`` is read by
        ``labels.labels_from_array`` (a float probability in [0, 1] is object 1).

        The working size is fixed on the stream's first frame. A frame of another size with
        that frame's aspect ratio (within ``davis.ASPECT_TOLERANCE``) is resized to it and
        answered at its own size; another aspect ratio, which the resizing would squeeze,
        raises DataError naming both sizes and leaves the session as it was (call ``reset()``
        for a new stream), unless no object is tracked: then the stream starts anew at this
        frame's size. Bad images or masks raise ValueError.
        """
        start = time.perf_counter()
        image = as_rgb_image(image)
        height, width = image.shape[:2]
        # The frame and the mask are checked before the session changes: a refused one
        # (DataError) leaves the objects tracked so far, or an uninitialised session, as they
        # were.
        new_stream = self._work_size is None or not self._fits_stream(width, height)
        full_mask = None
        if mask is not None:
            full_mask = self._check_mask(mask, width, height)
            if not full_mask.any() and not self._object_ids:
                full_mask = None
        if new_stream:
            self._first_size = (width, height)
            self._work_size = self._working_size(width, height)
        work_w, work_h = self._work_size
        work_image = image if (width, height) == (work_w, work_h) else cv2.resize(
            image, (work_w, work_h), interpolation=cv2.INTER_AREA)

        backend_ms = 0.0
        path = 'given' if full_mask is not None else 'full'
        confidence = None
        if full_mask is None and not self._object_ids:
            probs = np.ones((1, work_h, work_w), np.float32)
            path = 'none'
        else:
            propagated = None
            if self._object_ids and self._last_probs is not None:
                tic = time.perf_counter()
                propagated = self.backend.propagate(work_image)
                backend_ms += (time.perf_counter() - tic) * 1000.0
                if full_mask is None:
                    path = getattr(self.backend, 'last_path', 'full')
                    confidence = getattr(self.backend, 'last_confidence', None)
            if full_mask is None:
                probs = propagated
            else:
                probs = self._merge_mask(full_mask, propagated, work_w, work_h)
                tic = time.perf_counter()
                self.backend.memorize(work_image, probs)
                backend_ms += (time.perf_counter() - tic) * 1000.0
        probs = np.asarray(probs, dtype=np.float32)
        labels = self._labels_at(probs, width, height)
        if full_mask is not None:
            given = full_mask > 0
            labels[given] = full_mask[given]
            stale = np.isin(labels, np.unique(full_mask[given])) & ~given
            labels[stale] = 0
        self._last_image = work_image
        self._last_probs = probs if self._object_ids else None
        result = Result(labels=labels, object_ids=self.object_ids, probs=probs,
                        timing={'backend': backend_ms,
                                'total': (time.perf_counter() - start) * 1000.0},
                        frame_index=self._frame_index, path=path, confidence=confidence)
        self._frame_index += 1
        return result

    def propagate(self, frames, masks):
        """Yield ``(index, Result)`` over ``frames``; ``masks`` is a first-frame label map or
        a dict ``{frame_index: label map}`` (objects added or reset on those frames)."""
        if not isinstance(masks, dict):
            masks = {0: masks}
        for index, frame in enumerate(frames):
            yield index, self.step(frame, masks.get(index))

    # -- helpers -------------------------------------------------------------------------

    def accepts_frame(self, width, height):
        """Say whether ``step`` takes a ``width``×``height`` frame (px) without DataError.

        False only for a frame of another aspect ratio than the stream's first one while
        objects are tracked (see ``step``); a live shell can then skip the frame as a bad one
        instead of failing a step.
        """
        if self._work_size is None:
            return True
        try:
            self._fits_stream(int(width), int(height))
        except DataError:
            return False
        return True

    def _fits_stream(self, width, height):
        """Say whether a ``width``×``height`` frame belongs to the stream started so far.

        True for the first frame's aspect ratio (``davis.same_aspect``, the rule of
        ``davis.fit_labels``); False for another one while no object is tracked (nothing to
        squeeze: the stream starts anew); DataError naming both sizes otherwise.
        """
        first_w, first_h = self._first_size
        if same_aspect((width, height), self._first_size):
            return True
        if not self._object_ids:
            return False
        work_w, work_h = self._work_size
        raise DataError(f'frame size {width}x{height} has another aspect ratio than the '
                        f"stream's first frame {first_w}x{first_h} (working size "
                        f'{work_w}x{work_h}; resizing would squeeze the objects): call reset() '
                        'for a new stream')

    def _check_mask(self, mask, width, height):
        """Return a given mask as a label map at the frame's size ``width``×``height``.

        A mask of the frame's aspect ratio (``davis.fit_labels``, the rule ``vos_eval`` uses)
        or of this frame's working size is resized by nearest neighbour; another aspect ratio
        is a mask of other frames, which resizing would stretch: DataError.
        """
        mask = labels_from_array(mask)
        # The working size keeps the aspect ratio only to within its rounding to
        # size_multiple (up to 3 % at 240 px with 16), yet a mask at that size is of this frame.
        work_w, work_h = self._working_size(width, height)
        if mask.shape != (height, width) and mask.shape == (work_h, work_w):
            return resize_labels(mask, width, height)
        return fit_labels(mask, (height, width), 'given mask')

    def _merge_mask(self, full_mask, propagated, work_w, work_h):
        mask = cv2.resize(full_mask, (work_w, work_h), interpolation=cv2.INTER_NEAREST)
        given_ids = [int(i) for i in np.unique(full_mask) if i != 0]
        for object_id in given_ids:
            if object_id not in self._object_ids:
                self._object_ids.append(object_id)
        probs = np.zeros((len(self._object_ids) + 1, work_h, work_w), np.float32)
        outside = (mask == 0).astype(np.float32)
        for channel, object_id in enumerate(self._object_ids, start=1):
            if object_id in given_ids:
                probs[channel] = mask == object_id
            elif propagated is not None and channel < propagated.shape[0]:
                probs[channel] = propagated[channel] * outside
        probs[0] = np.clip(1.0 - probs[1:].sum(axis=0), 0.0, 1.0)
        return probs

    def _labels_at(self, probs, width, height):
        if probs.shape[0] == 1:
            return np.zeros((height, width), np.uint8)
        if probs.shape[0] == 2:
            # One object: bilinear resizing is linear, so argmax over the two upsampled
            # channels is the sign of the upsampled difference; one channel instead of two
            # plus an argmax is 20x cheaper at 854x480.
            if probs.shape[1:] == (height, width):
                margin = probs[1] - probs[0]
            else:
                margin = cv2.resize(probs[1] - probs[0], (width, height),
                                    interpolation=cv2.INTER_LINEAR)
            return (margin > 0).view(np.uint8) * np.uint8(self._object_ids[0])
        full = resize_probs(probs, width, height)
        lut = np.array([0] + self._object_ids, dtype=np.uint8)
        return lut[np.argmax(full, axis=0)]
