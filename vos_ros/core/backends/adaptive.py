"""Adaptive compute: a cheap path on most frames, the full model when confidence drops.

Seed system 003 (keyframe scheduling with a decision network) warped its last result with
optical flow on most frames and ran its segmentation network only when a small decision network
predicted that the warped result had fallen below a **confidence target**. This backend does the
same with any two backends:

- ``full`` (default ``memory``, the space-time memory network) and
- ``cheap``: ``roi`` (the default where the full model has one: the same memory network on a
  crop around the previous result, reading the memory the full frames built and writing
  nothing, ``MemoryBackend.propagate_roi``), ``light`` (the same on the whole frame at a
  lower resolution, ``MemoryBackend.propagate_light``) or ``flow`` (weight-free optical flow +
  local colour; the torch-free path, and the default for full models without a light pass).

Measured on DAVIS-2016 training sequences (10 the memory model was trained on but neither
estimate fitted on, full model on every third frame and the cheap path on the others): the
light pass at 160 px lost 2.9 J&F against the full model on every frame, flow 8.5: flow's
errors on fast non-rigid motion accumulate, the light pass reads the same memory every frame.
The ROI pass keeps the full model's scale on the object (DAVIS objects fill 5-30 % of a
frame): at target 50 (the default) it lost 0.1 J&F on bench/adaptive_tune.txt and gained 1.2
on the hold-out (bench/memory_holdout.txt), with the full model on one frame in six, at ~1.5x
the full model's speed (bench/README.md "The ROI pass at full scale").

Two failures are seen rather than estimated, and refused at any target under 100: an ROI
result whose object runs into a side of its crop (``cut_at_crop``: the part past it is
missing) and a cheap result in which an object wins no pixel (``reject_lost``: only the full
model searches the whole frame, and the estimate sees nothing wrong with an empty mask).

Each frame, with ``target_confidence`` T (0-100):

- T = 100: the full model runs on every frame; the cheap path is never touched, and the results
  are exactly those of the full backend alone.
- otherwise the cheap path propagates the frame and ``vos_ros.core.confidence`` estimates its
  quality (a predicted IoU in percent; the worst object counts). At or above T the cheap result
  is the frame's result; under T the full model runs on the frame instead and its result
  refreshes the cheap path (``cheap.memorize``). After ``max_cheap_frames`` cheap frames in a row
  the full model runs without asking (the cheap path is skipped on that frame).
- Back-off: a rejected cheap result cost its cheap pass on top of the full run. After a
  rejection the next 1 frame runs the full model without trying the cheap path, after a second
  rejection in a row the next 2, then 4, up to ``max_backoff``; an accepted cheap result (or a
  new target) ends it. On a hard stretch the adaptive backend then costs about what the full
  model costs, instead of 1.4x that.

The full model only sees the frames it runs on: its memory (first mask, keyframes, last full
frame) is built from its own results, never from the cheap path's. ``last_path`` ('full' or
'cheap') says what produced the last result and ``last_confidence`` what the estimate said of
the cheap result of that frame (None where the cheap path did not run; under the target on a
full frame the confidence caused); the session copies them into ``Result.path`` and
``Result.confidence``.

The cheap path works at its own resolution (``cheap_resolution``, default 160 px for the light
pass, the cheap backend's ``default_resolution`` for a backend: 200 px for ``flow``); the
session's working size is the full backend's.
"""

import logging

import cv2
import numpy as np

from vos_ros.core.backends.base import Backend
from vos_ros.core.confidence import CheapPathFeatures
from vos_ros.core.confidence import ConfidenceModel

LOGGER = logging.getLogger(__name__)

#: Default ``target_confidence`` of backend ``adaptive``, chosen by measurement on
#: bench/adaptive_tune.txt (10 DAVIS-2016 train sequences outside the hold-out; bench/README.md
#: "The ROI pass at full scale"): with the ROI pass at full scale (at most 8 in a row) target
#: 50 lost 0.1 J&F against the full model on every frame at 1.55-1.65x its speed (15 % full
#: frames); 70 lost 1.4: the estimate rejected good frames on mallard-fly and the full model's
#: memory then followed other frames. Its two guards (``clipped``, ``lost``) refuse the
#: failures it cannot see at any target.
DEFAULT_TARGET = 50
#: Default ``max_cheap_frames`` by cheap path: the longest run of cheap frames before a forced
#: full run. Light pass: measured on 10 DAVIS-2016 train sequences (bench/README.md), at most
#: 2 in a row lost 2.8 J&F at target 70 against 4.4 for at most 4 (at 80); ROI pass at full
#: scale, target 50 (bench/adaptive_tune.txt, one interleaved run): at most 8 / 12 / 16 / 24
#: lost 0.1 / 0.3 / 0.4 / 0.6 at 1.64x / 1.72x / 1.73x / 1.79x the full model's speed; flow: 8.
DEFAULT_MAX_CHEAP = {'light': 2, 'roi': 8, 'flow': 8}
#: Default ``max_backoff``: at most this many frames skip the cheap path after rejections.
DEFAULT_MAX_BACKOFF = 8
#: With ``cheap='auto'`` and a light pass: targets under this run the flow cheap path instead
#: of the ROI pass. Flow costs less still, at a price in accuracy (bench/adaptive_tune.txt:
#: flow 50 79.2 J&F at 1.96x the full model's speed; the full model 90.9). So a target is one
#: effort knob: 100 full model, 50-99 ROI pass, under 50 flow (the node's effort control
#: reaches flow when the ROI pass cannot keep up).
FLOW_BELOW = 50.0


def check_target(value, name='target_confidence'):
    """Return ``value`` as a float in [0, 100]; ValueError naming ``name`` otherwise."""
    if isinstance(value, bool):  # float(True) is 1.0: a flag given where a number belongs
        raise ValueError(f'{name} must be a number in 0..100, got {value!r}')
    try:
        target = float(value)
    except (TypeError, ValueError):
        raise ValueError(f'{name} must be a number in 0..100, got {value!r}') from None
    if not 0.0 <= target <= 100.0:
        raise ValueError(f'{name} must lie in 0..100 (100 = full model every frame), got '
                         f'{value}')
    return target


#: Default shorter side of the light pass's query (see ``propagate_light``).
DEFAULT_LIGHT_RESOLUTION = 160


#: Default pixel budget of the region-of-interest light pass (``MemoryBackend.propagate_roi``):
#: its query holds at most this share of the full query's pixels; 1.0 = never scaled down, the
#: crop keeps the full model's scale. bench/adaptive_tune.txt, target 50, at most 8 cheap
#: frames, one interleaved run: 1.0 90.80 J&F at 1.64x the full model's speed (90.89), 0.25
#: 89.92 at 1.77x: a crop scaled down lost about 3 IoU points per frame on large objects
#: (swing 90.5 -> 87.6, motocross-bumps 93.5 -> 91.0), as the light pass does.
DEFAULT_ROI_BUDGET = 1.0


def _lost(probs):
    """Whether any object of (K + 1)×h×w ``probs`` wins no pixel."""
    count = probs.shape[0]
    if count < 2:
        return False
    if count == 2:  # a tenth of an argmax's cost at working size
        return not bool((probs[1] > probs[0]).any())
    best = probs.max(axis=0)
    return any(not bool((probs[k] >= best).any()) for k in range(1, count))


def cut_at_crop(foreground, box, share=0.02):
    """Whether a h×w boolean ``foreground`` runs into a side of ``box`` that lies in the frame.

    ``box``: (y0, y1, x0, x1) crop. A side counts when its outermost row or column inside the
    crop holds foreground on more than ``share`` of its length (and at least 2 px): the object
    most likely goes on past the crop, where the region-of-interest pass saw nothing. Sides on
    the frame's own border never count.
    """
    height, width = foreground.shape
    y0, y1, x0, x1 = box
    sides = []
    if y0 > 0:
        sides.append(foreground[y0, x0:x1])
    if y1 < height:
        sides.append(foreground[y1 - 1, x0:x1])
    if x0 > 0:
        sides.append(foreground[y0:y1, x0])
    if x1 < width:
        sides.append(foreground[y0:y1, x1 - 1])
    return any(int(side.sum()) >= max(2, share * side.size) for side in sides)


class _LightPath(Backend):
    """The full model's light pass as a cheap backend: its state is the full model's memory."""

    name = 'light'

    def __init__(self, full, resolution):
        self.full = full
        self.resolution = int(resolution)

    def reset(self):
        pass  # the adaptive backend resets the full model itself

    def memorize(self, image, probs):
        pass  # the full model memorised the frame when it ran on it

    def propagate(self, image):
        height, width = image.shape[:2]
        return self.full.propagate_light(image, self.resolution or min(height, width))

    def warm_up(self, width, height, objects):
        # the light pass's smaller query is a shape of its own: its first calls are 2-4x slower
        self.full.warm_up(width, height, objects, self.resolution or min(width, height))


class _RoiPath(_LightPath):
    """The full model's region-of-interest pass (``propagate_roi`` with pixel budget ``roi``),
    cropped around the previous result (the last full one after a refresh)."""

    name = 'roi'

    def __init__(self, full, roi):
        super().__init__(full, 0)  # the working size, cropped
        self.roi = float(roi)
        self._previous = None
        #: Reject results whose foreground reaches a side of the crop inside the frame (the
        #: object went on past it); ``last_clipped`` says so of the last result.
        self.edge_check = True
        self.last_clipped = False

    def reset(self):
        self._previous = None  # the adaptive backend resets the full model itself

    def memorize(self, image, probs):
        # the full model memorised the frame when it ran on it; this pass crops around it
        self._previous = np.asarray(probs, np.float32)

    def propagate(self, image):
        height, width = image.shape[:2]
        if self._previous is None or self._previous.shape[1:] != (height, width):
            raise RuntimeError('ROI pass asked to propagate before a result to '
                               'crop around was memorised')
        self._previous = self.full.propagate_roi(image, self._previous, budget=self.roi)
        self.last_clipped = self.edge_check and cut_at_crop(
            self._previous[0] < 0.5, self.full.last_roi[0])
        return self._previous

    def warm_up(self, width, height, objects):
        pass  # its query shapes follow the object; a coarse grid keeps them few


class AdaptiveBackend(Backend):
    """Run a cheap path while its estimated confidence stays at or above a target."""

    name = 'adaptive'

    def __init__(self, full='memory', cheap='auto', target_confidence=DEFAULT_TARGET,
                 max_cheap_frames=None, confidence_model=None,
                 cheap_resolution=None, cheap_options=None, max_backoff=DEFAULT_MAX_BACKOFF,
                 **full_options):
        """Compose ``full`` and ``cheap`` (Backend instances or backend names).

        ``cheap``: ``roi`` (the full model's region-of-interest pass, ``propagate_roi``, with
        ``DEFAULT_ROI_BUDGET``; needs a full backend with a light pass), ``light`` (its light
        pass, ``propagate_light``), ``flow`` or a Backend instance; ``auto``: where the full
        backend has a light pass, ``roi`` at targets >= ``FLOW_BELOW`` (50) and ``flow`` under
        it (``set_target`` switches), else ``flow``. ``full_options`` (e.g. ``model_path``,
        ``device``) go to the full backend when it is created by name, ``cheap_options`` (a
        dict) to the cheap one. ``target_confidence``:
        0-100 (100 = full model every frame). ``max_cheap_frames``: cheap frames in a row
        before the full model runs regardless (>= 1; None = ``DEFAULT_MAX_CHEAP`` of the cheap
        path, 8 for a cheap backend other than the two). ``max_backoff``: the most frames
        the cheap path is not tried after rejections in a row (0 = try it on every frame).
        ``confidence_model``: a
        ConfidenceModel or the path of its JSON (None = the one shipped for the cheap path:
        vos_ros/data/confidence_roi.json, confidence_light.json or confidence.json).
        ``cheap_resolution``: shorter side the cheap path works at (None = its default, 0 =
        the session's working size; the ROI pass takes none: it crops at the full model's
        scale, and under ``auto`` the value is flow's). An explicit ``max_cheap_frames`` or
        ``confidence_model`` applies to every cheap path.
        Raises ValueError for bad options, ModelError when the full model cannot be loaded.
        """
        from vos_ros.core.backends import create_backend

        self.target_confidence = check_target(target_confidence)
        if max_cheap_frames is not None and int(max_cheap_frames) < 1:
            raise ValueError(f'max_cheap_frames must be >= 1, got {max_cheap_frames}')
        if int(max_backoff) < 0:
            raise ValueError(f'max_backoff must be >= 0, got {max_backoff}')
        self.max_backoff = int(max_backoff)
        #: Refuse a cheap result in which an object wins no pixel (see ``_cheap_step``).
        self.reject_lost = True
        if isinstance(full, Backend):
            if full_options:
                raise ValueError('full backend options are only accepted with a backend name, '
                                 f'got {sorted(full_options)}')
            self.full = full
        else:
            if full in ('adaptive', 'flow'):
                raise ValueError(f'full backend {full!r}: choose one that runs a model '
                                 '(memory or embedding)')
            try:
                self.full = create_backend(full, **full_options)
            except TypeError as error:
                # the full backend's constructor names itself; the caller asked for adaptive
                raise ValueError(f'adaptive backend: option(s) {sorted(full_options)} are '
                                 f'neither its own nor accepted by the full backend {full!r} '
                                 f'({error})') from None
        has_light = callable(getattr(self.full, 'propagate_light', None))
        if cheap in ('light', 'roi') and not has_light:
            raise ValueError(f'cheap path {cheap} needs a full model with a light pass '
                             f'(memory); {getattr(self.full, "name", "this one")} has '
                             'none: use cheap flow')
        if cheap == 'auto':
            kinds = ('roi', 'flow') if has_light else ('flow',)
        elif cheap in ('light', 'roi', 'flow') or isinstance(cheap, Backend):
            kinds = (cheap,)
        else:
            raise ValueError(f'unknown cheap path {cheap!r}; choose auto, light, roi or flow '
                             '(or pass a Backend instance)')
        if cheap_resolution is not None and int(cheap_resolution) < 0:
            raise ValueError(f'cheap_resolution must be >= 0, got {cheap_resolution}')
        if cheap in ('light', 'roi') and cheap_options:
            raise ValueError('cheap_options are for a cheap backend, not the light pass')
        if cheap == 'roi' and cheap_resolution is not None:
            raise ValueError('cheap path roi takes no cheap_resolution: it crops at the full '
                             "model's scale")
        #: The cheap paths this backend may run, by name; ``auto`` with a light pass has both
        #: and picks by target (``FLOW_BELOW``).
        self._paths = {}
        given = cheap_resolution
        for kind in kinds:
            # cheap_resolution is the first path's that has one (under auto: flow's)
            resolution = None
            if kind != 'roi':
                resolution, given = given, None
            path = self._build_path(kind, resolution, cheap_options, max_cheap_frames,
                                    confidence_model)
            self._paths[path['backend'].name] = path
        self._auto = cheap == 'auto' and len(self._paths) > 1
        self._use(self._path_for(self.target_confidence))
        #: The session works at the full model's size, so target 100 is the full backend alone.
        self.default_resolution = getattr(self.full, 'default_resolution', 0)
        size_multiple = getattr(self.full, 'size_multiple', None)
        if size_multiple:
            self.size_multiple = size_multiple
        self._features = CheapPathFeatures()
        self.reset()

    def _build_path(self, kind, resolution, options, max_cheap_frames, confidence_model):
        """One cheap path: its backend, resolutions, run length and confidence estimate."""
        from vos_ros.core.backends import create_backend

        if kind == 'roi':
            backend = _RoiPath(self.full, DEFAULT_ROI_BUDGET)
            resolution = 0
        elif kind == 'light':
            backend = _LightPath(self.full, int(resolution if resolution is not None
                                                else DEFAULT_LIGHT_RESOLUTION))
            resolution = backend.resolution
        else:
            backend = kind if isinstance(kind, Backend) else create_backend(
                'flow', **dict(options or {}))
            if resolution is None:
                resolution = getattr(backend, 'default_resolution', 0) or 0
        if max_cheap_frames is None:
            max_cheap_frames = DEFAULT_MAX_CHEAP.get(backend.name, DEFAULT_MAX_CHEAP['flow'])
        if isinstance(confidence_model, ConfidenceModel):
            model = confidence_model
        else:
            model = ConfidenceModel.load(confidence_model, backend.name if isinstance(
                backend, _LightPath) else 'flow')
        # The light pass takes the working-size frame and encodes its query smaller itself
        # (its result comes back at working size); a cheap backend gets a smaller frame.
        return {'backend': backend, 'resolution': int(resolution),
                'frame_resolution': 0 if isinstance(backend, _LightPath) else int(resolution),
                'max_cheap_frames': int(max_cheap_frames), 'model': model}

    def _path_for(self, target):
        """The name of the cheap path a target runs (auto: flow under ``FLOW_BELOW``)."""
        if self._auto:
            return 'roi' if target >= FLOW_BELOW else 'flow'
        return next(iter(self._paths))

    def _use(self, name):
        """Switch to cheap path ``name``; it restarts from the last full result."""
        self._path = self._paths[name]
        self._cheap_synced = False
        self._cheap_size = None

    # The current cheap path's settings, read off its record (``_use`` switches records).
    cheap = property(lambda self: self._path['backend'], doc='The cheap path running now.')
    cheap_resolution = property(lambda self: self._path['resolution'],
                                doc="Shorter side of the cheap path's work (pixels).")
    max_cheap_frames = property(lambda self: self._path['max_cheap_frames'],
                                doc='Cheap frames in a row before a forced full run.')
    confidence_model = property(lambda self: self._path['model'],
                                doc="The current cheap path's ConfidenceModel.")

    # -- Backend interface ---------------------------------------------------------------

    def reset(self):
        self.full.reset()
        for path in self._paths.values():
            path['backend'].reset()
        self._full_image = None
        self._full_probs = None
        self._cheap_synced = False
        self._cheap_size = None
        self._since_full = 0
        self._end_backoff()
        self.last_path = 'full'
        self.last_confidence = None
        self.last_reason = None
        #: Feature dicts (one per object) of the last cheap step (vos_ros.core.confidence).
        self.last_features = None

    def warm_up(self, width, height, objects):
        warm_up = getattr(self.full, 'warm_up', None)
        if warm_up is not None:
            warm_up(width, height, objects)
        self._warm_up_light(width, height, objects)

    def _warm_up_light(self, width, height, objects):
        """Warm every light path up at its own query size (a cheap backend needs none).

        Without it the first light frames after the node lowers its effort ran 2-4x slower
        (the full model warms only its own shape when the mask is given).
        """
        for path in self._paths.values():
            if isinstance(path['backend'], _LightPath):
                path['backend'].warm_up(width, height, objects)

    def memorize(self, image, probs):
        probs = np.asarray(probs, np.float32)
        self.full.memorize(image, probs)
        self._warm_up_light(image.shape[1], image.shape[0], probs.shape[0] - 1)
        self._remember_full(image, probs)
        self._end_backoff()  # a given mask starts afresh

    def propagate(self, image):
        if self._full_probs is None:
            raise RuntimeError('adaptive backend asked to propagate before any mask was '
                               'memorised')
        self.last_confidence = None
        self.last_features = None
        if self.target_confidence < 100.0:
            if self._since_full >= self.max_cheap_frames:
                self.last_reason = 'forced'
            elif self._skip > 0:
                self._skip -= 1
                self.last_reason = 'backoff'
            else:
                probs = self._cheap_step(image)
                if probs is not None:
                    return probs
        else:
            self.last_reason = 'target'
        probs = np.asarray(self.full.propagate(image), np.float32)
        self._remember_full(image, probs)
        self.last_path = 'full'
        return probs

    def describe(self):
        full = self.full.describe() if hasattr(self.full, 'describe') else {}
        described = {'backend': self.name, 'target_confidence': self.target_confidence,
                     'max_cheap_frames': self.max_cheap_frames, 'max_backoff': self.max_backoff,
                     'cheap': getattr(self.cheap, 'name', type(self.cheap).__name__),
                     # every path this backend may switch to (auto: roi, flow)
                     'cheap_paths': '/'.join(self._paths),
                     'cheap_resolution': self.cheap_resolution,
                     'full': full.get('backend', getattr(self.full, 'name', '?'))}
        for key in ('model', 'device', 'dtype', 'resolution', 'version'):
            if key in full:
                described[key] = full[key]
        return described

    # -- run-time control ----------------------------------------------------------------

    def set_target(self, value):
        """Change ``target_confidence`` (0-100) from the next frame on; returns it."""
        self.target_confidence = check_target(value)
        self._end_backoff()
        name = self._path_for(self.target_confidence)
        if name != self.cheap.name:
            self._use(name)
        return self.target_confidence

    # -- internals -----------------------------------------------------------------------

    def _end_backoff(self):
        #: frames left on which the cheap path is not tried; rejections in a row
        self._skip = 0
        self._rejections = 0

    def _remember_full(self, image, probs):
        self._full_image = image
        self._full_probs = probs
        self._cheap_synced = False
        self._since_full = 0

    def _cheap_image(self, image):
        height, width = image.shape[:2]
        if self._cheap_size is None or self._cheap_size[0] != (width, height):
            short = min(width, height)
            scale = 1.0
            frame_resolution = self._path['frame_resolution']
            if 0 < frame_resolution < short:
                scale = frame_resolution / short
            size = (max(2, int(round(width * scale))), max(2, int(round(height * scale))))
            self._cheap_size = ((width, height), size)
        size = self._cheap_size[1]
        if size == (width, height):
            return image
        return cv2.resize(image, size, interpolation=cv2.INTER_AREA)

    def _cheap_probs(self, probs):
        from vos_ros.core.session import resize_probs

        width, height = self._cheap_size[1]
        return np.ascontiguousarray(resize_probs(probs, width, height), np.float32)

    def _cheap_step(self, image):
        """Propagate with the cheap path; return its probs, or None when not confident."""
        from vos_ros.core.session import resize_probs

        small = self._cheap_image(image)
        if not self._cheap_synced:
            reference = self._cheap_probs(self._full_probs)
            reference_image = self._cheap_image(self._full_image)
            self.cheap.memorize(reference_image, reference)
            self._features.start(reference, reference_image)
            self._cheap_synced = True
        probs = np.asarray(self.cheap.propagate(small), np.float32)
        rows = self._features.update(probs, getattr(self.cheap, 'last_flow', None),
                                     getattr(self.cheap, 'last_untrusted', None), small)
        self.last_features = rows
        confidence = (min(self.confidence_model.predict(row) for row in rows)
                      if rows else 100.0)
        # Failures seen, not estimated, are refused at any target below 100:
        failure = None
        if getattr(self.cheap, 'last_clipped', False):
            # the ROI pass's foreground runs into its crop: the part past it is missing
            failure = 'clipped'
        elif self.reject_lost and _lost(probs):
            # an object without a pixel: only the full model searches the whole frame for it
            # (a cheap path warps or crops around what it had, and the estimate sees no error
            # in an empty mask)
            failure = 'lost'
        if failure is not None:
            confidence = 0.0
        self.last_confidence = confidence
        if failure is not None or confidence < self.target_confidence:
            self.last_reason = failure or 'confidence'
            self._rejections += 1
            self._skip = min(1 << min(self._rejections - 1, 30), self.max_backoff)
            return None
        self._rejections = 0
        self._since_full += 1
        self.last_path = 'cheap'
        self.last_reason = None
        height, width = image.shape[:2]
        return resize_probs(probs, width, height)
