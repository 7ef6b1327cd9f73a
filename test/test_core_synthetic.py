"""Procedural clips: determinism, exact masks, motion, occlusion, DAVIS writing, streams."""

import itertools
import os

import cv2
import numpy as np
import pytest

from vos_ros.core import synthetic
from vos_ros.core.davis import Dataset
from vos_ros.core.metrics import evaluate_sequence
from vos_ros.core.session import Session
from vos_ros.core.synthetic import clip_stream
from vos_ros.core.synthetic import make_clip
from vos_ros.core.synthetic import write_davis
from vos_ros.core.synthetic import write_davis_dataset


def test_shapes_types_and_ids():
    clip = make_clip(num_frames=7, width=120, height=90, num_objects=3, seed=0)
    assert len(clip) == 7 and len(clip.masks) == 7
    assert clip.size == (120, 90)
    assert clip.object_ids == [1, 2, 3]
    for frame, mask in zip(clip.frames, clip.masks):
        assert frame.shape == (90, 120, 3) and frame.dtype == np.uint8
        assert mask.shape == (90, 120) and mask.dtype == np.uint8
        assert set(np.unique(mask).tolist()) <= {0, 1, 2, 3}
    # Every object is annotatable on the first frame.
    assert set(np.unique(clip.first_mask).tolist()) == {0, 1, 2, 3}


def test_custom_ids_and_argument_errors():
    clip = make_clip(num_frames=3, width=64, height=48, num_objects=2, object_ids=[3, 7],
                     seed=1)
    assert set(np.unique(clip.first_mask).tolist()) == {0, 3, 7}
    with pytest.raises(ValueError):
        make_clip(num_objects=2, object_ids=[1])
    with pytest.raises(ValueError):
        make_clip(num_objects=2, object_ids=[4, 4])
    with pytest.raises(ValueError):
        make_clip(num_frames=0)
    with pytest.raises(ValueError):
        make_clip(width=8, height=8)


def test_deterministic_given_seed():
    first = make_clip(num_frames=5, width=80, height=60, seed=42)
    again = make_clip(num_frames=5, width=80, height=60, seed=42)
    other = make_clip(num_frames=5, width=80, height=60, seed=43)
    for a, b in zip(first.frames + first.masks, again.frames + again.masks):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first.frames[0], other.frames[0])


def test_masks_are_exact():
    """Outside the masks the frame is the bare background; inside, object texture."""
    rng = np.random.default_rng(5)
    scene = synthetic._make_scene(rng, 6, 120, 90, [1, 2, 3], 1.0, 1.0, 1.0, False,
                                  (0.2, 0.45), 10, 0.3)
    bare = dict(scene, objects=[], order=[])
    for index in range(6):
        image, labels = synthetic._render(scene, index)
        background, empty = synthetic._render(bare, index)
        assert not empty.any()
        edge = cv2.dilate((labels > 0).astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
        # Away from edges (anti-aliased, alpha < 0.5 there) background pixels are untouched.
        np.testing.assert_array_equal(image[~edge], background[~edge])
        inner = cv2.erode((labels > 0).astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
        assert inner.any()
        changed = np.abs(image - background).max(axis=2) > 1.0
        assert changed[inner].mean() > 0.9


def test_objects_and_camera_move():
    clip = make_clip(num_frames=12, width=120, height=90, num_objects=2, seed=3, noise=0)
    centroids = []
    for mask in (clip.masks[0], clip.masks[-1]):
        ys, xs = np.nonzero(mask == 1)
        centroids.append((xs.mean(), ys.mean()))
    assert np.hypot(*np.subtract(*centroids)) > 1.0
    still = make_clip(num_frames=4, width=120, height=90, num_objects=1, seed=3, noise=0,
                      camera_motion=0, speed=0, deformation=0)
    moving = make_clip(num_frames=4, width=120, height=90, num_objects=1, seed=3, noise=0,
                       camera_motion=1.5, speed=0, deformation=0)
    background = (still.masks[0] == 0) & (still.masks[-1] == 0)
    still_diff = np.abs(still.frames[-1].astype(int) - still.frames[0].astype(int))[background]
    assert still_diff.max() <= 1
    background = (moving.masks[0] == 0) & (moving.masks[-1] == 0)
    moved = np.abs(moving.frames[-1].astype(int) - moving.frames[0].astype(int))[background]
    assert moved.mean() > 2.0


def test_occlusion_happens():
    """Across seeds some object loses visible area to another one (z-order occlusion)."""
    occluded = False
    for seed in range(6):
        rng = np.random.default_rng(seed)
        scene = synthetic._make_scene(rng, 10, 160, 120, [1, 2, 3, 4], 1.0, 1.0, 1.0, False,
                                      (0.2, 0.45), 10, 0.3)
        for index in range(10):
            _, together = synthetic._render(scene, index, with_image=False)
            for k, obj in enumerate(scene['objects']):
                alone = dict(scene, order=[k])
                _, own = synthetic._render(alone, index, with_image=False)
                if np.count_nonzero(together == obj.label) < np.count_nonzero(own):
                    occluded = True
    assert occluded


def test_enter_leave_makes_an_object_appear_or_vanish():
    changed = 0
    for seed in range(4):
        clip = make_clip(num_frames=10, width=96, height=72, num_objects=2, seed=seed,
                         enter_leave=True)
        present = [set(np.unique(m).tolist()) - {0} for m in clip.masks]
        if present[0] != present[-1]:
            changed += 1
    assert changed >= 2


def test_write_davis_layout(tmp_path):
    clip = make_clip(num_frames=4, width=64, height=48, num_objects=2, seed=2)
    image_dir, mask_dir = write_davis(tmp_path, 'seq', clip)
    assert image_dir == os.path.join(tmp_path, 'JPEGImages', '480p', 'seq')
    assert sorted(os.listdir(image_dir)) == [f'{i:05d}.jpg' for i in range(4)]
    assert sorted(os.listdir(mask_dir)) == [f'{i:05d}.png' for i in range(4)]
    sequence = Dataset(tmp_path).sequence('seq')
    for index in range(4):
        np.testing.assert_array_equal(sequence.read_mask(index), clip.masks[index])
    write_davis(tmp_path, 'sparse', clip, masks='first')
    assert os.listdir(os.path.join(tmp_path, 'Annotations', '480p', 'sparse')) == ['00000.png']
    with pytest.raises(ValueError):
        write_davis(tmp_path, 'bad', clip, masks='some')
    clips = write_davis_dataset(tmp_path / 'set', num_sequences=2, num_frames=3, width=64,
                                height=48)
    assert Dataset(tmp_path / 'set').sequence_names() == sorted(clips)


def test_clip_stream():
    clips = list(itertools.islice(clip_stream(seed=7, num_frames=3, width=64, height=48,
                                              num_objects=(1, 3)), 5))
    again = list(itertools.islice(clip_stream(seed=7, num_frames=3, width=64, height=48,
                                              num_objects=(1, 3)), 5))
    for clip, twin in zip(clips, again):
        assert len(clip) == 3 and clip.size == (64, 48)
        assert 1 <= len(clip.object_ids) <= 3
        np.testing.assert_array_equal(clip.frames[1], twin.frames[1])
    assert len({c.frames[0].tobytes() for c in clips}) == 5
    fixed = next(clip_stream(seed=1, num_frames=2, width=64, height=48, num_objects=2,
                             noise=0.0))
    assert fixed.object_ids == [1, 2]


def test_clips_are_trackable_but_not_trivial():
    """The default backend follows the objects, imperfectly (a useful benchmark)."""
    scores = []
    for seed in range(3):
        clip = make_clip(num_frames=10, width=160, height=120, num_objects=2, seed=seed)
        labels = [r.labels for _, r in Session().propagate(clip.frames, clip.first_mask)]
        scores.append(evaluate_sequence(clip.masks, labels)['J'])
    assert 0.3 < np.mean(scores) < 0.99
