"""Tests of the weight-free flow backend on synthetic clips with exact masks."""

import cv2
import numpy as np
import pytest

from vos_ros.core.backends import create_backend
from vos_ros.core.backends.flow import FlowBackend
from vos_ros.core.backends.flow import QUALITIES
from vos_ros.core.session import Session
from vos_ros.core.session import SessionConfig
from vos_ros.core.synthetic import make_clip
from conftest import occluded_crossing_ious


def _iou(a, b):
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else np.logical_and(a, b).sum() / union


def _run(backend, frames, first_mask, resolution=0):
    session = Session(backend, SessionConfig(resolution=resolution))
    return [r for _, r in session.propagate(frames, first_mask)]


def _mean_iou(results, masks, object_ids):
    scores = [_iou(r.labels == i, m == i) for r, m in zip(results[1:], masks[1:])
              for i in object_ids]
    return float(np.mean(scores))


class _Repeat(FlowBackend):
    """The first mask forever: what a tracker that does not track scores."""

    def propagate(self, image):
        return self._prev_probs


@pytest.fixture(scope='module')
def clip():
    return make_clip(num_frames=16, width=224, height=160, num_objects=1, seed=3, speed=1.5,
                     camera_motion=0.5)


@pytest.fixture(scope='module')
def multi_clip():
    return make_clip(num_frames=12, width=224, height=160, num_objects=3, seed=12, speed=0.6,
                     object_size=(0.3, 0.45))


def test_tracks_moving_object_better_than_baselines(clip):
    ids = clip.object_ids
    flow = _mean_iou(_run(create_backend('flow'), clip.frames, clip.first_mask), clip.masks,
                     ids)
    repeat = _mean_iou(_run(_Repeat(), clip.frames, clip.first_mask), clip.masks, ids)
    naive = _mean_iou(_run(FlowBackend(consistency=False, appearance=False, temperature=1.0),
                           clip.frames, clip.first_mask), clip.masks, ids)
    # The object moves: repeating the first mask loses it, propagation must not.
    assert repeat < 0.75
    assert flow > 0.75
    assert flow > repeat + 0.1
    assert flow >= naive - 0.02


def test_multi_object_each_tracked(multi_clip):
    ids = multi_clip.object_ids
    results = _run(FlowBackend(), multi_clip.frames, multi_clip.first_mask)
    for object_id in ids:
        scores = [_iou(r.labels == object_id, m == object_id)
                  for r, m in zip(results[1:], multi_clip.masks[1:])]
        assert np.mean(scores) > 0.7, (object_id, scores)
    assert results[-1].probs.shape[0] == len(ids) + 1
    repeat = _run(_Repeat(), multi_clip.frames, multi_clip.first_mask)
    assert _mean_iou(results, multi_clip.masks, ids) > _mean_iou(repeat, multi_clip.masks,
                                                                 ids) + 0.2


@pytest.mark.parametrize('quality', sorted(QUALITIES))
def test_probabilities_sum_to_one_and_size_matches(clip, quality):
    backend = FlowBackend(quality=quality)
    session = Session(backend)
    height, width = clip.frames[0].shape[:2]
    for index, frame in enumerate(clip.frames[:5]):
        result = session.step(frame, clip.first_mask if index == 0 else None)
        assert result.labels.shape == (height, width)
        probs = result.probs
        assert probs.dtype == np.float32
        assert probs.min() >= 0.0
        np.testing.assert_allclose(probs.sum(axis=0), 1.0, atol=1e-4)


def test_session_uses_backend_default_resolution():
    backend = FlowBackend(quality='balanced')
    frames = [np.full((480, 640, 3), 100, np.uint8)] * 2
    mask = np.zeros((480, 640), np.uint8)
    mask[100:200, 100:300] = 1
    results = [r for _, r in Session(backend).propagate(frames, mask)]
    assert results[1].probs.shape[1:] == (backend.default_resolution,
                                          round(640 * backend.default_resolution / 480))
    assert results[1].labels.shape == (480, 640)
    native = [r for _, r in Session(FlowBackend(), SessionConfig(resolution=0))
              .propagate(frames, mask)]
    assert native[1].probs.shape[1:] == (480, 640)


def test_propagated_frames_are_the_cheap_path(clip):
    # flow has no full model: path shares (vos_eval, vos_node's /diagnostics) must say so
    results = _run(FlowBackend(), clip.frames[:4], clip.first_mask)
    assert [r.path for r in results] == ['given', 'cheap', 'cheap', 'cheap']


def _square_leaving_clip(num_frames=14, width=160, height=96, step=12):
    rng = np.random.default_rng(5)
    background = rng.integers(0, 90, (height, width, 3)).astype(np.uint8)
    texture = rng.integers(150, 255, (32, 32, 3)).astype(np.uint8)
    frames, masks = [], []
    for t in range(num_frames):
        frame = background.copy()
        mask = np.zeros((height, width), np.uint8)
        x0 = 70 + step * t
        x1 = min(width, x0 + 32)
        if x0 < width:
            frame[32:64, x0:x1] = texture[:, :x1 - x0]
            mask[32:64, x0:x1] = 1
        frames.append(frame)
        masks.append(mask)
    return frames, masks


def test_object_leaving_the_frame_disappears():
    frames, masks = _square_leaving_clip()
    results = _run(FlowBackend(), frames, masks[0])
    # While visible it is followed ...
    visible = [_iou(r.labels == 1, m == 1) for r, m in zip(results[1:4], masks[1:4])]
    assert min(visible) > 0.5
    # ... and once it is gone (the last frames show only background) nothing stays labelled.
    gone = [i for i, m in enumerate(masks) if not m.any()]
    assert len(gone) >= 3
    for index in gone[1:]:
        assert (results[index].labels == 1).sum() < 0.05 * (masks[0] == 1).sum()


def test_objects_added_mid_stream_change_channel_layout(multi_clip):
    session = Session(FlowBackend(), SessionConfig(resolution=0))
    first = np.where(multi_clip.first_mask == multi_clip.object_ids[0],
                     multi_clip.object_ids[0], 0).astype(np.uint8)
    session.step(multi_clip.frames[0], first)
    session.step(multi_clip.frames[1])
    result = session.step(multi_clip.frames[2], multi_clip.masks[2])
    assert result.probs.shape[0] == len(multi_clip.object_ids) + 1
    result = session.step(multi_clip.frames[3])
    np.testing.assert_allclose(result.probs.sum(axis=0), 1.0, atol=1e-4)
    session.remove_objects([multi_clip.object_ids[0]])
    result = session.step(multi_clip.frames[4])
    assert result.probs.shape[0] == len(multi_clip.object_ids)


@pytest.mark.parametrize('options', [{'quality': 'best'}, {'preset': 'slow'}, {'cell': 0},
                                     {'colour_space': 'hsl'}, {'occlusion_mix': 2.0},
                                     {'temperature': 0}])
def test_bad_options_raise_value_error(options):
    with pytest.raises(ValueError):
        FlowBackend(**options)


def test_propagate_before_memorize_is_an_error():
    with pytest.raises(RuntimeError):
        FlowBackend().propagate(np.zeros((32, 32, 3), np.uint8))


@pytest.mark.parametrize('channels', [2, 3])
def test_softmax_matches_reference(channels):
    from vos_ros.core.backends.flow import _softmax

    rng = np.random.default_rng(channels)
    logit = (rng.standard_normal((channels, 9, 7)) * 30.0).astype(np.float32)
    scaled = logit.astype(np.float64) * 1.5
    expected = np.exp(scaled - scaled.max(axis=0))
    expected /= expected.sum(axis=0)
    probs = _softmax(logit.copy(), 1.5)
    assert probs.shape == logit.shape
    assert probs.dtype == np.float32
    np.testing.assert_allclose(probs, expected, atol=1e-5)


def test_one_object_labels_are_the_argmax_of_upsampled_probabilities(clip):
    # The session's one-object fast path must label exactly what the general path would.
    from vos_ros.core.session import resize_probs

    session = Session(FlowBackend(), SessionConfig(resolution=96))
    height, width = clip.frames[0].shape[:2]
    for index, frame in enumerate(clip.frames[:4]):
        result = session.step(frame, clip.first_mask if index == 0 else None)
    assert result.probs.shape[0] == 2 and result.probs.shape[1] < height
    full = resize_probs(result.probs, width, height)
    expected = np.where(np.argmax(full, axis=0) == 1, clip.object_ids[0], 0)
    assert (result.labels == clip.object_ids[0]).any()
    assert np.mean(result.labels != expected) < 1e-3


def test_grid_blur_matches_reference():
    from vos_ros.core.backends.flow import _blur_grid

    rng = np.random.default_rng(1)
    # The third axis holds 3 x 9 x 20 = 540 values after it (over OpenCV's channel limit).
    grid = rng.random((2, 5, 3, 9, 20)).astype(np.float32)
    expected = grid.astype(np.float64)
    for axis in range(1, grid.ndim):
        padded = np.pad(expected, [(1, 1) if a == axis else (0, 0) for a in range(grid.ndim)])
        size = grid.shape[axis]
        expected = (0.25 * np.take(padded, range(0, size), axis=axis)
                    + 0.5 * np.take(padded, range(1, size + 1), axis=axis)
                    + 0.25 * np.take(padded, range(2, size + 2), axis=axis))
    blurred = _blur_grid(grid)
    assert blurred.shape == grid.shape
    np.testing.assert_allclose(blurred, expected, atol=1e-5)


def test_lost_object_redetected_by_its_colours(occluded_crossing):
    frames, masks, hidden = occluded_crossing
    after = slice(hidden[-1] + 3, None)
    ious = occluded_crossing_ious(create_backend('flow'), frames, masks)
    # While hidden nothing is claimed (IoU 1 of two empty masks); once back it is found.
    assert np.mean(ious[hidden[1]:hidden[-1] + 1]) > 0.9, ious
    assert np.mean(ious[after]) > 0.8, ious
    # Without re-detection flow cannot bring it back: the feature is what recovers it.
    without = occluded_crossing_ious(create_backend('flow', redetect=False), frames, masks)
    assert np.mean(without[after]) < 0.5, without


def _leaked_scene():
    """A static red square on green, and a mask that has leaked into the green beside it."""
    rng = np.random.default_rng(7)
    image = np.zeros((96, 128, 3), np.uint8)
    image[:] = (40, 160, 60)
    image[24:64, 24:64] = (200, 40, 40)
    image = np.clip(image + rng.integers(-12, 13, image.shape), 0, 255).astype(np.uint8)
    given = np.zeros((96, 128), np.float32)
    given[24:64, 24:64] = 1.0
    leaked = given.copy()
    leaked[24:64, 64:84] = 1.0  # 20 px of background claimed, as drift leaves it
    return image, given, leaked


def _probs(foreground):
    return np.stack([1.0 - foreground, foreground]).astype(np.float32)


def test_anchor_gate_opens_only_when_the_mask_drifts():
    image, given, leaked = _leaked_scene()
    backend = FlowBackend(anchor_weight=1.0)
    backend.memorize(image, _probs(given))
    # As given: the memorised colours get no weight (they would only erode shared colours).
    np.testing.assert_allclose(backend._anchor_gate(2), 0.0, atol=1e-6)
    backend._prev_probs = _probs(leaked)
    leaked_weight = backend._anchor_gate(2)[0]
    assert 0.1 < leaked_weight <= 1.0
    # A lost object is re-detection's business, not the anchor's.
    backend._lost = {1}
    assert backend._anchor_gate(2)[0] == 0.0
    assert FlowBackend(anchor_weight=0.0)._anchor_gate(2).sum() == 0.0


@pytest.mark.parametrize('anchor_weight, drifted', [(0.0, True), (1.0, False)])
def test_anchor_undoes_drift_that_the_local_model_keeps(anchor_weight, drifted):
    image, given, leaked = _leaked_scene()
    backend = FlowBackend(anchor_weight=anchor_weight)
    backend.memorize(image, _probs(given))
    backend._prev_probs = _probs(leaked)  # as if earlier frames had drifted
    for _ in range(4):
        probs = backend.propagate(image)
    band = float(np.mean(probs[1, 24:64, 64:84] > 0.5))
    square = float(np.mean(probs[1, 24:64, 24:64] > 0.5))
    assert square > 0.95
    # The local model, fitted to the leaked mask, keeps the green it took; the memorised
    # colours (green was background when the mask was given) hand it back.
    assert (band > 0.5) == drifted, band


@pytest.mark.parametrize('anchor_reach, grows', [(None, True), (0.15, False)])
def test_anchor_does_not_grow_the_object_far_from_it(anchor_reach, grows):
    image, given, leaked = _leaked_scene()
    backend = FlowBackend(anchor_reach=anchor_reach)
    backend.memorize(image, _probs(given))
    # Frames later: a patch of the object's red has come into view far from it (a
    # distractor) and is background in the last result; the mask has drifted (anchor open)
    # and the flow there is not trusted (prior pulled toward unknown), where appearance
    # decides.
    frame = image.copy()
    frame[72:92, 100:124] = image[30:50, 30:54]
    backend._prev_gray = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
    backend._prev_colour = backend._colour_index(frame)
    backend._prev_probs = _probs(leaked)
    backend._anchor_gate = lambda channels: np.ones(channels - 1)
    untrusted = np.zeros(frame.shape[:2], bool)
    untrusted[72:92, 100:124] = True
    backend._inconsistent = lambda *args: untrusted
    probs = backend.propagate(frame)
    far = float(np.mean(probs[1, 72:92, 100:124] > 0.5))
    # near the object the anchor still acts: the square is kept
    assert float(np.mean(probs[1, 24:64, 24:64] > 0.5)) > 0.95
    # unlimited, the memorised colours claim the red patch far away; within reach, not
    assert (far > 0.5) == grows, far
    with pytest.raises(ValueError, match='anchor_reach'):
        FlowBackend(anchor_reach=-0.1)


def test_near_the_object_is_a_disc_and_repeatable():
    backend = FlowBackend(anchor_reach=0.25)  # 0.25 of 96 px: a 24 px reach
    warped = np.zeros((96, 128), np.float32)
    warped[40:50, 60:70] = 1.0
    near = backend._near(warped)
    assert near[45, 65] and near[45, 69 + 24] and not near[45, 69 + 27]
    # a disc, not a square: the corner 24 px away along each axis is out of reach
    assert not near[49 + 24, 69 + 24] and near[49 + 16, 69 + 16]
    for _ in range(50):  # the same answer every call (OpenCV's precise mode varied with
        np.random.rand(300, 300)  # what the heap held before: churn it)
        np.testing.assert_array_equal(backend._near(warped), near)
    assert not backend._near(np.zeros((96, 128), np.float32)).any()
    assert FlowBackend(anchor_reach=None)._near(warped) is None


def test_flow_results_repeat_bit_for_bit():
    clip = make_clip(num_frames=14, width=128, height=96, num_objects=2, seed=2,
                     object_ids=[1, 2], speed=0.6)

    def run():
        session = Session(FlowBackend(quality='accurate'))
        return [r.probs for _, r in session.propagate(clip.frames, clip.masks[0])]

    first = run()
    for _ in range(12):  # a varying step showed in a third of the runs
        for a, b in zip(first, run()):
            np.testing.assert_array_equal(a, b)
