"""First-frame annotation: a mask from a box, clicks or scribbles (numpy + OpenCV only).

The box path is GrabCut with a better start. Plain ``cv2.grabCut`` from a rectangle seeds its
foreground model with everything inside the box, so background that only appears inside the box
(a wall, a hedge, a pole crossing it) is learned as foreground. Here a colour-geodesic distance
from the pixels *outside* the box first marks what inside the box is reachable from the outside
without crossing a strong edge; those pixels start as probable background and the rest as
probable foreground. A box drawn around an object touches it on (almost) every side, so a result
that misses two or more sides is treated as a failed start and plain rectangle GrabCut (in Lab,
on a crop with a margin) is used instead; an empty result falls back to the ellipse inscribed in
the box. bench/annotate_quality.py measures this against plain GrabCut.
"""

import logging

import cv2
import numpy as np

LOGGER = logging.getLogger(__name__)

# Geodesic distances are computed on a crop scaled to this longest side: the start only needs
# the coarse layout, and the python row/column sweeps stay fast.
GEODESIC_SIDE = 160
# Colour steps (Lab units) below this cost nothing, so texture does not block the geodesic.
GEODESIC_TAU = 3.0
# Mean-shift spatial and colour radii of the texture flattening before the geodesic.
MEAN_SHIFT = (6, 16)
# Pixels inside the box below this fraction of the 90th-percentile distance start as background.
GEODESIC_THRESHOLD = 0.3
# ... and never pixels farther than this (Lab units): the relative cut alone hands a distinct
# object part to the background when another part of the box lies much farther still.
GEODESIC_MAX_BACKGROUND = float('inf')
# A side of the box counts as touched when the mask comes within this fraction of the box size.
SIDE_TOLERANCE = 0.03
DEFAULT_ITERATIONS = 5
CLICK_RADIUS = 5
# The crop around a box: its margin (fraction of the box's longer side, plus 10 pixels) is
# what GrabCut's background model learns from.
CROP_MARGIN = 0.1
CLICK_REACH = 30.0


def check_image(image):
    """Return ``image`` as contiguous H×W×3 uint8 or raise ValueError."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f'expected an H×W×3 uint8 RGB image, got {image.dtype} {image.shape}')
    if image.shape[0] < 2 or image.shape[1] < 2:
        raise ValueError(f'image too small: {image.shape[1]}x{image.shape[0]}')
    return np.ascontiguousarray(image)


def check_box(box, width, height):
    """Return an inclusive integer box ``(x0, y0, x1, y1)`` clipped to the image.

    ValueError if the box is malformed, lies entirely outside the image or is under 2 pixels
    wide or high after clipping (no object can be segmented from it).
    """
    try:
        x0, y0, x1, y1 = (int(round(float(v))) for v in box)
    except (TypeError, ValueError):
        raise ValueError(f'a box is four numbers x0,y0,x1,y1, got {box!r}') from None
    x0, x1 = min(x0, x1), max(x0, x1)
    y0, y1 = min(y0, y1), max(y0, y1)
    if x1 < 0 or y1 < 0 or x0 >= width or y0 >= height:
        raise ValueError(f'box {x0},{y0},{x1},{y1} lies outside the {width}x{height} image')
    x0, y0 = max(x0, 0), max(y0, 0)
    x1, y1 = min(x1, width - 1), min(y1, height - 1)
    if x1 - x0 < 1 or y1 - y0 < 1:
        raise ValueError(f'box {x0},{y0},{x1},{y1} is too small (needs at least 2x2 pixels '
                         'inside the image)')
    return x0, y0, x1, y1


def geodesic_distance(features, seeds, tau=GEODESIC_TAU, cycles=3):
    """Approximate colour-geodesic distance from ``seeds`` (bool H×W) over H×W×C ``features``.

    Each step between 4-neighbours costs ``max(|Δfeature| - tau, 0) + 0.1``. Alternating
    row and column sweeps (``cycles`` rounds) converge to the shortest paths that turn a few
    times, which is all a segmentation start needs. Unreachable pixels get a large value.
    """
    features = np.asarray(features, dtype=np.float32)
    if features.ndim == 2:
        features = features[:, :, None]
    seeds = np.asarray(seeds, dtype=bool)
    height, width = seeds.shape
    distance = np.where(seeds, 0.0, 1e9).astype(np.float32)
    step_v = np.sqrt(((features[1:] - features[:-1]) ** 2).sum(-1))
    step_h = np.sqrt(((features[:, 1:] - features[:, :-1]) ** 2).sum(-1))
    step_v = np.maximum(step_v - tau, 0.0) + 0.1
    step_h = np.maximum(step_h - tau, 0.0) + 0.1
    for _ in range(cycles):
        for row in range(1, height):
            np.minimum(distance[row], distance[row - 1] + step_v[row - 1], out=distance[row])
        for row in range(height - 2, -1, -1):
            np.minimum(distance[row], distance[row + 1] + step_v[row], out=distance[row])
        for col in range(1, width):
            np.minimum(distance[:, col], distance[:, col - 1] + step_h[:, col - 1],
                       out=distance[:, col])
        for col in range(width - 2, -1, -1):
            np.minimum(distance[:, col], distance[:, col + 1] + step_h[:, col],
                       out=distance[:, col])
    return distance


def ellipse_mask(shape, box):
    """Return the bool mask of the ellipse inscribed in ``box`` (the last-resort prior)."""
    x0, y0, x1, y1 = box
    mask = np.zeros(shape[:2], np.uint8)
    centre = (int(round((x0 + x1) / 2)), int(round((y0 + y1) / 2)))
    axes = (max(1, int(round((x1 - x0) / 2))), max(1, int(round((y1 - y0) / 2))))
    cv2.ellipse(mask, centre, axes, 0, 0, 360, 1, -1)
    inside = np.zeros_like(mask)
    inside[y0:y1 + 1, x0:x1 + 1] = 1
    # Rounding the centre can put the ellipse's rim one pixel past the box.
    return (mask & inside) > 0


def sides_touched(mask, box, tolerance=None):
    """Count the sides of ``box`` (0-4) the mask reaches within ``tolerance`` of the box size."""
    tolerance = SIDE_TOLERANCE if tolerance is None else tolerance
    x0, y0, x1, y1 = box
    ys, xs = np.nonzero(mask)
    if xs.size == 0:
        return 0
    tol_x = tolerance * (x1 - x0 + 1) + 1
    tol_y = tolerance * (y1 - y0 + 1) + 1
    return (int(xs.min() - x0 <= tol_x) + int(x1 - xs.max() <= tol_x)
            + int(ys.min() - y0 <= tol_y) + int(y1 - ys.max() <= tol_y))


def _crop_window(box, width, height, margin=None):
    """Return the crop ``(x0, y0, x1, y1)`` (exclusive end) around a box with a margin."""
    x0, y0, x1, y1 = box
    margin = CROP_MARGIN if margin is None else margin
    pad = int(round(margin * max(x1 - x0 + 1, y1 - y0 + 1))) + 10
    return max(0, x0 - pad), max(0, y0 - pad), min(width, x1 + pad + 1), min(height, y1 + pad + 1)


def _run_grabcut(image_lab, mask, iterations):
    """Run GrabCut from a label mask (seeded, so results repeat) and return the foreground."""
    if not ((mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD)).any():
        return np.zeros(mask.shape, bool)
    if not ((mask == cv2.GC_BGD) | (mask == cv2.GC_PR_BGD)).any():
        return np.ones(mask.shape, bool)
    # GrabCut seeds its colour models with k-means on OpenCV's global RNG; fix it so the same
    # hint gives the same mask every time.
    cv2.setRNGSeed(0)
    background = np.zeros((1, 65), np.float64)
    foreground = np.zeros((1, 65), np.float64)
    mask = mask.copy()
    try:
        cv2.grabCut(image_lab, mask, None, background, foreground, iterations,
                    cv2.GC_INIT_WITH_MASK)
    except cv2.error as error:
        # Raised when a model ends up with no samples (e.g. a uniform region).
        LOGGER.debug('grabCut failed: %s', error)
        return (mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD)
    return (mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD)


def _drop_specks(mask, keep_fraction=0.05, anchors=None):
    """Keep connected components at least ``keep_fraction`` of the largest (or holding anchors)."""
    count, components, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), 8)
    if count <= 2:
        return mask.astype(bool)
    areas = stats[1:, cv2.CC_STAT_AREA]
    keep = np.zeros(count, bool)
    keep[1:] = areas >= keep_fraction * areas.max()
    if anchors is not None:
        keep[np.unique(components[anchors])] = True
        keep[0] = False
    return keep[components]


def grabcut_rect(image, box, iterations=DEFAULT_ITERATIONS):
    """Plain OpenCV GrabCut from a rectangle on the whole RGB image (the baseline)."""
    image = check_image(image)
    height, width = image.shape[:2]
    x0, y0, x1, y1 = check_box(box, width, height)
    cv2.setRNGSeed(0)
    mask = np.zeros((height, width), np.uint8)
    background = np.zeros((1, 65), np.float64)
    foreground = np.zeros((1, 65), np.float64)
    cv2.grabCut(cv2.cvtColor(image, cv2.COLOR_RGB2BGR), mask,
                (x0, y0, x1 - x0 + 1, y1 - y0 + 1), background, foreground, iterations,
                cv2.GC_INIT_WITH_RECT)
    return (mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD)


def _geodesic_start(crop_rgb, seeds, max_side=None, tau=None):
    """Geodesic distance from ``seeds`` over a smoothed, downscaled Lab version of the crop."""
    max_side = GEODESIC_SIDE if max_side is None else max_side
    tau = GEODESIC_TAU if tau is None else tau
    height, width = seeds.shape
    scale = min(1.0, max_side / max(height, width))
    small = cv2.resize(crop_rgb, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    # Mean-shift flattens texture so a hedge or gravel does not look like a wall of edges.
    small = cv2.pyrMeanShiftFiltering(np.ascontiguousarray(small), *MEAN_SHIFT)
    features = cv2.cvtColor(small, cv2.COLOR_RGB2LAB).astype(np.float32)
    small_seeds = cv2.resize(seeds.astype(np.uint8), (small.shape[1], small.shape[0]),
                             interpolation=cv2.INTER_NEAREST) > 0
    if not small_seeds.any():
        # A seed smaller than one downscaled pixel: keep its nearest pixel.
        ys, xs = np.nonzero(seeds)
        small_seeds[min(int(ys[0] * scale), small.shape[0] - 1),
                    min(int(xs[0] * scale), small.shape[1] - 1)] = True
    distance = geodesic_distance(features, small_seeds, tau=tau)
    return cv2.resize(distance, (width, height), interpolation=cv2.INTER_LINEAR)


def box_to_mask(image, box, iterations=DEFAULT_ITERATIONS, positive=None, negative=None):
    """Segment the object inside ``box`` (x0, y0, x1, y1, inclusive pixels) of an RGB image.

    ``positive`` / ``negative`` are optional lists of ``(x, y)`` clicks that must end up in /
    out of the mask. Returns a bool H×W mask (never empty: the inscribed ellipse at worst).
    """
    image = check_image(image)
    height, width = image.shape[:2]
    box = check_box(box, width, height)
    x0, y0, x1, y1 = box
    cx0, cy0, cx1, cy1 = _crop_window(box, width, height)
    crop = image[cy0:cy1, cx0:cx1]
    crop_lab = np.ascontiguousarray(cv2.cvtColor(crop, cv2.COLOR_RGB2LAB))
    inside = np.zeros(crop.shape[:2], bool)
    inside[y0 - cy0:y1 - cy0 + 1, x0 - cx0:x1 - cx0 + 1] = True
    hard = np.full(crop.shape[:2], -1, np.int16)
    anchors = np.zeros(crop.shape[:2], bool)
    for points, value in ((positive or [], cv2.GC_FGD), (negative or [], cv2.GC_BGD)):
        for x, y in points:
            disc = np.zeros(crop.shape[:2], np.uint8)
            cv2.circle(disc, (int(x) - cx0, int(y) - cy0), CLICK_RADIUS, 1, -1)
            hard[disc > 0] = value
            if value == cv2.GC_FGD:
                anchors |= disc > 0

    def with_hard(mask):
        mask[hard >= 0] = hard[hard >= 0]
        return mask

    local_box = (x0 - cx0, y0 - cy0, x1 - cx0, y1 - cy0)
    result = None
    if (~inside).any():
        distance = _geodesic_start(crop, ~inside)
        cut = min(GEODESIC_THRESHOLD * np.percentile(distance[inside], 90),
                  GEODESIC_MAX_BACKGROUND)
        start = np.full(crop.shape[:2], cv2.GC_BGD, np.uint8)
        start[inside] = np.where(distance[inside] < cut, cv2.GC_PR_BGD, cv2.GC_PR_FGD)
        result = _run_grabcut(crop_lab, with_hard(start), iterations) & inside
    if result is None or sides_touched(result, local_box) < 3:
        # The geodesic start lost part of the object (it shares the outside's colours): the
        # rectangle start keeps more of it; take it when it reaches more sides of the box.
        start = np.full(crop.shape[:2], cv2.GC_BGD, np.uint8)
        start[inside] = cv2.GC_PR_FGD
        plain = _run_grabcut(crop_lab, with_hard(start), iterations) & inside
        if result is None or sides_touched(plain, local_box) > sides_touched(result, local_box):
            result = plain
    result = _drop_specks(result, anchors=anchors if anchors.any() else None)
    mask = np.zeros((height, width), bool)
    mask[cy0:cy1, cx0:cx1] = result
    if not mask.any():
        LOGGER.info('box %s gave an empty mask; using the inscribed ellipse', box)
        mask = ellipse_mask((height, width), box)
    return mask


def points_to_mask(image, points, box=None, iterations=DEFAULT_ITERATIONS):
    """Segment one object from clicks ``[(x, y, label), …]`` (label 1 positive, 0 negative).

    With a ``box`` the clicks constrain :func:`box_to_mask`. Without one, the region is grown
    from the positive clicks: pixels colour-geodesically close to them start as probable
    foreground inside a window around the clicks, and GrabCut refines it.
    """
    image = check_image(image)
    height, width = image.shape[:2]
    positive, negative = [], []
    for point in points:
        if len(point) != 3:
            raise ValueError(f'a click is x,y,label, got {point!r}')
        x, y, label = (int(round(float(v))) for v in point)
        if not (0 <= x < width and 0 <= y < height):
            raise ValueError(f'click {x},{y} lies outside the {width}x{height} image')
        if label not in (0, 1):
            raise ValueError(f'click label must be 1 (object) or 0 (background), got {label}')
        (positive if label == 1 else negative).append((x, y))
    if box is not None:
        return box_to_mask(image, box, iterations, positive=positive, negative=negative)
    if not positive:
        raise ValueError('clicks without a box need at least one positive click (label 1)')
    xs = [p[0] for p in positive]
    ys = [p[1] for p in positive]
    reach = max(max(xs) - min(xs), max(ys) - min(ys), int(0.25 * max(width, height)), 20)
    cx0, cy0 = max(0, min(xs) - reach), max(0, min(ys) - reach)
    cx1, cy1 = min(width, max(xs) + reach + 1), min(height, max(ys) + reach + 1)
    crop = image[cy0:cy1, cx0:cx1]
    seeds = np.zeros(crop.shape[:2], np.uint8)
    negative_seeds = np.zeros(crop.shape[:2], np.uint8)
    for x, y in positive:
        cv2.circle(seeds, (x - cx0, y - cy0), CLICK_RADIUS, 1, -1)
    for x, y in negative:
        if cx0 <= x < cx1 and cy0 <= y < cy1:
            cv2.circle(negative_seeds, (x - cx0, y - cy0), CLICK_RADIUS, 1, -1)
    distance = _geodesic_start(crop, seeds > 0)
    border = np.ones(crop.shape[:2], bool)
    border[1:-1, 1:-1] = False
    # Pixels reached from a click through less than CLICK_REACH of colour change (Lab units,
    # beyond the texture allowance) start as probable object.
    start = np.where(distance < CLICK_REACH, cv2.GC_PR_FGD, cv2.GC_PR_BGD).astype(np.uint8)
    # The window edge is background unless the window is clipped by the image border.
    start[border & (start == cv2.GC_PR_BGD)] = cv2.GC_BGD
    start[negative_seeds > 0] = cv2.GC_BGD
    start[seeds > 0] = cv2.GC_FGD
    result = _run_grabcut(np.ascontiguousarray(cv2.cvtColor(crop, cv2.COLOR_RGB2LAB)), start,
                          iterations)
    result = _keep_anchored(result | (seeds > 0), seeds > 0)
    mask = np.zeros((height, width), bool)
    mask[cy0:cy1, cx0:cx1] = result
    return mask


def _keep_anchored(mask, anchors):
    """Keep only the connected components of ``mask`` that hold an anchor pixel."""
    count, components = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
    keep = np.zeros(count, bool)
    keep[np.unique(components[anchors & mask])] = True
    keep[0] = False
    return keep[components]


def refine_mask(image, mask, positive, negative, iterations=3):
    """Refine a bool mask with scribbles (bool H×W maps of object / background strokes).

    The current mask starts as probable foreground, the rest of a window around mask and
    strokes as probable background; stroke pixels are hard constraints.
    """
    image = check_image(image)
    height, width = image.shape[:2]
    mask = np.asarray(mask, bool)
    positive = np.asarray(positive, bool)
    negative = np.asarray(negative, bool)
    for name, array in (('mask', mask), ('positive', positive), ('negative', negative)):
        if array.shape != (height, width):
            raise ValueError(f'{name} has shape {array.shape}, image is {height}x{width}')
    region = mask | positive
    if not region.any():
        return mask.copy()
    ys, xs = np.nonzero(region | negative)
    box = (int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max()))
    cx0, cy0, cx1, cy1 = _crop_window(box, width, height, margin=0.2)
    window = (slice(cy0, cy1), slice(cx0, cx1))
    start = np.where(mask[window], cv2.GC_PR_FGD, cv2.GC_PR_BGD).astype(np.uint8)
    start[negative[window]] = cv2.GC_BGD
    start[positive[window]] = cv2.GC_FGD
    lab = np.ascontiguousarray(cv2.cvtColor(image[window], cv2.COLOR_RGB2LAB))
    result = mask.copy()
    result[window] = _run_grabcut(lab, start, iterations)
    result[positive] = True
    result[negative] = False
    return result


def labels_from_masks(shape, masks):
    """Combine ``[(object_id, bool mask), …]`` into one uint8 label map.

    Where objects overlap the smaller one wins (it is usually the one in front, and a large
    mask spilling over a small one is the common failure).
    """
    labels = np.zeros(shape[:2], np.uint8)
    order = sorted(masks, key=lambda item: -int(np.count_nonzero(item[1])))
    for object_id, mask in order:
        if not 1 <= int(object_id) <= 255:
            raise ValueError(f'object ids are 1..255, got {object_id}')
        labels[np.asarray(mask, bool)] = int(object_id)
    return labels
