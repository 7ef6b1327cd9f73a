"""Tests of vos_ros.core.interactive: crop geometry, click simulation and the box model path.

The model tests use a tiny randomly initialised BoxNet exported to a model file, so they check
the plumbing (shapes, crops, caching, refinement order, fallbacks), not the shipped weights.
"""

import cv2
import numpy as np
import pytest

from vos_ros.core import interactive
from vos_ros.core.errors import ModelError
from vos_ros.core.interactive import box_map
from vos_ros.core.interactive import crop_matrix
from vos_ros.core.interactive import crop_window
from vos_ros.core.interactive import hint_maps
from vos_ros.core.interactive import next_click
from vos_ros.core.interactive import PromptSegmenter
from vos_ros.core.interactive import to_crop
from vos_ros.core.interactive import warp_crop


def scene(height=120, width=160):
    rng = np.random.default_rng(0)
    image = np.clip(rng.normal(120, 6, (height, width, 3)), 0, 255).astype(np.uint8)
    truth = np.zeros((height, width), np.uint8)
    cv2.circle(truth, (70, 60), 25, 1, -1)
    image[truth > 0] = (210, 40, 40)
    return image, truth > 0


def test_crop_window_grows_the_box_and_limits_the_aspect():
    x, y, width, height = crop_window((10, 20, 29, 59), context=0.25)
    assert width == pytest.approx(30.0) and height == pytest.approx(60.0)
    assert x + width / 2 == pytest.approx(20.0) and y + height / 2 == pytest.approx(40.0)
    _, _, width, height = crop_window((0, 0, 199, 9), context=0.0)
    assert width == pytest.approx(200.0) and height == pytest.approx(100.0)


def test_crop_matrix_maps_box_corners_onto_the_crop():
    window = (10.0, 20.0, 40.0, 80.0)
    matrix = crop_matrix(window, 64)
    # the window's outer pixel edges land on the crop's outer edges
    assert to_crop(matrix, 10 - 0.5 + 0.5, 20 - 0.5 + 0.5)[0] == pytest.approx(-0.5 + 64 / 80)
    left, top = to_crop(matrix, 9.5, 19.5)
    right, bottom = to_crop(matrix, 49.5, 99.5)
    assert (left, top) == pytest.approx((-0.5, -0.5))
    assert (right, bottom) == pytest.approx((63.5, 63.5))


@pytest.mark.parametrize('size', [32, 8])
def test_warp_crop_cuts_the_window_and_pads_outside(size):
    image = np.zeros((100, 100), np.float32)
    image[40:60, 40:60] = 1.0
    crop = warp_crop(image, (30.0, 30.0, 40.0, 40.0), size, 0.0)
    assert crop.shape == (size, size)
    # the square fills the middle half of the crop
    assert crop[size // 2, size // 2] == pytest.approx(1.0)
    assert crop[0, 0] == pytest.approx(0.0)
    outside = warp_crop(np.full((10, 10, 3), 200, np.uint8), (-20.0, -20.0, 20.0, 20.0), 16)
    assert tuple(outside[0, 0]) == (124, 116, 104)


def test_box_map_covers_the_box_in_the_crop():
    window = crop_window((20, 20, 59, 59), context=0.5)
    size = 64
    crop = box_map((20, 20, 59, 59), crop_matrix(window, size), size)
    assert crop.sum() == pytest.approx(32 * 32)
    assert crop[16:48, 16:48].all() and crop[:16].sum() == 0


def test_hint_maps_stack_box_clicks_and_previous():
    box = np.ones((32, 32), np.float32)
    previous = np.zeros((32, 32), np.float32)
    previous[:4] = 1
    hints = hint_maps(32, box, [(5, 5)], [(20, 20), (25, 25)], previous, radius=2)
    assert hints.shape == (4, 32, 32) and hints.dtype == np.float32
    assert hints[0].all() and hints[3].sum() == 4 * 32
    assert hints[1][5, 5] == 1 and hints[1][20, 20] == 0
    assert hints[2][20, 20] == 1 and hints[2][25, 25] == 1 and hints[2][5, 5] == 0


def test_next_click_goes_to_the_centre_of_the_largest_error():
    truth = np.zeros((60, 80), bool)
    truth[10:50, 10:70] = True
    prediction = truth.copy()
    prediction[20:40, 20:40] = False  # a missed 20x20 hole
    prediction[0:4, 0:4] = True  # a small false positive
    x, y, positive = next_click(prediction, truth)
    assert positive and 28 <= x <= 31 and 28 <= y <= 31
    prediction = truth.copy()
    prediction[52:60, 0:40] = True  # the largest error is now wrong background
    x, y, positive = next_click(prediction, truth)
    assert not positive and 52 <= y < 60
    assert next_click(truth, truth) is None


@pytest.fixture(scope='module')
def tiny_model(tmp_path_factory):
    """A randomly initialised BoxNet (width 16) exported as a ``box`` model file."""
    torch = pytest.importorskip('torch')
    from vos_ros.core import model_io
    from vos_ros.core.models.box_net import BoxNet

    torch.manual_seed(0)
    model = BoxNet(width=16, pretrained=False).eval()
    path = tmp_path_factory.mktemp('box') / 'box.pt'
    model_io.save_model(torch.jit.script(model), path, {
        'kind': 'box', 'mean': [123.7, 116.3, 103.5], 'std': [58.4, 57.1, 57.4], 'stride': 2,
        'input_multiple': 16, 'crop_size': 64, 'context': 0.2, 'click_radius': 3})
    return str(path)


@pytest.fixture(scope='module')
def tiny_onnx_model(tmp_path_factory):
    """The tiny BoxNet exported with its ONNX copy (as vos_export writes it)."""
    torch = pytest.importorskip('torch')
    pytest.importorskip('onnx')
    from vos_ros.core import model_io
    from vos_ros.core.models.box_net import BoxNet
    from vos_ros.core.models.box_net import model_to_onnx

    torch.manual_seed(1)
    model = BoxNet(width=16, pretrained=False).eval()
    path = tmp_path_factory.mktemp('box_onnx') / 'box.pt'
    model_io.save_model(torch.jit.script(model), path, {
        'kind': 'box', 'mean': [123.7, 116.3, 103.5], 'std': [58.4, 57.1, 57.4], 'stride': 2,
        'input_multiple': 16, 'crop_size': 64, 'context': 0.2, 'click_radius': 3},
        extra_files={model_io.BOX_ONNX_FILE: model_to_onnx(model, 64)})
    return str(path)


@pytest.mark.parametrize('flip', [True, False])
def test_opencv_runtime_matches_torch(tiny_onnx_model, flip):
    image, _ = scene()
    fast = interactive.BoxModel(tiny_onnx_model, flip=flip)
    slow = interactive.BoxModel(tiny_onnx_model, flip=flip, runtime='torch')
    assert (fast.runtime, slow.runtime) == ('opencv', 'torch')
    box = (45, 35, 95, 85)
    window = fast.window(box)
    hints = hint_maps(64, box_map(box, crop_matrix(window, 64), 64), [(30.0, 30.0)],
                      [(5.0, 60.0)], None, 3)
    np.testing.assert_allclose(fast.crop_probabilities(image, window, hints),
                               slow.crop_probabilities(image, window, hints), atol=1e-4)
    first = fast.predict(image, box)
    assert np.array_equal(first, slow.predict(image, box))
    assert np.array_equal(fast.predict(image, box, [(70, 60)], [(50, 40)], first),
                          slow.predict(image, box, [(70, 60)], [(50, 40)], first))


def test_runtime_choice_and_errors(tiny_model, tiny_onnx_model):
    assert interactive.BoxModel(tiny_model).runtime == 'torch'  # no ONNX copy: torch
    with pytest.raises(ModelError, match='no ONNX copy'):
        interactive.BoxModel(tiny_model, runtime='opencv')
    with pytest.raises(ValueError, match='runtime'):
        interactive.BoxModel(tiny_onnx_model, runtime='onnxruntime')


def test_box_to_mask_through_opencv_never_imports_torch(tiny_onnx_model):
    import subprocess
    import sys

    code = ('import sys, numpy as np\n'
            'from vos_ros.core.interactive import PromptSegmenter\n'
            f'segmenter = PromptSegmenter("model", {tiny_onnx_model!r})\n'
            'mask = segmenter.box(np.full((120, 160, 3), 90, np.uint8), (40, 30, 99, 89))\n'
            'print(mask.shape, "torch" in sys.modules)\n')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                         timeout=120, check=True).stdout
    assert out.strip() == '(120, 160) False'


def test_box_model_predicts_an_image_sized_mask_and_caches_the_encoder(
        tiny_model, monkeypatch):
    image, truth = scene()
    model = interactive.BoxModel(tiny_model)
    assert model.size == 64 and model.radius == 3
    encoded = []
    encode = model.loaded.module.encode

    class Spy:
        def __getattr__(self, name):
            return getattr(spied, name)

        def encode(self, tensor):
            encoded.append(tuple(tensor.shape))
            return encode(tensor)

    spied = model.loaded.module
    monkeypatch.setattr(model.loaded, 'module', Spy())
    first = model.predict(image, (45, 35, 95, 85))
    assert first.shape == truth.shape and first.dtype == bool
    assert encoded == [(2, 3, 64, 64)]  # the crop and its mirror image
    # a click inside the box reuses the encoder features; a click outside grows the crop
    model.predict(image, (45, 35, 95, 85), [(70, 60)], [], first)
    assert len(encoded) == 1
    model.predict(image, (45, 35, 95, 85), [(120, 100)], [], first)
    assert len(encoded) == 2


def test_model_output_stays_in_the_crop_and_near_the_box(tiny_model):
    image, _ = scene()
    model = interactive.BoxModel(tiny_model)
    model.threshold = -50.0  # every crop pixel is object
    box = (60, 50, 79, 69)
    mask = model.predict(image, box)
    ys, xs = np.nonzero(mask)
    # the box grown by BOX_SLACK (1 px of 20 here) plus a pixel of rounding
    assert (xs.min(), ys.min(), xs.max(), ys.max()) == (58, 48, 81, 71)
    # without a box (a previous mask instead) the mask is the whole crop, warped back
    previous = np.zeros(mask.shape, bool)
    previous[50:70, 60:80] = True
    mask = model.predict(image, None, previous=previous)
    ys, xs = np.nonzero(mask)
    x, y, width, height = model.window(box)
    assert xs.min() >= int(x) and xs.max() <= int(np.ceil(x + width))
    assert ys.min() >= int(y) and ys.max() <= int(np.ceil(y + height))
    assert mask.sum() > 0.8 * width * height


def test_each_click_refines_the_last_mask(tiny_model, monkeypatch):
    image, truth = scene()
    segmenter = PromptSegmenter('model', tiny_model)
    calls = []

    def fake_predict(image, box=None, positive=(), negative=(), previous=None,
                     positive_map=None, negative_map=None, window=None):
        calls.append((list(positive), list(negative),
                      None if previous is None else int(previous.sum())))
        mask = np.zeros(image.shape[:2], bool)
        mask[:len(calls) * 10] = True
        return mask

    monkeypatch.setattr(segmenter.model, 'predict', fake_predict)
    segmenter.clicks(image, [(70, 60, 1), (10, 10, 0)], box=(45, 35, 95, 85))
    width = image.shape[1]
    assert calls == [([], [], None), ([(70, 60)], [], 10 * width),
                     ([(70, 60)], [(10, 10)], 20 * width)]


def test_clicks_only_grow_the_crop_while_the_mask_reaches_its_border(tiny_model):
    image, _ = scene(200, 300)
    segmenter = PromptSegmenter('model', tiny_model)
    segmenter.model.threshold = -50.0  # the whole crop is object: the crop must grow
    mask = segmenter.clicks(image, [(150, 100, 1)])
    first = segmenter.model.window(interactive._prompt_box(None, [(150, 100)], None, None,
                                                           image.shape[:2]))
    assert mask.sum() > first[2] * first[3]
    with pytest.raises(ValueError, match='positive click'):
        segmenter.clicks(image, [(150, 100, 0)])


def test_auto_falls_back_to_grabcut_and_says_so_once(tmp_path):
    image, truth = scene()
    lines = []
    interactive._SAID.clear()
    for _ in range(2):
        segmenter = PromptSegmenter('auto', tmp_path / 'missing.pt', log=lines.append)
        mask = segmenter.box(image, (45, 35, 95, 85))
        assert segmenter.method == 'grabcut'
        assert (mask & truth).sum() / (mask | truth).sum() > 0.85
    assert len(lines) == 1 and 'using GrabCut' in lines[0] and 'missing.pt' in lines[0]
    with pytest.raises(ModelError, match='cannot be used'):
        PromptSegmenter('model', tmp_path / 'missing.pt').method
    with pytest.raises(ValueError, match='unknown annotation method'):
        PromptSegmenter('magic')


def test_wrong_model_kind_is_refused(tmp_path):
    torch = pytest.importorskip('torch')
    from vos_ros.core import model_io

    path = tmp_path / 'emb.pt'
    model_io.save_model(torch.jit.script(torch.nn.Conv2d(3, 4, 1)), path, {
        'kind': 'embedding', 'mean': [0, 0, 0], 'std': [1, 1, 1], 'stride': 1,
        'embedding_dim': 4})
    with pytest.raises(ModelError, match="'embedding' model"):
        interactive.BoxModel(path)


def test_grabcut_clicks_refine_a_previous_mask():
    image, truth = scene()
    segmenter = PromptSegmenter('grabcut')
    half = truth.copy()
    half[:, 70:] = False
    refined = segmenter.clicks(image, [(85, 60, 1)], previous=half)
    assert (refined & truth).sum() > 1.3 * half.sum()
