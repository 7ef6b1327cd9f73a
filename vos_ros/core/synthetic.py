"""Procedural videos with exact masks, for tests, the demo and training.

A clip is a textured background seen by a moving, zooming camera, with several textured
objects that move, scale, rotate and wobble (non-rigid), and occlude each other in a fixed
z-order. Masks hold the visible pixels of each object only (ids 1..N unless given), so they
are exact by construction. Everything is deterministic given the seed.

``make_clip`` builds one clip, ``clip_stream`` yields an endless stream of clips with random
settings (training), ``write_davis`` / ``write_davis_dataset`` write DAVIS-layout folders.
"""

import dataclasses
import math
import os

import cv2
import numpy as np

from vos_ros.core.labels import write_labels

SHAPES = ('ellipse', 'polygon', 'blob')
PATTERNS = ('stripes', 'checker', 'spots', 'noise')


@dataclasses.dataclass
class SyntheticClip:
    """Frames (H×W×3 uint8 RGB) and exact label maps (H×W uint8, visible pixels only)."""

    frames: list
    masks: list
    object_ids: list
    seed: object = None

    def __len__(self):
        return len(self.frames)

    @property
    def first_mask(self):
        """The label map of frame 0 (what a user would annotate)."""
        return self.masks[0]

    @property
    def size(self):
        """(width, height) of the frames."""
        return self.frames[0].shape[1], self.frames[0].shape[0]


# -- colours and textures --------------------------------------------------------------------


def _hsv_to_rgb(hue, saturation, value):
    """Return an RGB float32 triple for OpenCV-style HSV (hue 0..180)."""
    hsv = np.array([[[hue % 180, saturation, value]]], dtype=np.uint8)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32)


def _smooth_noise(rng, height, width, cell):
    """Return an H×W float32 field in 0..1 varying smoothly over ``cell`` pixels."""
    cell = max(2, int(cell))
    small = rng.random((height // cell + 2, width // cell + 2)).astype(np.float32)
    field = cv2.resize(small, (width + 2 * cell, height + 2 * cell),
                       interpolation=cv2.INTER_CUBIC)[cell:cell + height, cell:cell + width]
    low, high = float(field.min()), float(field.max())
    return (field - low) / max(high - low, 1e-6)


def _pattern(rng, height, width, kind, scale):
    """Return an H×W float32 pattern in 0..1; ``scale`` is its typical period in pixels."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    if kind == 'stripes':
        angle = rng.uniform(0, math.pi)
        period = scale * rng.uniform(0.3, 0.7)
        phase = (x * math.cos(angle) + y * math.sin(angle)) * (2 * math.pi / period)
        return 0.5 + 0.5 * np.sin(phase + rng.uniform(0, 2 * math.pi))
    if kind == 'checker':
        angle = rng.uniform(0, math.pi)
        period = scale * rng.uniform(0.25, 0.6)
        u = x * math.cos(angle) + y * math.sin(angle)
        v = -x * math.sin(angle) + y * math.cos(angle)
        return ((np.floor(u / period) + np.floor(v / period)) % 2).astype(np.float32)
    if kind == 'spots':
        field = np.zeros((height, width), np.float32)
        count = int(rng.integers(6, 16) * max(1.0, height * width / (scale * scale * 4)))
        for _ in range(min(count, 400)):
            centre = (int(rng.uniform(0, width)), int(rng.uniform(0, height)))
            radius = max(1, int(scale * rng.uniform(0.05, 0.18)))
            cv2.circle(field, centre, radius, 1.0, -1, cv2.LINE_AA)
        return field
    return _smooth_noise(rng, height, width, scale * rng.uniform(0.1, 0.3))


def _mix(colour_a, colour_b, weight):
    """Blend two RGB colours by an H×W weight map into an H×W×3 float32 image."""
    weight = weight[:, :, None]
    return colour_a[None, None, :] * (1.0 - weight) + colour_b[None, None, :] * weight


def _object_texture(rng, size, hue):
    """Return a size×size×3 float32 texture with two tones of ``hue`` in a random pattern."""
    saturation = rng.uniform(140, 255)
    value_a = rng.uniform(70, 150)
    value_b = min(255.0, value_a + rng.uniform(60, 120))
    colour_a = _hsv_to_rgb(hue, saturation, value_a)
    colour_b = _hsv_to_rgb(hue + rng.uniform(-12, 12), rng.uniform(100, 255), value_b)
    kind = PATTERNS[int(rng.integers(len(PATTERNS)))]
    texture = _mix(colour_a, colour_b, _pattern(rng, size, size, kind, size * 0.5))
    shade = 0.8 + 0.4 * _smooth_noise(rng, size, size, size / 3)
    return texture * shade[:, :, None]


def _background(rng, height, width, num_blobs):
    """Return an H×W×3 float32 background: smooth colour fields, a pattern and blobs."""
    hues = rng.uniform(0, 180, size=3)
    colours = [_hsv_to_rgb(h, rng.uniform(20, 160), rng.uniform(60, 230)) for h in hues]
    base = _mix(colours[0], colours[1], _smooth_noise(rng, height, width, rng.uniform(40, 120)))
    kind = PATTERNS[int(rng.integers(len(PATTERNS)))]
    pattern = _pattern(rng, height, width, kind, rng.uniform(30, 90))
    strength = rng.uniform(0.15, 0.45)
    image = base * (1.0 - strength * pattern[:, :, None]) + \
        colours[2][None, None, :] * (strength * pattern[:, :, None])
    for _ in range(num_blobs):
        colour = _hsv_to_rgb(rng.uniform(0, 180), rng.uniform(30, 220), rng.uniform(40, 240))
        centre = (int(rng.uniform(0, width)), int(rng.uniform(0, height)))
        axes = (int(rng.uniform(4, 40)), int(rng.uniform(4, 40)))
        cv2.ellipse(image, centre, axes, rng.uniform(0, 180), 0, 360, colour.tolist(), -1,
                    cv2.LINE_AA)
    return image


# -- shapes ----------------------------------------------------------------------------------


def _shape_alpha(rng, size, kind):
    """Return a size×size float32 alpha (0..1, anti-aliased) of a random shape in the middle."""
    canvas = np.zeros((size, size), np.float32)
    centre = size / 2.0
    radius = size * 0.38
    shift = 4  # sub-pixel precision for the drawing calls
    if kind == 'ellipse':
        axes = (int(radius * (1 << shift)), int(radius * rng.uniform(0.45, 1.0) * (1 << shift)))
        cv2.ellipse(canvas, (int(centre * (1 << shift)), int(centre * (1 << shift))), axes,
                    rng.uniform(0, 180), 0, 360, 1.0, -1, cv2.LINE_AA, shift)
        return canvas
    if kind == 'polygon':
        count = int(rng.integers(3, 9))
        angles = np.sort(rng.uniform(0, 2 * math.pi, count))
        # Spread the angles so that the polygon is not degenerate.
        angles = 0.5 * angles + 0.5 * np.linspace(0, 2 * math.pi, count, endpoint=False)
        radii = radius * rng.uniform(0.6, 1.0, count)
    else:
        angles = np.linspace(0, 2 * math.pi, 72, endpoint=False)
        radii = np.ones_like(angles)
        for harmonic in range(2, 6):
            radii += rng.uniform(0, 0.35 / harmonic * 2) * np.sin(
                harmonic * angles + rng.uniform(0, 2 * math.pi))
        radii = radius * radii / radii.max()
    points = np.stack([centre + radii * np.cos(angles), centre + radii * np.sin(angles)], 1)
    cv2.fillPoly(canvas, [np.round(points * (1 << shift)).astype(np.int32)], 1.0, cv2.LINE_AA,
                 shift)
    return canvas


# -- motion ----------------------------------------------------------------------------------


@dataclasses.dataclass
class _Object:
    """One object's appearance and motion (all in world coordinates)."""

    label: int
    texture: np.ndarray  # S×S×4 float32: RGB and alpha
    start: np.ndarray
    end: np.ndarray
    size: float
    angle: float
    spin: float
    scale_amp: float
    scale_freq: float
    wiggle: np.ndarray  # amplitude x, y
    wiggle_freq: float
    phase: float
    wobble: float
    wobble_freq: np.ndarray

    def centre(self, t):
        """Return the world position at normalised time ``t`` in 0..1."""
        path = self.start + (self.end - self.start) * t
        return path + self.wiggle * math.sin(2 * math.pi * self.wiggle_freq * t + self.phase)

    def scale(self, t):
        """Return the size factor at ``t``."""
        return 1.0 + self.scale_amp * math.sin(2 * math.pi * self.scale_freq * t + self.phase)


def _wobble(texture, amount, freq, t, phase, grid):
    """Warp a template with a smooth sinusoidal displacement (non-rigid deformation)."""
    if amount <= 0:
        return texture
    size = texture.shape[0]
    grid_x, grid_y = grid
    axis = grid_x[0]
    omega = 2 * math.pi * t * 2.0 + phase
    # Each displacement depends on one coordinate only: compute it along that axis, broadcast.
    shift_x = amount * size * np.sin(2 * math.pi * freq[0] * axis / size + omega)
    shift_y = amount * size * np.sin(2 * math.pi * freq[1] * axis / size + 1.3 * omega)
    map_x = grid_x + shift_x[:, None].astype(np.float32)
    map_y = grid_y + shift_y[None, :].astype(np.float32)
    return cv2.remap(texture, map_x, map_y,
                     cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def _camera(t, width, height, pan, zoom_amp, zoom_freq, shake, phase):
    """Return the 2×3 world→screen affine at ``t`` and the zoom factor."""
    zoom = 1.0 + zoom_amp * math.sin(2 * math.pi * zoom_freq * t + phase)
    centre_x = width / 2.0 + pan[0] * t + shake * math.sin(7.0 * t + phase)
    centre_y = height / 2.0 + pan[1] * t + shake * math.cos(5.0 * t + phase)
    matrix = np.array([[zoom, 0.0, width / 2.0 - zoom * centre_x],
                       [0.0, zoom, height / 2.0 - zoom * centre_y]], np.float64)
    return matrix, zoom


# -- clips -----------------------------------------------------------------------------------


def make_clip(num_frames=30, width=320, height=240, num_objects=2, seed=0, object_ids=None,
              camera_motion=1.0, deformation=1.0, speed=1.0, noise=2.0, enter_leave=False,
              object_size=(0.2, 0.45), background_blobs=12, min_visible=0.3):
    """Return a SyntheticClip of ``num_frames`` frames at ``width``×``height``.

    ``object_ids`` (default 1..N) are the label values of the objects, bottom to top of the
    z-order being random. ``camera_motion``, ``deformation`` and ``speed`` scale the camera
    pan/zoom, the non-rigid wobble and scaling, and the object motion (0 = none). ``noise`` is
    the per-pixel Gaussian noise sigma. ``enter_leave`` makes one object enter the view (absent
    from frame 0) or leave it. ``object_size`` is the range of object diameters as a fraction
    of the shorter image side. Objects other than an entering one show at least
    ``min_visible`` of their area in frame 0 (placement is re-drawn until they do, up to 20
    times; very crowded scenes keep the best placement found).
    """
    if num_frames < 1:
        raise ValueError(f'num_frames must be >= 1, got {num_frames}')
    if width < 16 or height < 16:
        raise ValueError(f'frame size must be at least 16x16, got {width}x{height}')
    if object_ids is None:
        object_ids = list(range(1, num_objects + 1))
    object_ids = [int(i) for i in object_ids]
    if len(object_ids) != num_objects:
        raise ValueError(f'{num_objects} objects but {len(object_ids)} object ids given')
    if len(set(object_ids)) != len(object_ids) or any(not 1 <= i <= 255 for i in object_ids):
        raise ValueError(f'object ids must be distinct values in 1..255, got {object_ids}')
    rng = np.random.default_rng(seed)
    scene = _make_scene(rng, num_frames, width, height, object_ids, camera_motion, deformation,
                        speed, enter_leave, object_size, background_blobs, min_visible)
    frames, masks = [], []
    # Noise comes from random windows of one bank: drawing fresh noise per frame is slow.
    bank = None
    if noise > 0:
        bank = rng.standard_normal((height + height // 2, width + width // 2, 3),
                                   dtype=np.float32) * np.float32(noise)
    for index in range(num_frames):
        frame, mask = _render(scene, index, with_image=True)
        if bank is not None:
            y0 = int(rng.integers(height // 2 + 1))
            x0 = int(rng.integers(width // 2 + 1))
            frame += bank[y0:y0 + height, x0:x0 + width]
        frames.append(np.clip(frame + 0.5, 0, 255).astype(np.uint8))
        masks.append(mask)
    return SyntheticClip(frames=frames, masks=masks, object_ids=list(object_ids), seed=seed)


def _make_scene(rng, num_frames, width, height, object_ids, camera_motion, deformation, speed,
                enter_leave, object_size, background_blobs, min_visible):
    short = min(width, height)
    pan = rng.uniform(-0.15, 0.15, 2) * np.array([width, height]) * camera_motion
    zoom_amp = rng.uniform(0.0, 0.12) * camera_motion
    camera = dict(pan=pan, zoom_amp=zoom_amp, zoom_freq=rng.uniform(0.3, 1.0),
                  shake=rng.uniform(0, 2.0) * camera_motion, phase=rng.uniform(0, 2 * math.pi))
    # The background covers every place the camera can see (pan, zoom-out, shake).
    margin = int(abs(pan).max() + short * 0.2 + 8)
    background = _background(rng, height + 2 * margin, width + 2 * margin,
                             int(background_blobs * (1 + 2 * margin / short)))
    hue0 = rng.uniform(0, 180)
    hues = [hue0 + 180.0 * i / len(object_ids) + rng.uniform(-10, 10)
            for i in range(len(object_ids))]
    rng.shuffle(hues)
    max_size = object_size[1] * short * 1.3 * (1 + zoom_amp)
    template = int(min(512, max(64, 2 ** math.ceil(math.log2(max_size)))))
    textures = []
    for hue in hues:
        alpha = _shape_alpha(rng, template, SHAPES[int(rng.integers(len(SHAPES)))])
        rgb = _object_texture(rng, template, hue)
        textures.append(np.dstack([rgb, alpha]).astype(np.float32))
    special = None
    if enter_leave and object_ids:
        special = (int(rng.integers(len(object_ids))), 'enter' if rng.random() < 0.5 else 'leave')
    grid = np.meshgrid(np.arange(template, dtype=np.float32),
                       np.arange(template, dtype=np.float32))
    best, best_fraction = None, -1.0
    for _attempt in range(20):
        objects = [_random_object(rng, label, texture, width, height, short, object_size,
                                  speed, deformation, special if special and special[0] == k
                                  else None, abs(pan).max())
                   for k, (label, texture) in enumerate(zip(object_ids, textures))]
        order = rng.permutation(len(objects)).tolist()
        scene = dict(width=width, height=height, num_frames=num_frames, camera=camera,
                     background=background, margin=margin, objects=objects, order=order,
                     grid=grid)
        fraction = _least_visible(scene, special) if min_visible > 0 else 1.0
        if fraction > best_fraction:
            best, best_fraction = scene, fraction
        if fraction >= min_visible:
            break
    # Crowded scenes may never satisfy min_visible: the best placement drawn is kept.
    return best


def _random_object(rng, label, texture, width, height, short, object_size, speed, deformation,
                   special, max_pan):
    size = short * rng.uniform(*object_size)
    extent = np.array([width, height], np.float64)
    start = rng.uniform(0.2, 0.8, 2) * extent
    travel = rng.normal(0, 0.25, 2) * extent * speed
    end = np.clip(start + travel, 0.1 * extent, 0.9 * extent)
    if special is not None:
        # Enter or leave across the nearest side, far enough out to be invisible.
        outside = start.copy()
        axis = int(rng.integers(2))
        side = 1.0 if start[axis] > extent[axis] / 2 else 0.0
        outside[axis] = side * extent[axis] + (1 if side else -1) * (size * 0.9 + max_pan + 4)
        start, end = (outside, start) if special[1] == 'enter' else (start, outside)
    return _Object(
        label=label, texture=texture, start=start, end=end, size=size,
        angle=rng.uniform(0, 2 * math.pi), spin=rng.normal(0, 0.8) * speed,
        scale_amp=rng.uniform(0, 0.2) * deformation, scale_freq=rng.uniform(0.3, 1.2),
        wiggle=rng.normal(0, 0.04, 2) * extent * speed, wiggle_freq=rng.uniform(0.5, 2.0),
        phase=rng.uniform(0, 2 * math.pi), wobble=rng.uniform(0.01, 0.04) * deformation,
        wobble_freq=rng.uniform(0.5, 2.0, 2))


def _least_visible(scene, special):
    """Return the smallest visible fraction in frame 0 over objects that must show there."""
    _, mask, areas = _render(scene, 0, with_image=False, with_areas=True)
    fractions = [np.count_nonzero(mask == obj.label) / max(areas[k], 1e-6)
                 for k, obj in enumerate(scene['objects'])
                 if special is None or special[0] != k]
    return min(fractions, default=1.0)


def _render(scene, index, with_image=True, with_areas=False):
    """Render frame ``index``: (RGB float32 image or None, label map[, full object areas])."""
    width, height = scene['width'], scene['height']
    t = index / max(1, scene['num_frames'] - 1)
    cam = scene['camera']
    matrix, zoom = _camera(t, width, height, cam['pan'], cam['zoom_amp'], cam['zoom_freq'],
                           cam['shake'], cam['phase'])
    image = None
    if with_image:
        margin = scene['margin']
        shifted = matrix.copy()
        shifted[:, 2] -= margin * zoom  # background pixel (u, v) is world (u - m, v - m)
        image = cv2.warpAffine(scene['background'], shifted, (width, height),
                               flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    labels = np.zeros((height, width), np.uint8)
    areas = []
    for k in scene['order']:
        obj = scene['objects'][k]
        texture = _wobble(obj.texture, obj.wobble, obj.wobble_freq, t, obj.phase, scene['grid'])
        size = texture.shape[0]
        scale = obj.size * obj.scale(t) / (size * 0.76)  # the shape spans 0.76 of its template
        angle = obj.angle + obj.spin * t * 2 * math.pi
        rotation = scale * np.array([[math.cos(angle), -math.sin(angle)],
                                     [math.sin(angle), math.cos(angle)]])
        offset = obj.centre(t) - rotation @ [size / 2, size / 2]
        to_world = np.hstack([rotation, offset[:, None]])
        to_screen = matrix[:, :2] @ to_world
        to_screen[:, 2] += matrix[:, 2]
        if with_areas:
            areas.append(float((texture[:, :, 3] >= 0.5).sum()) * (scale * zoom) ** 2)
        # Only the object's bounding box is warped and blended (much faster than full frames).
        corners = to_screen @ np.array([[0, size, 0, size], [0, 0, size, size], [1, 1, 1, 1]])
        x0 = max(0, int(math.floor(corners[0].min())) - 1)
        y0 = max(0, int(math.floor(corners[1].min())) - 1)
        x1 = min(width, int(math.ceil(corners[0].max())) + 2)
        y1 = min(height, int(math.ceil(corners[1].max())) + 2)
        if x1 <= x0 or y1 <= y0:
            continue
        to_roi = to_screen.copy()
        to_roi[:, 2] -= (x0, y0)
        roi = (x1 - x0, y1 - y0)
        if with_image:
            warped = cv2.warpAffine(texture, to_roi, roi, flags=cv2.INTER_LINEAR,
                                    borderMode=cv2.BORDER_CONSTANT, borderValue=0)
            alpha = warped[:, :, 3:4]
            patch = image[y0:y1, x0:x1]
            image[y0:y1, x0:x1] = patch * (1.0 - alpha) + warped[:, :, :3] * alpha
            alpha = alpha[:, :, 0]
        else:
            alpha = cv2.warpAffine(np.ascontiguousarray(texture[:, :, 3]), to_roi, roi,
                                   flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                                   borderValue=0)
        # The mask is where the object dominates the blended pixel: exact by construction.
        labels[y0:y1, x0:x1][alpha >= 0.5] = obj.label
    if with_areas:
        return image, labels, areas
    return image, labels


def clip_stream(seed=None, num_frames=16, width=320, height=240, num_objects=(1, 4),
                **overrides):
    """Yield random clips forever (training data): settings drawn per clip from ``seed``.

    ``num_objects`` may be a number or an inclusive (low, high) range; ``overrides`` fix any
    other ``make_clip`` argument instead of drawing it.
    """
    rng = np.random.default_rng(seed)
    while True:
        if isinstance(num_objects, (tuple, list)):
            count = int(rng.integers(num_objects[0], num_objects[1] + 1))
        else:
            count = int(num_objects)
        settings = dict(
            camera_motion=float(rng.uniform(0.0, 1.5)),
            deformation=float(rng.uniform(0.0, 1.5)),
            speed=float(rng.uniform(0.3, 1.5)),
            noise=float(rng.uniform(0.0, 5.0)),
            enter_leave=bool(rng.random() < 0.2),
            background_blobs=int(rng.integers(0, 30)),
        )
        settings.update(overrides)
        yield make_clip(num_frames=num_frames, width=width, height=height, num_objects=count,
                        seed=int(rng.integers(2 ** 31)), **settings)


# -- DAVIS layout ----------------------------------------------------------------------------


def write_davis(root, name, clip, masks='all', quality=95):
    """Write ``clip`` as DAVIS sequence ``name`` (JPEGImages/480p, Annotations/480p) in ``root``.

    ``masks`` is ``'all'`` (every frame's mask) or ``'first'`` (frame 0 only, like a sequence
    whose ground truth is withheld). Returns the sequence's (image folder, mask folder).
    """
    if masks not in ('all', 'first'):
        raise ValueError(f"masks must be 'all' or 'first', got {masks!r}")
    image_dir = os.path.join(os.fspath(root), 'JPEGImages', '480p', name)
    mask_dir = os.path.join(os.fspath(root), 'Annotations', '480p', name)
    os.makedirs(image_dir, exist_ok=True)
    os.makedirs(mask_dir, exist_ok=True)
    for index, frame in enumerate(clip.frames):
        path = os.path.join(image_dir, f'{index:05d}.jpg')
        if not cv2.imwrite(path, cv2.cvtColor(frame, cv2.COLOR_RGB2BGR),
                           [cv2.IMWRITE_JPEG_QUALITY, int(quality)]):
            raise OSError(f'cannot write {path}')
        if masks == 'all' or index == 0:
            write_labels(os.path.join(mask_dir, f'{index:05d}.png'), clip.masks[index])
    return image_dir, mask_dir


def write_davis_dataset(root, num_sequences=3, seed=0, prefix='synth', **clip_options):
    """Write ``num_sequences`` random clips as a DAVIS dataset; return {name: clip}."""
    clips = {}
    for index in range(num_sequences):
        name = f'{prefix}{index:02d}'
        clip = make_clip(seed=seed * 1000 + index, **clip_options)
        write_davis(root, name, clip)
        clips[name] = clip
    return clips
