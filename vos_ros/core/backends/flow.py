"""Weight-free propagation backend: optical flow carries soft masks, local colour corrects them.

Each frame:

1. DIS optical flow from the current frame to the previous one (and back, for the
   forward-backward consistency check) pulls the previous probabilities onto the current frame
   (backward warping: every current pixel gets a value, no holes).
2. Where the two flows disagree (occlusion, disocclusion, flow failure) or the flow points
   outside the previous frame, the warped value is not trusted: it is mixed toward "unknown"
   (uniform over the channels) so that appearance decides there.
3. A local colour model, a bilateral grid (cell position × quantised Lab colour) splatted
   from the previous frame's pixels and probabilities, gives for each current pixel how likely
   its colour is for each channel *near the place it came from*. Local models separate an
   object from the background next to it far better than one global histogram, and
   the disoccluded background a moving object leaves behind (which flow smears) is corrected
   because it has the colour of the local background.
4. The warped prior and the colour likelihood are fused in log space and normalised with a
   softmax over channels (background and objects compete for every pixel); scaling the
   logits by ``temperature`` (1.5, i.e. probabilities to the power 1.5) re-sharpens what
   bilinear warping blurred, which keeps soft masks from dissolving.
   A long-term anchor joins the fusion when a mask drifts: the local colour model is fitted
   to the previous frame's result, so background that leaks into a mask becomes that mask's
   colour and stays. The global colour histograms memorised with the given mask do not
   drift; each object's log ratio (its colours / the background's) is added to its logit
   with a weight that grows from 0, while the previous mask still looks as given, to
   ``anchor_weight`` (1) as the mean ratio over that mask falls to 0 (see ``_anchor_gate``).
   The memorised colours know no place, so they may add to an object only within
   ``anchor_reach`` (0.15 of the shorter side) of its warped mask; farther out they may only
   take away (unlimited, they grew blobs of the object's colours far from it).
5. An object shrunk to a remnant whose colours match the background (memorised with the
   mask) better than its own is dropped: what flow leaves behind when an object exits.
6. A dropped or vanished object is looked for in every frame: the largest region of its
   memorised colours (against the background's), of a plausible size, becomes it again, so an
   object that passed behind something or left the view is picked up when it comes back.
   Measured on DAVIS-2016 train it changes nothing (no object there is lost for good); on a
   synthetic crossing behind a wall it recovers the object (test_core_flow).

Measured choices (estimates on DAVIS-2016 train, see bench/README.md): the local colour model
and the consistency check together took J&F from 38 (plain warping) to about 58; a global
colour histogram of the previous frame, a guided-filter boundary snap and a broad spatial
prior for re-detection did not help and are not used. The drift-gated anchor was chosen
because the earlier figures were over-tuned (about 60 on train, 45 on unseen validation
video): on 22 train sequences it took J&F from 59.3 to 61.4 and on the 8 held-out ones
(bench/memory_holdout.txt, never tuned on) from 60.6 to 61.1; limiting its reach took them
to 62.1 and 61.7 (no sequence of the 22 lower by more than 0.1). The same anchor applied always
(weight 0.3) scored 63.8 on the 22 but 59.0 on the hold-out (it erodes objects that share
colours with the background); applied only at pixels the consistency check distrusted,
61.8 and 58.4; a slowly updated anchor, a coarser local model or the anchor as the sparse
cells' fallback, DIS finest scale 0 (a third of the speed) and 160 / 240 px did not help
either.

Speed (2-core CPU, 854x480 input, JPEG reading included): the default ``balanced`` works at
200 px with DIS variational refinement off in both flows. Refinement smooths the flow across
object boundaries: without it the tuning set scored higher (59.8 vs 57.6 J&F at 240 px; 61.2
at 200 px) for about half the flow time. The default runs at about 70 FPS on an idle machine
(bench/README.md).
"""

import logging

import cv2
import numpy as np

from vos_ros.core.backends.base import Backend

LOGGER = logging.getLogger(__name__)

#: DIS presets by name (the ``preset`` option).
DIS_PRESETS = {
    'ultrafast': cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
    'fast': cv2.DISOPTICAL_FLOW_PRESET_FAST,
    'medium': cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
}

#: Speed/quality presets (the ``quality`` option): working resolution and per-frame work.
#: ``variational`` / ``check_variational``: DIS variational refinement iterations of the
#: tracking flow / of the consistency-check flow (None = the preset's, 5 for medium).
QUALITIES = {
    'fast': {'resolution': 160, 'preset': 'medium', 'check_preset': 'medium',
             'variational': 0, 'check_variational': 0, 'consistency': True, 'refine': 0},
    'balanced': {'resolution': 200, 'preset': 'medium', 'check_preset': 'medium',
                 'variational': 0, 'check_variational': 0, 'consistency': True, 'refine': 0},
    'accurate': {'resolution': 280, 'preset': 'medium', 'check_preset': 'medium',
                 'variational': 0, 'check_variational': 0, 'consistency': True, 'refine': 0},
}

DEFAULT_QUALITY = 'balanced'

COLOUR_SPACES = {
    'lab': cv2.COLOR_RGB2LAB,
    'ycrcb': cv2.COLOR_RGB2YCrCb,
    'rgb': None,
}


def warp_backward(array, flow, border_value=None):
    """Sample ``array`` (C×h×w) at ``x + flow(x)``: pulls the previous frame onto this one.

    ``border_value`` None replicates the border; a number fills samples from outside.
    """
    height, width = flow.shape[:2]
    map_x, map_y = _sample_maps(flow)
    return _remap_channels(array, map_x, map_y, border_value).reshape(-1, height, width)


def _sample_maps(flow):
    height, width = flow.shape[:2]
    grid_x, grid_y = np.meshgrid(np.arange(width, dtype=np.float32),
                                 np.arange(height, dtype=np.float32))
    return grid_x + flow[:, :, 0], grid_y + flow[:, :, 1]


def _remap_channels(array, map_x, map_y, border_value=None):
    height, width = map_x.shape
    channels = array.shape[0]
    stacked = np.ascontiguousarray(array.transpose(1, 2, 0))
    if border_value is None:
        warped = cv2.remap(stacked, map_x, map_y, cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_REPLICATE)
    else:
        warped = cv2.remap(stacked, map_x, map_y, cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_CONSTANT, borderValue=border_value)
    return warped.reshape(height, width, channels).transpose(2, 0, 1)


def _softmax(logit, scale=1.0):
    """Softmax over channels (axis 0) of ``scale * logit``; may overwrite ``logit``."""
    if logit.shape[0] == 2:
        # One object (the common case): a logistic of the difference, 4x cheaper than the
        # general max/exp/sum over the channel axis.
        difference = logit[0] - logit[1]
        difference *= -scale
        np.clip(difference, -60.0, 60.0, out=difference)
        foreground = np.exp(-difference)
        foreground += 1.0
        np.reciprocal(foreground, out=foreground)
        return np.stack([1.0 - foreground, foreground])
    logit *= scale
    logit -= logit.max(axis=0, keepdims=True)
    probs = np.exp(logit, out=logit)
    probs /= probs.sum(axis=0, keepdims=True)
    return probs


_BLUR_KERNEL = np.array([0.25, 0.5, 0.25], np.float32)
_IDENTITY_KERNEL = np.ones(1, np.float32)


def _blur_grid(grid):
    """Blur every axis but the first (channels) of ``grid`` by [1, 2, 1] / 4, zero padded.

    With OpenCV's separable filter on 2-D views (the axes after the blurred one as channels):
    as fast as matrix products single-threaded, and it keeps BLAS out of the loop, whose
    worker threads busy-wait after each product and took the second core from the flow
    (the whole step was 35 % slower on 2 cores).
    """
    shape = grid.shape
    grid = np.ascontiguousarray(grid, np.float32)
    for axis in range(1, grid.ndim):
        before = int(np.prod(shape[:axis]))
        size = shape[axis]
        after = int(np.prod(shape[axis + 1:]))
        if after <= 512:  # OpenCV's channel limit (CV_CN_MAX)
            view = grid.reshape(before, size, after) if after > 1 else grid.reshape(before, size)
            grid = cv2.sepFilter2D(view, -1, _BLUR_KERNEL, _IDENTITY_KERNEL,
                                   borderType=cv2.BORDER_CONSTANT)
        else:
            grid = np.stack([cv2.sepFilter2D(plane, -1, _IDENTITY_KERNEL, _BLUR_KERNEL,
                                             borderType=cv2.BORDER_CONSTANT)
                             for plane in grid.reshape(before, size, after)])
        grid = grid.reshape(shape)
    return grid


class FlowBackend(Backend):
    """Propagate soft masks with DIS optical flow, corrected by a local colour model."""

    name = 'flow'
    default_resolution = QUALITIES[DEFAULT_QUALITY]['resolution']
    #: Result.path of every propagated frame (the session reads it): flow is the cheap path
    #: itself, with no full model, so path shares must not count its frames as the full
    #: model's.
    last_path = 'cheap'

    def __init__(self, quality=DEFAULT_QUALITY, preset=None, consistency=None,
                 appearance=True, cell=16, colour_bits=3, colour_space='lab',
                 occlusion_mix=0.6, colour_prior=50.0, colour_fallback='uniform',
                 temperature=1.5, prior_floor=1e-3, lost_fraction=0.5, redetect=True,
                 refine=None, refine_weight=1.0, check_preset=None, variational=None,
                 check_variational=None, anchor_weight=1.0, anchor_reach=0.15):
        """Set the options (``quality`` picks defaults for the ones left None).

        ``quality``: ``fast``, ``balanced`` or ``accurate`` (see QUALITIES); it also sets
        ``default_resolution``, the working size a session uses unless told otherwise.
        ``preset``: DIS preset (``ultrafast``, ``fast``, ``medium``). ``consistency``: run
        the backward flow too and distrust pixels where the two disagree. ``appearance``:
        use the local colour model. ``cell``: its spatial cell in pixels; ``colour_bits``:
        bits per colour channel (3 = 8 levels); ``colour_prior``: pseudo-count (pixels) that
        pulls sparse cells toward the ``colour_fallback``: ``global`` (the channel's colour
        histogram over the whole previous frame) or ``uniform``. ``occlusion_mix``: how far
        an untrusted pixel's prior moves toward uniform. ``temperature``: sharpening
        exponent of the fused probabilities. ``refine``: extra passes that re-fit the local
        colour model to the fused result of this frame and apply it again (edge snapping;
        +0.7 J&F at 240 px with refined flow, -0.3 at the 200 px default: off).
        ``check_preset``: DIS preset of the forward flow used only by the consistency check
        (``fast`` saves a third of the flow time; on the tuning set it scored the same, on
        the hold-out 2.3 and on blackswan 4.6 points lower).
        ``variational``, ``check_variational``: DIS variational refinement iterations of the
        tracking flow and of the check flow (None = the quality's setting; a negative value =
        the preset's own). Without refinement the check flow is 35 % cheaper and the check
        scored no worse (it only needs to find where the two flows disagree).
        ``lost_fraction``: an object shrunk below this fraction of its given area whose
        colours match the background better than its own is dropped (0 = never; 0.25 and
        0.5 scored the same on DAVIS-2016 train, 0.5 also drops what a wall keeps of an object
        that passed behind it).
        ``redetect``: look for a lost object every frame (see ``_redetect``).
        ``anchor_weight``: the most weight the colours memorised with the mask get in the
        fusion, reached as the mask drifts away from them (see ``_anchor_gate``; 0 = off).
        ``anchor_reach``: how far from the warped object (fraction of the frame's shorter
        side) those colours may add to it; farther out they may only take away (None = no
        limit). The memorised colours know no place: unlimited, they grew blobs of the
        object's colours far from it (mallard-water).
        """
        if quality not in QUALITIES:
            raise ValueError(f'unknown flow quality {quality!r}; choose one of '
                             f'{", ".join(QUALITIES)}')
        settings = QUALITIES[quality]
        preset = settings['preset'] if preset is None else preset
        if preset not in DIS_PRESETS:
            raise ValueError(f'unknown flow preset {preset!r}; choose one of '
                             f'{", ".join(DIS_PRESETS)}')
        if colour_fallback not in ('global', 'uniform'):
            raise ValueError(f'unknown colour_fallback {colour_fallback!r}; choose global or '
                             'uniform')
        if colour_space not in COLOUR_SPACES:
            raise ValueError(f'unknown colour_space {colour_space!r}; choose one of '
                             f'{", ".join(COLOUR_SPACES)}')
        if int(cell) < 1:
            raise ValueError(f'cell must be >= 1 pixel, got {cell}')
        if not 1 <= int(colour_bits) <= 5:
            raise ValueError(f'colour_bits must lie in 1..5, got {colour_bits}')
        if not 0.0 <= float(occlusion_mix) <= 1.0:
            raise ValueError(f'occlusion_mix must lie in [0, 1], got {occlusion_mix}')
        for option, value in (('colour_prior', colour_prior), ('temperature', temperature),
                              ('prior_floor', prior_floor)):
            if float(value) <= 0:
                raise ValueError(f'{option} must be > 0, got {value}')
        if float(anchor_weight) < 0:
            raise ValueError(f'anchor_weight must be >= 0, got {anchor_weight}')
        if anchor_reach is not None and float(anchor_reach) < 0:
            raise ValueError(f'anchor_reach must be >= 0 (or None), got {anchor_reach}')
        self.quality = quality
        self.default_resolution = settings['resolution']
        self.preset = preset
        self.consistency = settings['consistency'] if consistency is None else bool(consistency)
        self.appearance = bool(appearance)
        self.cell = int(cell)
        self.colour_bits = int(colour_bits)
        self.colour_space = colour_space
        self.occlusion_mix = float(occlusion_mix)
        self.colour_prior = float(colour_prior)
        self.colour_fallback = colour_fallback
        self.temperature = float(temperature)
        self.prior_floor = float(prior_floor)
        self.lost_fraction = float(lost_fraction)
        self.redetect = bool(redetect)
        self.anchor_weight = float(anchor_weight)
        self.anchor_reach = None if anchor_reach is None else float(anchor_reach)
        self.refine = settings['refine'] if refine is None else int(refine)
        self.refine_weight = float(refine_weight)
        self._dis = cv2.DISOpticalFlow_create(DIS_PRESETS[preset])
        # The consistency check only needs rough agreement: a cheaper preset may do it.
        if check_preset is None:
            check_preset = settings['check_preset'] if preset == settings['preset'] else preset
        self.check_preset = check_preset
        if self.check_preset not in DIS_PRESETS:
            raise ValueError(f'unknown check_preset {check_preset!r}; choose one of '
                             f'{", ".join(DIS_PRESETS)}')
        self.variational = settings['variational'] if variational is None else variational
        self.check_variational = (settings['check_variational'] if check_variational is None
                                  else check_variational)
        if self.variational is not None and int(self.variational) >= 0:
            self._dis.setVariationalRefinementIterations(int(self.variational))
        # A separate instance even for the same preset: the two may differ in refinement.
        self._dis_check = cv2.DISOpticalFlow_create(DIS_PRESETS[self.check_preset])
        if self.check_variational is not None and int(self.check_variational) >= 0:
            self._dis_check.setVariationalRefinementIterations(int(self.check_variational))
        self._cells = None
        self.reset()

    # -- Backend interface ---------------------------------------------------------------

    def reset(self):
        self._prev_gray = None
        self._prev_colour = None
        self._prev_probs = None
        self._anchor_hist = None
        self._anchor_area = None
        self._anchor_fit = None
        self._lost = set()
        #: Of the last ``propagate``: the h×w×2 float32 backward flow (current -> previous
        #: frame, pixels) and the h×w bool mask of pixels the consistency check distrusted
        #: (None with ``consistency`` off). Read by the adaptive backend's confidence estimate.
        self.last_flow = None
        self.last_untrusted = None

    def memorize(self, image, probs):
        probs = np.asarray(probs, np.float32)
        if probs.ndim != 3 or probs.shape[1:] != image.shape[:2]:
            raise ValueError(f'probabilities {probs.shape} do not match image {image.shape}')
        self._prev_gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        self._prev_colour = self._colour_index(image) if self.appearance else None
        self._prev_probs = probs
        # Long-term memory of what each channel looked like when it was given: used to tell
        # a shrinking object from a leftover that now shows the background.
        colour = self._colour_index(image).ravel()
        num_colours = 1 << (3 * self.colour_bits)
        flat = probs.reshape(probs.shape[0], -1)
        hist = np.stack([np.bincount(colour, w, num_colours) for w in flat]) + 1.0
        self._anchor_hist = np.log(hist / hist.sum(axis=1, keepdims=True)).astype(np.float32)
        self._anchor_area = flat.sum(axis=1)
        self._anchor_fit = self._fit(colour, probs)
        self._lost = set()

    def propagate(self, image):
        if self._prev_probs is None:
            raise RuntimeError('flow backend asked to propagate before any mask was memorised')
        gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        if gray.shape != self._prev_gray.shape:
            raise ValueError(f'frame size changed from {self._prev_gray.shape[::-1]} to '
                             f'{gray.shape[::-1]} without a reset')
        channels = self._prev_probs.shape[0]
        flow = self._dis.calc(gray, self._prev_gray, None)
        map_x, map_y = _sample_maps(flow)
        self.last_flow = flow
        self.last_untrusted = None
        # Samples from outside the previous frame take the border's value: measured, making
        # them unknown instead let the objects' neutral colour model claim new content.
        prior = _remap_channels(self._prev_probs, map_x, map_y)
        anchor = self._anchor_gate(channels) if self.appearance else ()
        # where each drifting object may gain from its memorised colours: near its warped mask
        near = {k: self._near(prior[k]) for k, weight in enumerate(anchor, 1) if weight > 0.0}
        if self.consistency:
            untrusted = self._inconsistent(gray, flow, map_x, map_y)
            self.last_untrusted = untrusted
            # Occluded or badly matched pixels keep part of their prior.
            mix = self.occlusion_mix
            # Arithmetic on a 0/1 weight: cheaper than boolean fancy indexing on every channel.
            weight = untrusted.astype(np.float32)
            weight *= mix
            prior -= weight * (prior - 1.0 / channels)
        logit = np.log(prior + self.prior_floor)
        colour = None
        if self.appearance:
            colour = self._colour_index(image)
            logit += np.log(self._colour_likelihood(colour, map_x, map_y))
            for k, weight in enumerate(anchor, 1):
                if weight > 0.0:
                    term = weight * np.take(self._anchor_hist[k] - self._anchor_hist[0], colour)
                    if near[k] is not None:
                        # far from the object the memorised colours may only take away
                        term = np.where(near[k], term, np.minimum(term, 0.0))
                    logit[k] += term
        probs = _softmax(logit, self.temperature)
        for _ in range(self.refine if self.appearance else 0):
            logit = np.log(probs + self.prior_floor)
            logit += self.refine_weight * np.log(
                self._colour_likelihood(colour, None, None, probs, colour))
            probs = _softmax(logit)
        self._drop_lost(image if colour is None else colour, probs)
        if self.redetect and self._lost:
            self._redetect(image if colour is None else colour, probs)
        self._prev_gray = gray
        self._prev_colour = colour
        self._prev_probs = probs
        return probs

    def describe(self):
        return {'backend': self.name, 'quality': self.quality, 'preset': self.preset,
                'check_preset': self.check_preset, 'variational': self.variational,
                'check_variational': self.check_variational,
                'consistency': self.consistency, 'appearance': self.appearance,
                'default_resolution': self.default_resolution,
                'device': 'cpu'}  # OpenCV and numpy: no accelerator

    # -- pieces --------------------------------------------------------------------------

    def _fit(self, colour, probs):
        """Per object, the mean log ratio (own / background memorised colours) over its mask.

        ``colour``: flat colour indices; ``probs``: (C, h, w). High while a mask still holds
        what it held when given; it falls as background leaks in or the object is lost.
        """
        flat = probs.reshape(probs.shape[0], -1)[1:]
        ratio = np.take(self._anchor_hist[1:] - self._anchor_hist[:1], colour, axis=1)
        # A plain sum, not np.dot: BLAS threads would spin on the other core.
        return (flat * ratio).sum(axis=1) / np.maximum(flat.sum(axis=1), 1e-6)

    def _anchor_gate(self, channels):
        """Per object, the weight of its memorised colours in this frame's fusion.

        The local colour model is fitted to the previous frame's result, so whatever leaked
        into a mask becomes that mask's colour and stays (drift). The colours memorised with
        the given mask do not drift, but applied always they also erode an object where it
        shares colours with the background. So each object's are weighted by how far its
        previous mask has moved from them: ``anchor_weight`` × (1 - fit / given fit), clipped
        to [0, 1] (0 while the mask looks as given). A lost object gets 0: bringing it back
        is re-detection's job, which also checks the size of what it finds.
        """
        if (self.anchor_weight <= 0.0 or self._prev_colour is None
                or self._anchor_fit is None or len(self._anchor_fit) != channels - 1):
            return np.zeros(max(channels - 1, 0))
        fit = self._fit(self._prev_colour.ravel(), self._prev_probs)
        given = np.maximum(self._anchor_fit, 1e-6)
        weights = self.anchor_weight * np.clip(1.0 - fit / given, 0.0, 1.0)
        # An object whose given colours were no more its own than the background's: the
        # memorised histograms cannot tell it apart, so they get no say.
        weights[self._anchor_fit <= 0.0] = 0.0
        for k in self._lost:
            if 0 < k < channels:
                weights[k - 1] = 0.0
        return weights

    def _near(self, warped):
        """Pixels within ``anchor_reach`` of the warped object ``warped`` (h×w), or None.

        Its > 0.5 region grown by a disc of ``anchor_reach`` times the shorter side (None when
        the reach is unlimited). On 22 DAVIS-2016 train sequences (flow protocol): 0.15 took
        J&F from 61.38 to 62.12, no sequence lower by more than 0.1 (mallard-water 37.0 ->
        46.4); 0.025 / 0.075 / 0.25: 62.14 / 61.94 / 61.97; zero weight instead of
        remove-only outside: 61.91. Every other frame: 59.19 -> 59.49.
        """
        if self.anchor_reach is None:
            return None
        radius = int(round(self.anchor_reach * min(warped.shape)))
        outside = (warped <= 0.5).astype(np.uint8)
        if not outside.all():
            # Distance to the object, then a threshold: a disc dilation in linear time (a 61 px
            # elliptical kernel took 6 ms a frame at 200 px, this under 1). The 5x5 mask's
            # distance is within 2 % of Euclidean and repeatable; DIST_MASK_PRECISE returned
            # values 1e-6 apart from call to call (OpenCV 4.10), which made results vary.
            distance = cv2.distanceTransform(outside, cv2.DIST_L2, cv2.DIST_MASK_5)
            return distance <= radius
        return np.zeros(warped.shape, bool)

    def _drop_lost(self, colour, probs):
        """Drop objects shrunk to a remnant whose colours look like the background's.

        An object that leaves the frame or is hidden leaves a few pixels behind that flow
        keeps carrying (they are consistent and their local colours are self-fulfilling);
        against the colours memorised with the mask they read as background.
        """
        if self._anchor_area is None or len(self._anchor_area) != probs.shape[0]:
            return
        areas = probs.reshape(probs.shape[0], -1).sum(axis=1)
        # Gone altogether (hidden by another object, or dropped by an earlier frame).
        self._lost.update(k for k in range(1, probs.shape[0]) if areas[k] < 1.0)
        small = [k for k in range(1, probs.shape[0])
                 if 1.0 <= areas[k] < self.lost_fraction * self._anchor_area[k]]
        if not small:
            return
        if colour.ndim == 3:
            colour = self._colour_index(colour)
        colour = colour.ravel()
        for k in small:
            weights = probs[k].ravel()
            ratio = self._anchor_hist[k, colour] - self._anchor_hist[0, colour]
            # A plain sum, not np.dot: BLAS threads would spin on the other core.
            if float(np.sum(weights * ratio)) < 0.0:
                probs[0] += probs[k]
                probs[k] = 0.0
                self._lost.add(k)

    #: Re-detection: smoothed log-likelihood ratio (object / background colours when given)
    #: a pixel needs, and the area range (fraction of the given area) of the region found.
    REDETECT_RATIO = 1.5
    REDETECT_AREA = (0.3, 3.0)

    def _redetect(self, colour, probs):
        """Find a lost object again by the colours it had when it was given.

        Flow cannot bring back an object that was hidden or left the view: nothing carries it.
        The colour histograms memorised with the mask can: the largest region of the frame
        whose colours are clearly the object's rather than the background's, of a plausible
        size, becomes the object again (soft, so flow and the local colour model take over).
        """
        if colour.ndim == 3:
            colour = self._colour_index(colour)
        # memorize() resets _lost, so every lost channel is one of this frame's
        for k in sorted(self._lost):
            ratio = np.take(self._anchor_hist[k] - self._anchor_hist[0], colour)
            # A box blur: isolated pixels of object-like colour are not an object.
            ratio = cv2.blur(ratio.astype(np.float32), (5, 5))
            candidate = ((ratio > self.REDETECT_RATIO) & (probs[0] > 0.5)).astype(np.uint8)
            count, components, stats, _ = cv2.connectedComponentsWithStats(candidate, 8)
            if count < 2:
                continue
            best = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
            area = float(stats[best, cv2.CC_STAT_AREA])
            low, high = self.REDETECT_AREA
            if not low * self._anchor_area[k] <= area <= high * self._anchor_area[k]:
                continue
            region = components == best
            claimed = np.float32(0.8)
            probs[:, region] *= 1.0 - claimed
            probs[k, region] += claimed
            self._lost.discard(k)
            LOGGER.debug('re-detected object channel %d (%d pixels)', k, int(area))

    def _inconsistent(self, gray, flow, map_x, map_y):
        """Pixels whose backward flow the forward flow does not undo (Sundaram et al. 2010)."""
        forward = self._dis_check.calc(self._prev_gray, gray, None)
        back = cv2.remap(forward, map_x, map_y, cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_REPLICATE)
        u, v, bu, bv = flow[:, :, 0], flow[:, :, 1], back[:, :, 0], back[:, :, 1]
        error = cv2.magnitude(u + bu, v + bv)
        magnitude = u * u + v * v + bu * bu + bv * bv
        return error * error > 0.01 * magnitude + 0.5

    def _colour_index(self, image):
        code = COLOUR_SPACES[self.colour_space]
        converted = image if code is None else cv2.cvtColor(image, code)
        bits = self.colour_bits
        levels = (converted >> (8 - bits)).astype(np.int32)
        return (levels[:, :, 0] << (2 * bits)) | (levels[:, :, 1] << bits) | levels[:, :, 2]

    def _cell_index(self, height, width):
        if self._cells is None or self._cells[0] != (height, width):
            cell = self.cell
            grid_w = width // cell + 1
            rows = (np.arange(height, dtype=np.int32) // cell)[:, None]
            cols = (np.arange(width, dtype=np.int32) // cell)[None, :]
            self._cells = ((height, width), (rows * grid_w + cols).ravel(),
                           (height // cell + 1, grid_w))
        return self._cells[1], self._cells[2]

    def _colour_likelihood(self, colour, map_x, map_y, probs=None, source_colour=None):
        """p(colour | channel) in the cell each current pixel came from, (C, h, w).

        The model is splatted from ``probs`` and ``source_colour`` (default: the previous
        frame's) and queried at ``map_x``, ``map_y`` (None: the pixel's own cell).
        """
        probs = self._prev_probs if probs is None else probs
        source_colour = self._prev_colour if source_colour is None else source_colour
        channels, height, width = probs.shape
        cells, (grid_h, grid_w) = self._cell_index(height, width)
        bins = 1 << self.colour_bits
        num_colours = bins ** 3
        size = grid_h * grid_w * num_colours
        source = cells * num_colours + source_colour.ravel()
        # One bincount for all channels: channel k's cells are offset by k * size.
        offsets = (np.arange(channels, dtype=np.int64) * size)[:, None]
        # float64 weights: bincount converts anything else first, 5x slower.
        grid = np.bincount((source[None, :] + offsets).ravel(),
                           probs.ravel().astype(np.float64), channels * size)
        grid = grid.astype(np.float32).reshape(channels, grid_h, grid_w, bins, bins, bins)
        grid = _blur_grid(grid)
        grid = grid.reshape(channels, grid_h * grid_w, num_colours)
        mass = grid.sum(axis=2)
        # Query: the cell the pixel came from (flow) and its colour now.
        if map_x is None:
            query_cell = cells
        else:
            # Truncation of non-negative values is floor; float floor_divide is 10x slower.
            scale = np.float32(1.0 / self.cell)
            query_x = np.minimum((np.maximum(map_x, 0) * scale).astype(np.int32), grid_w - 1)
            query_y = np.minimum((np.maximum(map_y, 0) * scale).astype(np.int32), grid_h - 1)
            query_cell = (query_y * grid_w + query_x).ravel()
        # np.take rather than fancy indexing: 4x faster for these row-wise gathers.
        counts = np.take(grid.reshape(channels, -1), query_cell * num_colours + colour.ravel(),
                         axis=1)
        totals = np.take(mass, query_cell, axis=1)
        # Pseudo-counts: where a channel has few pixels near the pixel's origin its likelihood
        # falls back to its colours anywhere in the frame (or to neutral, uniform); without
        # this a small object loses every colour it shares with the plentiful background.
        if self.colour_fallback == 'global':
            hist = grid.sum(axis=1)
            hist = (hist + 1e-3) / (hist.sum(axis=1, keepdims=True) + 1e-3 * num_colours)
            fallback = hist[:, colour.ravel()]
        else:
            fallback = 1.0 / num_colours
        prior = self.colour_prior
        likelihood = (counts + prior * fallback) / (totals + prior)
        return likelihood.reshape(channels, height, width)
