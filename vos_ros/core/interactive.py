"""Masks from a box and clicks with the learned ``box`` model, GrabCut as the fallback.

The model (``vos_ros.core.models.box_net``, shipped as ``vos_ros/data/box.pt``) sees a square
crop around the box grown by ``context`` (a share of the box size on every side, the crop's
aspect limited to 2:1 before it is resized to ``crop_size``) and four hint maps: the box, the
positive and negative click discs and the previous mask. Its image encoder runs once per crop;
each further click runs only the decoder, with the last result as the previous mask (RITM's
iterative protocol, the one the model was trained with).

:class:`PromptSegmenter` is what the tools use: the model when torch and the model file are
there, otherwise :mod:`vos_ros.core.annotation` (GrabCut), saying once why. :func:`next_click`
simulates a user the way interactive-segmentation benchmarks do (the next click at the centre
of the largest error region); training and ``bench/annotate_quality.py`` use it.

Geometry, hints and click simulation need numpy and OpenCV only; torch is imported on first use
of the model.
"""

import logging
import os

import cv2
import numpy as np

from vos_ros.core import annotation
from vos_ros.core.errors import ModelError

LOGGER = logging.getLogger(__name__)

#: Methods :class:`PromptSegmenter` knows: ``auto`` = the model when it loads, else GrabCut.
METHODS = ('auto', 'model', 'grabcut')
#: The method when none is asked for: the shipped model beat GrabCut on the hold-out (box
#: 0.905 vs 0.849 mean IoU, worst 0.696 vs 0.461, 3 clicks 0.929 vs 0.901; README), and
#: GrabCut takes over wherever the model cannot load.
DEFAULT_METHOD = 'auto'
#: Defaults of the geometry when a model's metadata does not say (training writes them).
DEFAULT_CROP_SIZE = 256
DEFAULT_CONTEXT = 0.2
DEFAULT_CLICK_RADIUS = 5
#: The crop's longer side is at most this many times its shorter side.
MAX_ASPECT = 2.0
#: With a box, the mask stays inside the box grown by this share of its size on each side.
BOX_SLACK = 0.05
#: A crop is never smaller than this (image pixels): tiny boxes get some context.
MIN_CROP = 24.0
#: Clicks without a box: first crop side as a share of the image's shorter side.
POINTS_CROP_SHARE = 0.5
#: Clicks without a box: how often the crop may grow to the mask found (it touched the border).
POINTS_GROW_STEPS = 2
#: Colour outside the image (ImageNet mean: zero after the normalisation).
IMAGENET_MEAN = (123.675, 116.28, 103.53)

_SAID = set()


def _say_once(log, message):
    """Send ``message`` to ``log`` the first time this process sees it."""
    if message in _SAID:
        return
    _SAID.add(message)
    log(message)


# -- geometry --------------------------------------------------------------------------------


def crop_window(box, context=DEFAULT_CONTEXT, max_aspect=MAX_ASPECT, min_size=MIN_CROP):
    """Return the crop ``(x, y, width, height)`` (float, pixel edges) around an inclusive box.

    The box grows by ``context`` of its width / height on each side; the shorter side of the
    crop then grows until the aspect is at most ``max_aspect``. The crop may leave the image.
    """
    x0, y0, x1, y1 = (float(v) for v in box)
    width, height = x1 - x0 + 1.0, y1 - y0 + 1.0
    crop_w = max(width * (1.0 + 2.0 * context), min_size)
    crop_h = max(height * (1.0 + 2.0 * context), min_size)
    crop_w = max(crop_w, crop_h / max_aspect)
    crop_h = max(crop_h, crop_w / max_aspect)
    centre_x, centre_y = (x0 + x1 + 1.0) / 2.0, (y0 + y1 + 1.0) / 2.0
    return centre_x - crop_w / 2.0, centre_y - crop_h / 2.0, crop_w, crop_h


def crop_matrix(window, size):
    """Return the 2x3 affine map from image pixel centres to crop pixel centres."""
    x, y, width, height = window
    sx, sy = size / width, size / height
    return np.array([[sx, 0.0, sx * (0.5 - x) - 0.5],
                     [0.0, sy, sy * (0.5 - y) - 0.5]], np.float64)


def to_crop(matrix, x, y):
    """Map an image point to crop coordinates."""
    return (matrix[0, 0] * x + matrix[0, 2], matrix[1, 1] * y + matrix[1, 2])


def warp_crop(image, window, size, border_value=IMAGENET_MEAN, linear=True):
    """Cut ``window`` out of ``image`` (H×W or H×W×C) resized to ``size`` × ``size``.

    A window much larger than ``size`` is first shrunk with area averaging (no aliasing), then
    warped; outside the image the crop is ``border_value``.
    """
    x, y, width, height = window
    scale = size / max(width, height)
    matrix = crop_matrix(window, size)
    source = image
    if scale < 0.5 and linear:
        img_h, img_w = image.shape[:2]
        # only the part of the image the window covers, shrunk to twice the crop's scale
        left, top = max(0, int(np.floor(x))), max(0, int(np.floor(y)))
        right = min(img_w, int(np.ceil(x + width)))
        bottom = min(img_h, int(np.ceil(y + height)))
        if right - left >= 2 and bottom - top >= 2:
            factor = 2.0 * scale
            part = image[top:bottom, left:right]
            small_w = max(1, int(round((right - left) * factor)))
            small_h = max(1, int(round((bottom - top) * factor)))
            source = cv2.resize(part, (small_w, small_h), interpolation=cv2.INTER_AREA)
            fx, fy = small_w / (right - left), small_h / (bottom - top)
            # crop = M * image = M * (S^-1 * small + offset)
            matrix = matrix @ np.array([[1.0 / fx, 0.0, left + 0.5 / fx - 0.5],
                                        [0.0, 1.0 / fy, top + 0.5 / fy - 0.5],
                                        [0.0, 0.0, 1.0]])
    flags = cv2.INTER_LINEAR if linear else cv2.INTER_NEAREST
    if np.ndim(source) == 3:
        border = tuple(float(v) for v in border_value)
    else:
        border = float(border_value if np.isscalar(border_value) else 0.0)
    return cv2.warpAffine(np.ascontiguousarray(source), matrix, (size, size), flags=flags,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=border)


def box_map(box, matrix, size):
    """Return the float32 ``size`` × ``size`` map that is 1 inside ``box`` (crop coordinates)."""
    x0, y0 = to_crop(matrix, box[0] - 0.5, box[1] - 0.5)
    x1, y1 = to_crop(matrix, box[2] + 0.5, box[3] + 0.5)
    out = np.zeros((size, size), np.float32)
    # pixel centres (i) inside [x0 + 0.5, x1 + 0.5) in centre coordinates
    c0, c1 = max(0, int(np.ceil(x0))), min(size, int(np.ceil(x1)))
    r0, r1 = max(0, int(np.ceil(y0))), min(size, int(np.ceil(y1)))
    out[r0:r1, c0:c1] = 1.0
    return out


def disc_map(points, size, radius=DEFAULT_CLICK_RADIUS, out=None):
    """Draw discs of ``radius`` at crop points ``[(x, y), …]`` into a float32 map."""
    if out is None:
        out = np.zeros((size, size), np.float32)
    for x, y in points:
        if -radius <= x < size + radius and -radius <= y < size + radius:
            cv2.circle(out, (int(round(x)), int(round(y))), int(radius), 1.0, -1)
    return out


def hint_maps(size, box=None, positive=(), negative=(), previous=None, radius=None,
              positive_map=None, negative_map=None):
    """Stack the four hint maps ``[4, size, size]`` (crop coordinates, float32).

    ``box`` is a crop-space map (or None: no box); ``positive`` / ``negative`` crop points;
    ``previous`` a crop-space mask (or None); ``*_map`` extra crop-space strokes.
    """
    radius = DEFAULT_CLICK_RADIUS if radius is None else radius
    hints = np.zeros((4, size, size), np.float32)
    if box is not None:
        hints[0] = box
    disc_map(positive, size, radius, hints[1])
    disc_map(negative, size, radius, hints[2])
    if positive_map is not None:
        np.maximum(hints[1], positive_map, out=hints[1])
    if negative_map is not None:
        np.maximum(hints[2], negative_map, out=hints[2])
    if previous is not None:
        hints[3] = previous
    return hints


# -- click simulation ------------------------------------------------------------------------


def next_click(prediction, truth):
    """Return the next simulated click ``(x, y, positive)`` or None when there is no error.

    The click goes to the interior point (farthest from the region's edge) of the largest
    connected error region; it is positive when that region is missed object.
    """
    prediction = np.asarray(prediction, bool)
    truth = np.asarray(truth, bool)
    error = prediction != truth
    if not error.any():
        return None
    count, components, stats, _ = cv2.connectedComponentsWithStats(error.astype(np.uint8), 8)
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    left, top = stats[largest, cv2.CC_STAT_LEFT], stats[largest, cv2.CC_STAT_TOP]
    width, height = stats[largest, cv2.CC_STAT_WIDTH], stats[largest, cv2.CC_STAT_HEIGHT]
    region = components[top:top + height, left:left + width] == largest
    padded = np.pad(region, 1).astype(np.uint8)
    distance = cv2.distanceTransform(padded, cv2.DIST_L2, 5)[1:-1, 1:-1]
    y, x = np.unravel_index(int(np.argmax(distance)), distance.shape)
    x, y = int(x + left), int(y + top)
    return x, y, bool(truth[y, x])


def iou(a, b):
    """Intersection over union of two bool masks (1.0 when both are empty)."""
    a = np.asarray(a, bool)
    b = np.asarray(b, bool)
    union = np.count_nonzero(a | b)
    return 1.0 if union == 0 else np.count_nonzero(a & b) / union


# -- the model -------------------------------------------------------------------------------


class BoxModel:
    """The ``box`` model file: crop, encode (cached per crop), decode hints, warp back.

    ``path`` defaults to the shipped ``vos_ros/data/box.pt``. ``runtime``: ``opencv`` runs the
    ONNX copy the file holds (``box.onnx``, written by ``vos_export``) with OpenCV's DNN module
    and never imports torch (the import alone is 2 s of a 3 s command); ``torch`` runs the
    TorchScript network (and caches the encoder per crop, which the window's clicks reuse);
    ``auto`` (default) takes OpenCV on the CPU when the file has the ONNX copy, else torch.
    Raises ModelError when the file is missing or not a ``box`` model, and when neither
    runtime can run it (torch missing and no ONNX copy).
    """

    def __init__(self, path=None, device='cpu', threads=None, flip=True, runtime='auto'):
        from vos_ros.core import model_io

        if runtime not in ('auto', 'opencv', 'torch'):
            raise ValueError(f'runtime must be auto, opencv or torch, got {runtime!r}')
        path = model_io.default_model_path('box') if path is None else os.fspath(path)
        meta = model_io.read_metadata(path, kinds=('box',))
        self.loaded = None
        self._net = None
        onnx = None
        if runtime == 'opencv' or (runtime == 'auto' and str(device) in ('cpu', 'auto')):
            onnx = model_io.read_extra_file(path, model_io.BOX_ONNX_FILE)
            if onnx is None and runtime == 'opencv':
                raise ModelError(f'{path} holds no ONNX copy: export it again with vos_export '
                                 '(onnx installed) or use runtime torch')
        if onnx is not None:
            try:
                self._net = cv2.dnn.readNetFromONNX(np.frombuffer(onnx, np.uint8))
            except cv2.error as error:
                if runtime == 'opencv':
                    raise ModelError(f'OpenCV cannot read the ONNX copy in {path}: '
                                     f'{str(error).strip()}') from error
                LOGGER.info('OpenCV cannot read the ONNX copy (%s); using torch', error)
        if self._net is None:
            self.loaded = model_io.load_model(path, device=device, half=False, kinds=('box',))
            meta = self.loaded.meta
        elif threads:
            cv2.setNumThreads(int(threads))
        self._meta = meta
        self.runtime = 'opencv' if self._net is not None else 'torch'
        self.path = path
        self.size = int(meta['crop_size'])
        self.context = float(meta.get('context', DEFAULT_CONTEXT))
        self.radius = float(meta.get('click_radius', DEFAULT_CLICK_RADIUS))
        self.threshold = float(meta.get('threshold', 0.0))
        # test-time augmentation: average the logits of the crop and its mirror image
        self.flip = bool(flip)
        if threads and self.loaded is not None:
            import torch

            torch.set_num_threads(int(threads))
        self._cache_key = None
        self._features = None

    @property
    def meta(self):
        """The model's metadata (``vos.json``)."""
        return self._meta

    def window(self, box):
        """Return the crop window of an inclusive box."""
        return crop_window(box, self.context)

    def _encode(self, image, window):
        """Return the encoder features of the crop (cached for the last image and window)."""
        torch = self._torch()
        key = (image.__array_interface__['data'][0], image.shape,
               int(image[::max(1, image.shape[0] // 7), ::max(1, image.shape[1] // 7)].sum()),
               tuple(round(v, 3) for v in window), self.size, self.flip)
        if key != self._cache_key:
            crop = warp_crop(image, window, self.size)
            tensor = self.loaded.normalize(crop)
            if self.flip:
                tensor = torch.cat([tensor, tensor.flip(-1)])
            with torch.inference_mode():
                self._features = self.loaded.module.encode(tensor)
            self._cache_key = key
        return self._features

    @staticmethod
    def _torch():
        import torch

        return torch

    def crop_probabilities(self, image, window, hints):
        """Return the object probability map (crop size, float32) for hint maps ``[4,S,S]``."""
        if self._net is not None:
            return self._crop_probabilities_opencv(image, window, hints)
        torch = self._torch()
        features = self._encode(image, window)
        with torch.inference_mode():
            tensor = torch.from_numpy(np.ascontiguousarray(hints, np.float32))[None]
            if self.flip:
                tensor = torch.cat([tensor, tensor.flip(-1)])
            logits = self.loaded.module.decode(features[0], features[1], features[2],
                                               features[3], tensor.to(self.loaded.device))
            if self.flip:
                logits = 0.5 * (logits[:1] + logits[1:].flip(-1))
            logits = torch.nn.functional.interpolate(logits, size=(self.size, self.size),
                                                     mode='bilinear', align_corners=False)
            return torch.sigmoid(logits - self.threshold)[0, 0].float().cpu().numpy()

    def _crop_probabilities_opencv(self, image, window, hints):
        """``crop_probabilities`` through the ONNX copy: the crop and its mirror in one pass
        (the network of ``model_to_onnx`` takes exactly that pair)."""
        crop = warp_crop(image, window, self.size).astype(np.float32)
        crop = (crop - np.asarray(self._meta['mean'], np.float32)) \
            / np.asarray(self._meta['std'], np.float32)
        crop = crop.transpose(2, 0, 1)
        hints = np.asarray(hints, np.float32)
        if self.flip:
            images = np.stack([crop, crop[:, :, ::-1]])
            pair = np.stack([hints, hints[:, :, ::-1]])
        else:
            images = np.stack([crop, crop])
            pair = np.stack([hints, hints])
        self._net.setInput(np.ascontiguousarray(images), 'image')
        self._net.setInput(np.ascontiguousarray(pair), 'hints')
        logits = self._net.forward()[:, 0]
        logits = 0.5 * (logits[0] + logits[1][:, ::-1]) if self.flip else logits[0]
        # bilinear with half-pixel centres, as F.interpolate(align_corners=False)
        logits = cv2.resize(np.ascontiguousarray(logits), (self.size, self.size),
                            interpolation=cv2.INTER_LINEAR)
        return (1.0 / (1.0 + np.exp(-(logits - self.threshold)))).astype(np.float32)

    def to_image(self, probabilities, window, shape):
        """Warp crop probabilities back to an image of ``shape`` (0 outside the crop)."""
        matrix = crop_matrix(window, self.size)
        return cv2.warpAffine(probabilities, matrix, (shape[1], shape[0]),
                              flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)

    def predict(self, image, box=None, positive=(), negative=(), previous=None,
                positive_map=None, negative_map=None, window=None):
        """Return the bool object mask (image size) for the prompts.

        ``box``: inclusive ``(x0, y0, x1, y1)`` or None (clicks only); ``positive`` /
        ``negative``: image points; ``previous``: the last bool mask (refinement);
        ``*_map``: bool image-size strokes (scribbles). ``window`` overrides the crop.
        """
        height, width = image.shape[:2]
        prompt_box = _prompt_box(box, positive, previous, positive_map, (height, width))
        if window is None:
            window = self.window(prompt_box)
        matrix = crop_matrix(window, self.size)
        scale = self.size / max(window[2], window[3])
        crop_box = box_map(box, matrix, self.size) if box is not None else None
        maps = {}
        for name, stroke in (('positive_map', positive_map), ('negative_map', negative_map)):
            if stroke is not None and np.any(stroke):
                maps[name] = (warp_crop(np.asarray(stroke, np.float32), window, self.size, 0.0)
                              > 0.2).astype(np.float32)
        crop_previous = None
        if previous is not None and np.any(previous):
            crop_previous = (warp_crop(np.asarray(previous, np.float32), window, self.size, 0.0)
                             > 0.5).astype(np.float32)
        hints = hint_maps(self.size, crop_box,
                          [to_crop(matrix, x, y) for x, y in positive],
                          [to_crop(matrix, x, y) for x, y in negative],
                          crop_previous, self.radius, **maps)
        LOGGER.debug('crop %s at scale %.2f', window, scale)
        probabilities = self.crop_probabilities(image, window, hints)
        mask = self.to_image(probabilities, window, (height, width)) > 0.5
        if box is not None:
            # A drawn box holds the object: training boxes cut at most 3 % of it off, so
            # anything beyond BOX_SLACK of the box (grown to take in positive clicks) is not it.
            x0, y0, x1, y1 = _grown(prompt_box, BOX_SLACK)
            inside = np.zeros((height, width), bool)
            inside[max(0, int(np.floor(y0)) - 1):max(0, int(np.ceil(y1)) + 2),
                   max(0, int(np.floor(x0)) - 1):max(0, int(np.ceil(x1)) + 2)] = True
            mask &= inside
        return mask


def _prompt_box(box, positive, previous, positive_map, shape):
    """The box that the crop is built around: the box, grown to take in positive prompts.

    Without a box: the previous mask's box with the clicks, or a square around the clicks.
    """
    height, width = shape
    xs, ys = [], []
    if box is not None:
        xs += [box[0], box[2]]
        ys += [box[1], box[3]]
    elif previous is not None and np.any(previous):
        rows, cols = np.nonzero(previous)
        xs += [cols.min(), cols.max()]
        ys += [rows.min(), rows.max()]
    for x, y in positive:
        xs.append(x)
        ys.append(y)
    if positive_map is not None and np.any(positive_map):
        rows, cols = np.nonzero(positive_map)
        xs += [cols.min(), cols.max()]
        ys += [rows.min(), rows.max()]
    if not xs:
        raise ValueError('the model needs a box, a previous mask or a positive click')
    x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
    if box is None and (previous is None or not np.any(previous)):
        # clicks alone: a square of half the image's shorter side around them
        half = max(POINTS_CROP_SHARE * min(height, width), x1 - x0, y1 - y0) / 2.0
        centre_x, centre_y = (x0 + x1) / 2.0, (y0 + y1) / 2.0
        x0, x1, y0, y1 = centre_x - half, centre_x + half, centre_y - half, centre_y + half
    return x0, y0, x1, y1


# -- the tools' entry point ------------------------------------------------------------------


class PromptSegmenter:
    """Box / click / scribble prompts to a bool mask: the ``box`` model, or GrabCut.

    ``method``: ``auto`` (model when torch and the model file load, else GrabCut, saying once
    why through ``log``), ``model`` (ModelError when it cannot load) or ``grabcut``. The model is
    loaded on first use, so a tool that never segments never imports torch.
    """

    def __init__(self, method=None, model_path=None, device='cpu', log=None):
        method = DEFAULT_METHOD if method is None else method
        if method not in METHODS:
            raise ValueError(f'unknown annotation method {method!r}; choose one of '
                             f'{", ".join(METHODS)}')
        self.requested = method
        self.model_path = model_path
        self.device = device
        self.log = log or LOGGER.warning
        self._model = None
        self._resolved = None if method != 'grabcut' else 'grabcut'

    @property
    def method(self):
        """``model`` or ``grabcut`` (loads the model the first time it is asked)."""
        if self._resolved is None:
            try:
                self._model = BoxModel(self.model_path, self.device)
                self._resolved = 'model'
            except (ModelError, ImportError) as error:
                if self.requested == 'model':
                    raise ModelError(f'the box model cannot be used: {error}') from error
                _say_once(self.log, f'box model unavailable ({error}); using GrabCut')
                self._resolved = 'grabcut'
        return self._resolved

    @property
    def model(self):
        """The loaded :class:`BoxModel` (None with GrabCut)."""
        return self._model if self.method == 'model' else None

    def box(self, image, box):
        """Segment the object inside an inclusive box."""
        image = annotation.check_image(image)
        box = annotation.check_box(box, image.shape[1], image.shape[0])
        if self.method == 'grabcut':
            return annotation.box_to_mask(image, box)
        mask = self._model.predict(image, box)
        if not mask.any():
            LOGGER.info('the model found nothing in box %s; using GrabCut', box)
            return annotation.box_to_mask(image, box)
        return mask

    def clicks(self, image, points, box=None, previous=None):
        """Segment from clicks ``[(x, y, label), …]``, each click refining the last result.

        With the model the box (if any) is segmented first, then one click at a time with the
        last mask as the previous mask, exactly as a user clicking in the window would. GrabCut
        takes all clicks at once. ``previous`` (bool mask) continues an earlier result.
        """
        image = annotation.check_image(image)
        height, width = image.shape[:2]
        clicks = _check_points(points, width, height)
        if box is not None:
            box = annotation.check_box(box, width, height)
        if self.method == 'grabcut':
            if previous is not None and previous.any() and clicks:
                positive = _click_map([c for c in clicks if c[2]], (height, width))
                negative = _click_map([c for c in clicks if not c[2]], (height, width))
                return annotation.refine_mask(image, previous, positive, negative)
            return annotation.points_to_mask(image, clicks, box=box)
        has_previous = previous is not None and previous.any()
        if box is None and not has_previous and not any(c[2] for c in clicks):
            raise ValueError('clicks without a box need at least one positive click (label 1)')
        mask = previous
        if box is not None and (mask is None or not mask.any()):
            mask = self.box(image, box)
        done = []
        for click in clicks:
            done.append(click)
            mask = self.refine(image, done, box=box, previous=mask)
        return mask

    def refine(self, image, clicks, box=None, previous=None, positive_map=None,
               negative_map=None):
        """One model step: all clicks so far (and strokes) with the last mask as previous."""
        model = self.model
        positive = [(x, y) for x, y, label in clicks if label]
        negative = [(x, y) for x, y, label in clicks if not label]
        if model is None:
            pos = _click_map([c for c in clicks if c[2]], image.shape[:2])
            neg = _click_map([c for c in clicks if not c[2]], image.shape[:2])
            if positive_map is not None:
                pos |= positive_map
            if negative_map is not None:
                neg |= negative_map
            if previous is None or not previous.any():
                return annotation.points_to_mask(image, clicks, box=box)
            return annotation.refine_mask(image, previous, pos, neg)
        if box is None and (previous is None or not previous.any()):
            return self._clicks_only(image, positive, negative, positive_map, negative_map)
        return model.predict(image, box, positive, negative, previous, positive_map,
                             negative_map)

    def _clicks_only(self, image, positive, negative, positive_map, negative_map):
        """Clicks without a box or mask: grow the crop while the mask reaches its border."""
        model = self._model
        window = model.window(_prompt_box(None, positive, None, positive_map, image.shape[:2]))
        mask = model.predict(image, None, positive, negative, None, positive_map, negative_map,
                             window=window)
        for _ in range(POINTS_GROW_STEPS):
            if not mask.any():
                break
            rows, cols = np.nonzero(mask)
            found = (cols.min(), rows.min(), cols.max(), rows.max())
            if not _touches_border(found, window, image.shape[:2]):
                break
            # the object is larger than the crop: crop around what was found and look again
            window = model.window(_grown(found, 0.15))
            mask = model.predict(image, None, positive, negative, mask, positive_map,
                                 negative_map, window=window)
        return mask

    def scribble(self, image, previous, positive_map=None, negative_map=None, box=None):
        """Refine ``previous`` with bool stroke maps (the window's scribbles)."""
        image = annotation.check_image(image)
        if self.method == 'grabcut':
            empty = np.zeros(image.shape[:2], bool)
            return annotation.refine_mask(
                image, previous, empty if positive_map is None else positive_map,
                empty if negative_map is None else negative_map)
        return self.refine(image, [], box=box, previous=previous, positive_map=positive_map,
                           negative_map=negative_map)


def _grown(box, share):
    x0, y0, x1, y1 = box
    pad_x, pad_y = share * (x1 - x0 + 1), share * (y1 - y0 + 1)
    return x0 - pad_x, y0 - pad_y, x1 + pad_x, y1 + pad_y


def _touches_border(found, window, shape):
    """True if a mask's box reaches the crop's edge where the crop is inside the image."""
    x, y, width, height = window
    x0, y0, x1, y1 = found
    margin_x, margin_y = 0.03 * width + 1, 0.03 * height + 1
    return ((x0 - x < margin_x and x > 0) or (y0 - y < margin_y and y > 0)
            or (x + width - 1 - x1 < margin_x and x + width < shape[1])
            or (y + height - 1 - y1 < margin_y and y + height < shape[0]))


def _check_points(points, width, height):
    """Return clicks as ``[(x, y, label)]`` ints; ValueError for a bad one."""
    out = []
    for point in points:
        if len(point) != 3:
            raise ValueError(f'a click is x,y,label, got {point!r}')
        x, y, label = (int(round(float(v))) for v in point)
        if not (0 <= x < width and 0 <= y < height):
            raise ValueError(f'click {x},{y} lies outside the {width}x{height} image')
        if label not in (0, 1):
            raise ValueError(f'click label must be 1 (object) or 0 (background), got {label}')
        out.append((x, y, label))
    return out


def _click_map(clicks, shape, radius=annotation.CLICK_RADIUS):
    """Bool map of click discs (GrabCut's hard constraints)."""
    out = np.zeros(shape[:2], np.uint8)
    for x, y, _ in clicks:
        cv2.circle(out, (int(x), int(y)), radius, 1, -1)
    return out > 0
