"""``annotate`` with the box model: --method/--model and the GrabCut fallback.

A tiny randomly initialised model checks the plumbing (file in, palette PNG of the frame's size
out, the model actually called); quality is bench/annotate_quality.py's business. The window's
click tool is tested in test_tools_annotate_window.py (it needs Xvfb).
"""

import zipfile

import cv2
import numpy as np
from PIL import Image
import pytest

from vos_ros.core import interactive
from vos_ros.core import model_io
from vos_ros.core.labels import read_labels
from vos_ros.tools import annotate


def frame(height=96, width=128):
    rng = np.random.default_rng(0)
    image = np.clip(rng.normal(120, 6, (height, width, 3)), 0, 255).astype(np.uint8)
    disc = np.zeros((height, width), np.uint8)
    cv2.circle(disc, (40, 45), 18, 1, -1)
    image[disc > 0] = (210, 40, 40)
    return image, disc > 0


def write_rgb(path, image):
    assert cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    return str(path)


@pytest.fixture(scope='module')
def tiny_model(tmp_path_factory):
    torch = pytest.importorskip('torch')
    from vos_ros.core import model_io
    from vos_ros.core.models.box_net import BoxNet

    torch.manual_seed(1)
    path = tmp_path_factory.mktemp('model') / 'box.pt'
    model_io.save_model(torch.jit.script(BoxNet(width=16, pretrained=False).eval()), path, {
        'kind': 'box', 'mean': [123.7, 116.3, 103.5], 'std': [58.4, 57.1, 57.4], 'stride': 2,
        'input_multiple': 16, 'crop_size': 64})
    return str(path)


@pytest.fixture
def spy(monkeypatch):
    """Record every BoxModel.predict call (and pass it on)."""
    calls = []
    original = interactive.BoxModel.predict

    def predict(self, image, box=None, positive=(), negative=(), previous=None, *args,
                **kwargs):
        calls.append((box, list(positive), list(negative), previous is not None))
        return original(self, image, box, positive, negative, previous, *args, **kwargs)

    monkeypatch.setattr(interactive.BoxModel, 'predict', predict)
    return calls


def test_box_and_clicks_go_to_the_model(tmp_path, tiny_model, spy, capsys):
    image, disc = frame()
    path = write_rgb(tmp_path / 'f.png', image)
    out = tmp_path / 'mask.png'
    assert annotate.main(['--image', path, '--box', '22,27,58,63', '--points', '40,45,1',
                          '90,20,0', '--model', tiny_model, '--method', 'model',
                          '--out', str(out)]) == 0
    with Image.open(out) as saved:
        assert saved.mode == 'P' and saved.size == (128, 96)
    # the box first, then one call per click with the last mask as the previous mask
    assert [c[1:] for c in spy] == [([], [], False), ([(40, 45)], [], True),
                                    ([(40, 45)], [(90, 20)], True)]
    assert all(c[0] == (22, 27, 58, 63) for c in spy)
    assert 'GrabCut' not in capsys.readouterr().err


def test_grabcut_method_never_loads_the_model(tmp_path, spy, capsys):
    image, disc = frame()
    out = tmp_path / 'mask.png'
    assert annotate.main(['--image', write_rgb(tmp_path / 'f.png', image), '--box',
                          '22,27,58,63', '--method', 'grabcut', '--model', 'missing.pt',
                          '--out', str(out)]) == 0
    assert spy == []
    # the model named is not used, and the user is told so
    assert 'annotate: note: --model missing.pt is not used with --method grabcut' in \
        capsys.readouterr().err
    labels = read_labels(out)
    assert ((labels == 1) & disc).sum() / ((labels == 1) | disc).sum() > 0.85


def test_missing_shipped_model_falls_back_to_grabcut_saying_so_once(tmp_path, capsys,
                                                                    monkeypatch):
    # the shipped model unavailable (as with torch missing): auto takes GrabCut
    monkeypatch.setattr(model_io, 'default_model_path', lambda kind: str(tmp_path / 'none.pt'))
    image, disc = frame()
    interactive._SAID.clear()
    out = tmp_path / 'mask.png'
    assert annotate.main(['--image', write_rgb(tmp_path / 'f.png', image), '--box',
                          '22,27,58,63', '--box', '80,10,120,40', '--method', 'auto',
                          '--out', str(out)]) == 0
    err = capsys.readouterr().err
    assert err.count('using GrabCut') == 1 and 'none.pt' in err
    labels = read_labels(out)
    assert ((labels == 1) & disc).sum() / ((labels == 1) | disc).sum() > 0.85


def test_method_model_without_a_model_is_an_error(tmp_path, capsys):
    image, _ = frame()
    assert annotate.main(['--image', write_rgb(tmp_path / 'f.png', image), '--box',
                          '22,27,58,63', '--method', 'model', '--model',
                          str(tmp_path / 'none.pt'), '--out', str(tmp_path / 'm.png')]) == 1
    assert 'box model cannot be used' in capsys.readouterr().err


def _unusable_model(folder, kind):
    """A --model file annotate cannot use, and a word of the error it must give."""
    if kind == 'memory':
        return model_io.default_model_path('memory'), "is a 'memory' model; expected box"
    path = folder / f'{kind}.pt'
    if kind == 'checkpoint':  # torch.save's zip layout: no code, no metadata
        with zipfile.ZipFile(path, 'w') as archive:
            archive.writestr('ckpt/data.pkl', b'')
        return str(path), 'a training checkpoint?'
    if kind == 'broken':  # box metadata, but no network either runtime can load
        with zipfile.ZipFile(path, 'w') as archive:
            archive.writestr('broken/extra/vos.json', '{"kind": "box", "format_version": 1, '
                             '"mean": [0, 0, 0], "std": [1, 1, 1], "stride": 2, '
                             '"crop_size": 64}')
        return str(path), 'box model cannot be used'
    return str(path), 'model file not found'


@pytest.mark.parametrize('kind', ['memory', 'missing', 'checkpoint', 'broken'])
def test_a_named_model_that_cannot_be_used_is_an_error(tmp_path, capsys, kind):
    # --method auto (the default) falls back to GrabCut for the shipped model only: a model
    # the user names must load, and nothing is written when it does not
    model, words = _unusable_model(tmp_path, kind)
    image, _ = frame()
    out = tmp_path / 'mask.png'
    assert annotate.main(['--image', write_rgb(tmp_path / 'f.png', image), '--box',
                          '22,27,58,63', '--model', model, '--out', str(out)]) == 1
    printed = capsys.readouterr()
    assert printed.err.startswith('annotate: error: ') and printed.err.count('\n') == 1
    assert 'box model cannot be used: ' in printed.err and words in printed.err, printed.err
    assert printed.out == '' and not out.exists()


def test_a_named_model_of_another_kind_stops_before_the_window(tmp_path, capsys, monkeypatch):
    from vos_ros.tools import annotate_window

    monkeypatch.setattr(annotate_window, 'run_window',
                        lambda source, args: pytest.fail('window opened'))
    image, _ = frame()
    assert annotate.main(['--image', write_rgb(tmp_path / 'f.png', image), '--model',
                          model_io.default_model_path('memory')]) == 1
    assert 'box model cannot be used: ' in capsys.readouterr().err
