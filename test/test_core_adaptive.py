"""Adaptive compute (issue 15): target_confidence, the cheap path, its confidence estimate."""

import json

import numpy as np
import pytest

from vos_ros.core.backends import create_backend
from vos_ros.core.backends import create_backend_for
from vos_ros.core.backends import create_backend_with_target
from vos_ros.core.backends.adaptive import AdaptiveBackend
from vos_ros.core.backends.flow import FlowBackend
from vos_ros.core.confidence import CheapPathFeatures
from vos_ros.core.confidence import ConfidenceModel
from vos_ros.core.confidence import FEATURES
from vos_ros.core.confidence import fit_logistic
from vos_ros.core.confidence import FLOWLESS_FEATURES
from vos_ros.core.errors import ModelError
from vos_ros.core.metrics import db_eval_iou
from vos_ros.core.session import Session
from vos_ros.core.session import SessionConfig
from vos_ros.core.synthetic import make_clip


class CountingFull(FlowBackend):
    """A stand-in full model: flow at 'accurate' quality that counts its calls."""

    name = 'counting'

    def __init__(self):
        super().__init__(quality='accurate')
        self.calls = {'memorize': 0, 'propagate': 0}

    def memorize(self, image, probs):
        self.calls['memorize'] += 1
        super().memorize(image, probs)

    def propagate(self, image):
        self.calls['propagate'] += 1
        return super().propagate(image)


class SpyCheap(FlowBackend):
    """The cheap path, recording what it was told to memorise."""

    def __init__(self):
        super().__init__()
        self.memorized = []
        self.propagated = 0

    def memorize(self, image, probs):
        self.memorized.append(np.array(probs))
        super().memorize(image, probs)

    def propagate(self, image):
        self.propagated += 1
        return super().propagate(image)


def constant_model(percent):
    """A confidence model that always says ``percent``."""
    bias = float(np.log(percent / (100.0 - percent)))
    return ConfidenceModel(np.zeros(len(FEATURES)), bias)


def spied(percent, target, **options):
    """``(full, cheap, adaptive)``: counting stand-ins under a constant ``percent`` estimate."""
    full = CountingFull()
    cheap = SpyCheap()
    adaptive = AdaptiveBackend(full=full, cheap=cheap, target_confidence=target,
                               confidence_model=constant_model(percent), **options)
    return full, cheap, adaptive


@pytest.fixture(scope='module')
def clip():
    return make_clip(num_frames=14, width=128, height=96, num_objects=2, seed=2,
                     object_ids=[1, 2], speed=0.6)


def _run(backend, clip):
    session = Session(backend)
    return [r for _, r in session.propagate(clip.frames, clip.masks[0])]


def test_target_100_is_the_full_backend_alone(clip):
    alone = _run(CountingFull(), clip)
    full, cheap, adaptive = spied(99, 100)
    results = _run(adaptive, clip)
    for a, b in zip(alone, results):
        np.testing.assert_array_equal(a.labels, b.labels)
        np.testing.assert_array_equal(a.probs, b.probs)
    assert [r.path for r in results] == ['given'] + ['full'] * (len(clip) - 1)
    assert all(r.confidence is None for r in results)
    assert full.calls['propagate'] == len(clip) - 1
    # the cheap path is never touched
    assert cheap.memorized == [] and cheap.propagated == 0


def test_confident_cheap_path_runs_with_forced_refresh(clip):
    full, cheap, adaptive = spied(80, 50, max_cheap_frames=4)
    results = _run(adaptive, clip)
    paths = [r.path for r in results]
    # given, then 4 cheap frames and one forced full run, repeated
    assert paths == ['given'] + (['cheap'] * 4 + ['full']) * 2 + ['cheap'] * 3
    assert full.calls['propagate'] == 2
    # forced full frames skip the cheap path altogether
    assert cheap.propagated == paths.count('cheap')
    for result in results:
        if result.path == 'cheap':
            assert result.confidence == pytest.approx(80.0)
            assert result.labels.shape == clip.masks[0].shape
    # each run of cheap frames starts from the latest full (or given) result
    assert len(cheap.memorized) == 3
    truth = [np.array(r.probs) for r in results if r.path in ('given', 'full')]
    for memorized, reference in zip(cheap.memorized, truth):
        assert memorized.shape[0] == reference.shape[0]
        # same objects, same places (the cheap path works at its own, smaller size)
        assert memorized[1].sum() > 0 and memorized[2].sum() > 0
    # the cheap path still tracks the objects
    for result, mask in zip(results, clip.masks):
        for object_id in (1, 2):
            assert db_eval_iou(mask == object_id, result.labels == object_id) > 0.5


def test_confidence_under_the_target_runs_the_full_model(clip):
    full, cheap, adaptive = spied(60, 70, max_cheap_frames=100, max_backoff=0)
    results = _run(adaptive, clip)
    assert [r.path for r in results] == ['given'] + ['full'] * (len(clip) - 1)
    # the cheap path ran and was judged every frame; its estimate is reported
    assert cheap.propagated == len(clip) - 1
    assert all(r.confidence == pytest.approx(60.0) for r in results[1:])
    assert full.calls['propagate'] == len(clip) - 1
    # the target changes from the next frame on
    adaptive.set_target(55)
    session = Session(adaptive)
    session.step(clip.frames[0], clip.masks[0])
    assert session.step(clip.frames[1]).path == 'cheap'
    adaptive.set_target(100)
    assert session.step(clip.frames[2]).path == 'full'


def test_rejections_back_off_the_cheap_path(clip):
    full, cheap, adaptive = spied(60, 70, max_cheap_frames=100)
    results = _run(adaptive, clip)
    assert [r.path for r in results] == ['given'] + ['full'] * (len(clip) - 1)
    # tried on frames 1, 3, 6 and 11: after each rejection 1, 2, 4, then 8 frames skip it
    tried = [i for i, r in enumerate(results) if r.confidence is not None]
    assert tried == [1, 3, 6, 11] and cheap.propagated == 4
    assert full.calls['propagate'] == len(clip) - 1
    # a confident cheap path is back as soon as the target allows it (a new target ends it)
    adaptive.set_target(50)
    session = Session(adaptive)
    session.step(clip.frames[0], clip.masks[0])
    assert session.step(clip.frames[1]).path == 'cheap'
    # capped: never more than max_backoff frames without a try
    _, _, capped = spied(60, 70, max_cheap_frames=100, max_backoff=2)
    tried = [i for i, r in enumerate(_run(capped, clip)) if r.confidence is not None]
    assert tried == [1, 3, 6, 9, 12]


def test_shipped_estimator_decides_per_frame(clip):
    adaptive = AdaptiveBackend(full=CountingFull(), target_confidence=0, max_cheap_frames=6)
    results = _run(adaptive, clip)
    assert [r.path for r in results] == ['given'] + (['cheap'] * 6 + ['full']) + ['cheap'] * 6
    confidences = [r.confidence for r in results if r.confidence is not None]
    assert len(confidences) == 12 and all(0.0 <= c <= 100.0 for c in confidences)
    # it looks at the frames: the estimate changes as the cheap path drifts
    assert len({round(c, 6) for c in confidences}) > 3
    described = adaptive.describe()
    assert described['target_confidence'] == 0.0 and described['cheap'] == 'flow'
    assert described['max_cheap_frames'] == 6


@pytest.mark.parametrize('options, message', [
    ({'target_confidence': 101}, '0..100'),
    ({'target_confidence': -1}, '0..100'),
    ({'target_confidence': 'high'}, 'number'),
    ({'max_cheap_frames': 0}, 'max_cheap_frames'),
    ({'cheap_resolution': -5}, 'cheap_resolution'),
    ({'max_backoff': -1}, 'max_backoff'),
    ({'target_confidence': True}, 'number'),
    ({'cheap': 'memory'}, 'unknown cheap path'),
])
def test_bad_options_are_refused(options, message):
    with pytest.raises(ValueError, match=message):
        AdaptiveBackend(full=CountingFull(), **options)


def test_backend_names_and_targets():
    with pytest.raises(ValueError, match='full model'):
        create_backend_with_target('flow', 50)
    with pytest.raises(ValueError, match='full backend'):
        create_backend('adaptive', full='flow')
    assert isinstance(create_backend_with_target('flow', None), FlowBackend)
    adaptive = AdaptiveBackend(full=CountingFull())
    with pytest.raises(ValueError, match='0..100'):
        adaptive.set_target(150)
    with pytest.raises(RuntimeError, match='before any mask'):
        adaptive.propagate(np.zeros((8, 8, 3), np.uint8))


def test_fit_logistic_recovers_a_known_relation(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4000, len(FEATURES)))
    truth = 1.5 * x[:, 0] - 2.0 * x[:, 2] + 0.5
    y = 1.0 / (1.0 + np.exp(-truth))
    model = fit_logistic(x, y, l2=0.0)
    assert model.weights[0] == pytest.approx(1.5, abs=0.05)
    assert model.weights[2] == pytest.approx(-2.0, abs=0.05)
    assert np.abs(model.weights[[1, 3, 4]]).max() < 0.05
    np.testing.assert_allclose(model.predict(x), 100.0 * y, atol=1.0)
    path = tmp_path / 'model.json'
    model.save(path)
    again = ConfidenceModel.load(path)
    np.testing.assert_allclose(again.predict(x[:10]), model.predict(x[:10]))
    row = dict(zip(FEATURES, x[0]))
    assert again.predict(row) == pytest.approx(float(model.predict(x[:1])[0]))


def test_bad_model_files(tmp_path):
    with pytest.raises(ValueError, match='cannot read'):
        ConfidenceModel.load(tmp_path / 'missing.json')
    path = tmp_path / 'bad.json'
    path.write_text(json.dumps({'features': ['nope'], 'weights': [1.0], 'bias': 0.0}))
    with pytest.raises(ValueError, match='unknown feature'):
        ConfidenceModel.load(path)
    path.write_text(json.dumps({'features': ['frames'], 'weights': [1.0, 2.0], 'bias': 0.0}))
    with pytest.raises(ValueError, match='weights has 2 values'):
        ConfidenceModel.load(path)
    # the shipped models load and know what they were fitted on; the light pass has no flow
    shipped = ConfidenceModel.load()
    assert set(shipped.features) <= set(FEATURES) and 'fitted_on' in shipped.info
    light = ConfidenceModel.load(cheap='light')
    assert light.features == FLOWLESS_FEATURES and 'fitted_on' in light.info
    assert light.info['cheap'] == 'light'
    with pytest.raises(ValueError, match='no shipped confidence model'):
        ConfidenceModel.load(cheap='teleport')


def test_cheap_path_features():
    probs = np.zeros((2, 40, 40), np.float32)
    probs[1, 10:20, 10:20] = 1.0
    probs[0] = 1.0 - probs[1]
    features = CheapPathFeatures()
    features.start(probs)
    # the same result again, all consistent: nothing changed
    row, = features.update(probs, np.zeros((40, 40, 2), np.float32),
                           np.zeros((40, 40), bool))
    assert row['inconsistent'] == 0.0 and row['area_change'] == pytest.approx(0.0)
    assert row['uncertain'] == pytest.approx(0.0) and row['frames'] == 1.0
    # half the area, soft, moving and inconsistent everywhere
    soft = probs.copy()
    soft[1, 10:20, 10:15] = 0.6
    soft[1, 10:20, 15:20] = 0.0
    soft[0] = 1.0 - soft[1]
    flow = np.full((40, 40, 2), 3.0, np.float32)
    row, = features.update(soft, flow, np.ones((40, 40), bool))
    assert row['inconsistent'] == 1.0 and row['cum_inconsistent'] == 1.0
    assert row['uncertain'] > 0.0 and row['area_change'] == pytest.approx(np.log(101 / 51))
    assert row['frames'] == 2.0 and row['motion'] > 0.0
    with pytest.raises(ValueError, match='objects'):
        features.update(np.zeros((3, 40, 40), np.float32))


def test_change_feature_sees_the_scene_move_on():
    probs = np.zeros((2, 40, 40), np.float32)
    probs[1, 10:20, 10:20] = 1.0
    probs[0] = 1.0 - probs[1]
    image = np.full((40, 40, 3), 100, np.uint8)
    features = CheapPathFeatures()
    features.start(probs, image)
    row, = features.update(probs, image=image)
    assert row['change'] == 0.0
    moved = image.copy()
    moved[5:25, 5:25] = 151  # brighter where the object is: 51 grey levels of 255
    row, = features.update(probs, image=moved)
    assert row['change'] == pytest.approx(51.0 / 255.0, rel=0.3)
    # no image given at the start: nothing to compare with
    features.start(probs)
    row, = features.update(probs, image=moved)
    assert row['change'] == 0.0


def test_session_paths_without_objects_and_with_a_plain_backend(clip):
    session = Session('flow')
    assert session.step(clip.frames[0]).path == 'none'
    assert session.step(clip.frames[1], clip.masks[1]).path == 'given'
    result = session.step(clip.frames[2])
    # flow is the cheap path itself (it has no full model); it estimates no confidence
    assert result.path == 'cheap' and result.confidence is None


def test_target_100_with_the_memory_model_is_the_memory_backend(clip, tiny_memory_model):
    alone = _run(create_backend('memory', model_path=tiny_memory_model), clip)
    adaptive = create_backend_with_target('memory', 100, model_path=tiny_memory_model)
    assert isinstance(adaptive, AdaptiveBackend) and adaptive.full.name == 'memory'
    assert adaptive.default_resolution == 64
    results = _run(adaptive, clip)
    for a, b in zip(alone, results):
        np.testing.assert_array_equal(a.labels, b.labels)
        np.testing.assert_array_equal(a.probs, b.probs)
    # by name, options reach the full model; below 100 the cheap path takes frames
    named = create_backend('adaptive', model_path=tiny_memory_model, target_confidence=0,
                           max_cheap_frames=3, cheap='light')
    paths = [r.path for r in _run(named, clip)]
    assert paths[:5] == ['given', 'cheap', 'cheap', 'cheap', 'full']
    assert named.describe()['full'] == 'memory'
    assert named.describe()['cheap'] == 'light'
    assert named.confidence_model.features == FLOWLESS_FEATURES
    flow = create_backend('adaptive', model_path=tiny_memory_model, cheap='flow')
    assert flow.describe()['cheap'] == 'flow'


def test_default_adaptive_crops_at_full_scale_at_target_50(clip, tiny_memory_model):
    # the default pipeline (bench/README.md "The ROI pass at full scale"): target 50, crops
    # at the full model's scale however large the object
    backend = create_backend(None, model_path=tiny_memory_model)
    assert backend.name == 'adaptive' and backend.target_confidence == 50
    assert backend.describe()['cheap'] == 'roi'
    session = Session(backend, SessionConfig(size_multiple=16))
    session.step(clip.frames[0], clip.masks[0])
    # a large object: the whole frame but a corner, far more than the old quarter budget
    height, width = session._last_image.shape[:2]
    large = np.zeros((3, height, width), np.float32)
    large[1, 4:height - 4, 4:width - 4] = 1.0
    large[0] = 1.0 - large[1]
    backend._remember_full(session._last_image, large)  # as if the full model had found it
    backend.full.last_roi = None
    session.step(clip.frames[1])
    # the ROI pass ran on the frame (whatever the estimate then said of its result)
    assert backend.last_features is not None and backend.full.last_roi is not None
    (y0, y1, x0, x1), share = backend.full.last_roi
    assert share == pytest.approx((y1 - y0) * (x1 - x0) / float(height * width))
    assert share > 0.5


def test_auto_runs_the_roi_pass_down_to_50_and_flow_under(clip, tiny_memory_model):
    auto = create_backend('adaptive', model_path=tiny_memory_model, target_confidence=85)
    assert auto.describe()['cheap'] == 'roi' and auto.max_cheap_frames == 8
    assert auto.describe()['cheap_paths'] == 'roi/flow'
    assert auto.confidence_model.features == FLOWLESS_FEATURES
    assert auto.confidence_model.info['cheap'] == 'roi'
    # the untrained network's results may lose an object, which the cheap paths would refuse
    auto.reject_lost = False
    session = Session(auto, SessionConfig(size_multiple=16))
    session.step(clip.frames[0], clip.masks[0])
    session.step(clip.frames[1])
    # lower the effort under 50: flow takes over, from the last full result
    auto.set_target(0)
    assert auto.describe()['cheap'] == 'flow' and auto.max_cheap_frames == 8
    assert 'inconsistent' in auto.confidence_model.features
    paths = [session.step(frame).path for frame in clip.frames[2:12]]
    # target 0 takes every flow result; a full run is forced after at most 8 in a row
    assert paths[:7] == ['cheap'] * 7 and 'full' in paths[7:10]
    assert auto.cheap.name == 'flow' and auto.cheap.last_flow is not None
    # and back
    auto.set_target(60)
    assert auto.describe()['cheap'] == 'roi'
    result = session.step(clip.frames[12])
    assert result.path in ('cheap', 'full') and result.labels.shape == clip.masks[0].shape


def test_light_pass_reads_the_memory_and_leaves_it_alone(clip, tiny_memory_model):
    backend = create_backend('memory', model_path=tiny_memory_model)
    # working sizes on the network's 16 px grid, as vos_eval and the node make them
    session = Session(backend, SessionConfig(size_multiple=16))
    session.step(clip.frames[0], clip.masks[0])
    session.step(clip.frames[1])
    image = session._last_image  # working size, as the adaptive backend hands it over
    before = [t.clone() for t in backend._memory()]
    frames = backend.memory_frames
    # at the full resolution the light pass is the full model's read-out exactly
    light = backend.propagate_light(_working(session, clip.frames[2]), 64)
    assert light.shape == (3,) + image.shape[:2]
    np.testing.assert_allclose(light.sum(axis=0), 1.0, atol=1e-5)
    assert backend.memory_frames == frames
    for old, new in zip(before, backend._memory()):
        assert (old == new).all()
    full = backend.propagate(_working(session, clip.frames[2]))
    np.testing.assert_allclose(light, full, atol=1e-5)
    # a smaller query: a coarser answer at the same size, from the same memory
    small = backend.propagate_light(_working(session, clip.frames[3]), 32)
    assert small.shape == light.shape
    assert not np.allclose(small, backend.propagate_light(_working(session, clip.frames[3]), 64))


def _working(session, frame):
    import cv2

    width, height = session._work_size
    return cv2.resize(frame, (width, height), interpolation=cv2.INTER_AREA)


def test_adaptive_options_misspelt_are_named_as_adaptive(tiny_memory_model):
    with pytest.raises(ValueError, match='adaptive backend: option'):
        create_backend('adaptive', model_path=tiny_memory_model, targt_confidence=85)


def test_light_cheap_path_needs_a_full_model_with_one():
    with pytest.raises(ValueError, match='light pass'):
        AdaptiveBackend(full=CountingFull(), cheap='light')


def test_light_pass_shape_is_warmed_up_with_the_full_one(clip, tiny_memory_model):
    adaptive = create_backend('adaptive', model_path=tiny_memory_model, target_confidence=85,
                              cheap='light', cheap_resolution=32)
    memory = adaptive.full
    session = Session(adaptive, SessionConfig(size_multiple=16))
    took = session.warm_up(clip.frames[0].shape[1], clip.frames[0].shape[0], objects=2)
    assert took >= 0
    width, height = session._working_size(clip.frames[0].shape[1], clip.frames[0].shape[0])
    full_w, full_h = memory._net_size(width, height)
    light_w, light_h = memory._net_size(width, height, 32)
    assert (light_w, light_h) != (full_w, full_h)
    assert memory._warmed == {((full_h, full_w), 2), ((light_h, light_w), 2)}
    # a given mask warms the light shape for its own object count too
    adaptive.reset()
    session.step(clip.frames[0], clip.masks[0])
    objects = len(np.unique(clip.masks[0])) - 1
    assert ((light_h, light_w), objects) in memory._warmed


def test_roi_pass_reads_the_memory_crops_and_leaves_the_memory_alone(clip, tiny_memory_model):
    backend = create_backend('memory', model_path=tiny_memory_model)
    session = Session(backend, SessionConfig(size_multiple=16))
    session.step(clip.frames[0], clip.masks[0])
    session.step(clip.frames[1])
    image = _working(session, clip.frames[2])
    height, width = image.shape[:2]
    before = [t.clone() for t in backend._memory()]
    frames = backend.memory_frames
    # nothing in the foreground: the crop is the whole frame, at the full path's scale, so the
    # ROI pass is the full read-out
    empty = np.zeros((3, height, width), np.float32)
    empty[0] = 1.0
    whole = backend.propagate_roi(image, empty, budget=1.0)
    assert backend.last_roi[0] == (0, height, 0, width)
    assert backend.last_roi[1] == pytest.approx(1.0)
    np.testing.assert_allclose(whole, backend.propagate_light(image, 64), atol=1e-5)
    assert backend.memory_frames == frames
    for old, new in zip(before, backend._memory()):
        assert (old == new).all()
    # a small object: the crop is its box widened by the margin; outside it, background
    previous = empty.copy()
    previous[0, 40:56, 30:50] = 0.0
    previous[1, 40:56, 30:50] = 1.0
    probs = backend.propagate_roi(image, previous, budget=0.5, margin=0.25, min_margin=4)
    (y0, y1, x0, x1), share = backend.last_roi
    # the object's box (40:56, 30:50) widened by 5 px, then to the query's 32 px grid
    assert y0 <= 35 and y1 >= 61 and x0 <= 25 and x1 >= 55
    assert (y1 - y0, x1 - x0) != (height, width)
    assert 0.0 < share <= 0.5
    assert probs.shape == (3, height, width)
    np.testing.assert_allclose(probs.sum(axis=0), 1.0, atol=1e-5)
    outside = np.ones((height, width), bool)
    outside[y0:y1, x0:x1] = False
    assert (probs[0][outside] > 0.999).all()
    # the budget caps the query's pixels (a whole-frame crop at a quarter of them)
    backend.propagate_roi(image, empty, budget=0.25)
    assert backend.last_roi[1] <= 0.25 + 1e-6
    # by default nothing is scaled down: a whole-frame crop holds all of the full query's pixels
    np.testing.assert_allclose(backend.propagate_roi(image, empty), whole, atol=1e-6)
    assert backend.last_roi[1] == pytest.approx(1.0)
    with pytest.raises(ValueError, match='budget'):
        backend.propagate_roi(image, empty, budget=0.0)
    with pytest.raises(ValueError, match='do not match'):
        backend.propagate_roi(image, empty[:, :-1])


def test_cut_at_crop_counts_only_sides_inside_the_frame():
    from vos_ros.core.backends.adaptive import cut_at_crop

    foreground = np.zeros((60, 80), bool)
    foreground[20:30, 30:40] = True
    assert not cut_at_crop(foreground, (10, 40, 20, 50))
    # the object reaches the crop's right side, inside the frame: cut
    assert cut_at_crop(foreground, (10, 40, 20, 40))
    # the same side on the frame's border: the object ends there, not cut
    border = np.zeros((60, 80), bool)
    border[20:30, 70:80] = True
    assert not cut_at_crop(border, (10, 40, 60, 80))
    # a stray pixel on a side is not a cut object
    stray = foreground.copy()
    stray[10, 25] = True
    assert not cut_at_crop(stray, (10, 40, 20, 50))


def test_roi_cheap_path_refuses_a_result_cut_by_its_crop(clip, tiny_memory_model):
    adaptive = create_backend('adaptive', model_path=tiny_memory_model, target_confidence=1,
                              cheap='roi', confidence_model=constant_model(99))
    assert adaptive.describe()['cheap'] == 'roi' and adaptive.max_cheap_frames == 8
    session = Session(adaptive, SessionConfig(size_multiple=16))
    session.step(clip.frames[0], clip.masks[0])
    # an untrained network: its results may run into the crop or lose an object, so the
    # guards are off until a cut result is made on purpose
    adaptive.reject_lost = False
    adaptive.cheap.edge_check = False
    result = session.step(clip.frames[1])
    assert result.path == 'cheap' and adaptive.full.last_roi is not None
    adaptive.cheap.edge_check = True
    # a result whose object runs into a side of its crop inside the frame goes to the full model
    memory = adaptive.full
    real = memory.propagate_roi

    def cut(image, previous, budget):
        probs = real(image, previous, budget=budget)
        height, width = image.shape[:2]
        box = (0, height, 0, width // 2)
        memory.last_roi = (box, memory.last_roi[1])
        probs[:] = 0.0
        probs[0] = 1.0
        probs[0, :, width // 2 - 8:width // 2] = 0.0
        probs[1, :, width // 2 - 8:width // 2] = 1.0
        return probs

    memory.propagate_roi = cut
    result = session.step(clip.frames[2])
    assert result.path == 'full' and adaptive.last_reason == 'clipped'
    assert adaptive.last_confidence == 0.0
    # without the check the same result is taken
    adaptive.cheap.edge_check = False
    adaptive._end_backoff()
    assert session.step(clip.frames[3]).path == 'cheap'


class LosingCheap(SpyCheap):
    """A cheap path that loses object 2 (it wins no pixel)."""

    def propagate(self, image):
        probs = super().propagate(image)
        probs[0] += probs[2]
        probs[2] = 0.0
        return probs


def test_a_cheap_result_that_lost_an_object_goes_to_the_full_model(clip):
    full = CountingFull()
    adaptive = AdaptiveBackend(full=full, cheap=LosingCheap(), target_confidence=50,
                               confidence_model=constant_model(99))
    session = Session(adaptive)
    session.step(clip.frames[0], clip.masks[0])
    result = session.step(clip.frames[1])
    # the estimate trusted it (99), but object 2 is gone: only the full model searches for it
    assert result.path == 'full' and adaptive.last_reason == 'lost'
    assert adaptive.last_confidence == 0.0 and full.calls['propagate'] == 1
    assert set(np.unique(result.labels)) == {0, 1, 2}
    adaptive.reject_lost = False
    adaptive._end_backoff()
    result = session.step(clip.frames[2])
    assert result.path == 'cheap' and 2 not in np.unique(result.labels)


def test_roi_path_takes_no_resolution_and_a_session_takes_a_target(tiny_memory_model):
    with pytest.raises(ValueError, match='takes no cheap_resolution'):
        create_backend('adaptive', model_path=tiny_memory_model, cheap='roi',
                       cheap_resolution=100)
    auto = create_backend('adaptive', model_path=tiny_memory_model, cheap_resolution=100)
    # under auto the resolution is flow's; the ROI pass works on the working size
    assert auto.describe()['cheap'] == 'roi' and auto.describe()['cheap_resolution'] == 0
    assert auto._paths['flow']['resolution'] == 100
    session = Session('memory', model_path=tiny_memory_model, target_confidence=70)
    assert isinstance(session.backend, AdaptiveBackend)
    assert session.backend.target_confidence == 70 and session.backend.full.name == 'memory'
    assert not isinstance(Session('memory', model_path=tiny_memory_model).backend,
                          AdaptiveBackend)


def test_create_backend_for_a_users_settings(tmp_path):
    # flow takes no device: it runs on the CPU and says so through the device returned
    backend, device = create_backend_for('flow', device='cuda:0')
    assert isinstance(backend, FlowBackend) and device == 'cpu'
    model = tmp_path / 'mine.pt'
    model.write_bytes(b'x')
    with pytest.raises(ModelError, match="--model is set but backend 'flow' loads no model"):
        create_backend_for('flow', model_path=str(model), model_option='--model')
    backend, device = create_backend_for('memory', device='cpu', target_confidence=100)
    assert isinstance(backend, AdaptiveBackend) and backend.target_confidence == 100
    assert device == 'cpu'
    with pytest.raises(ValueError, match='flow is the cheap path itself'):
        create_backend_for('flow', target_confidence=80)
    with pytest.raises(ValueError, match='unknown backend'):
        create_backend_for('nope', model_path=str(model))
