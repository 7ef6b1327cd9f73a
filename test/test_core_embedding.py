"""Tests of the embedding backend (PML nearest-neighbour segmentation) through Session."""

import numpy as np
import pytest

torch = pytest.importorskip('torch')

from vos_ros.core import model_io  # noqa: E402
from vos_ros.core.backends import available_backends  # noqa: E402
from vos_ros.core.backends import create_backend  # noqa: E402
from vos_ros.core.errors import ModelError  # noqa: E402
from vos_ros.core.models import build_model  # noqa: E402
from vos_ros.core.session import Session  # noqa: E402
from conftest import occluded_crossing_ious  # noqa: E402
from vos_ros.core.synthetic import make_clip  # noqa: E402

META = {'kind': 'embedding', 'mean': [0.0, 0.0, 0.0], 'std': [255.0, 255.0, 255.0],
        'stride': 2, 'embedding_dim': 3, 'input_multiple': 2, 'resolution': 0}


class ColourEmbedder(torch.nn.Module):
    """An 'oracle' embedding: the pixel colour itself, at stride 2."""

    def forward(self, x):
        return torch.nn.functional.avg_pool2d(x, 2)


@pytest.fixture
def colour_model(tmp_path):
    path = tmp_path / 'colour.pt'
    traced = torch.jit.trace(ColourEmbedder(), torch.zeros(1, 3, 16, 16))
    model_io.save_model(traced, path, META)
    return str(path)


@pytest.fixture
def tiny_net(tmp_path):
    """An untrained network of the family vos_train trains, exported with metadata."""
    torch.manual_seed(0)
    net = build_model('embednet', embedding_dim=8, width=0.5).eval()
    traced = torch.jit.trace(net, torch.zeros(1, 3, 32, 32))
    path = tmp_path / 'tiny.pt'
    model_io.save_model(traced, path, dict(
        META, mean=[120.0] * 3, std=[60.0] * 3, stride=net.stride,
        input_multiple=net.input_multiple, embedding_dim=8, normalized=True))
    return str(path)


def _square_frames(shift):
    """Blue background, red square moving right by ``shift`` pixels per frame."""
    frames, masks = [], []
    for t in range(4):
        image = np.zeros((48, 64, 3), np.uint8)
        image[:, :] = (20, 40, 200)
        mask = np.zeros((48, 64), np.uint8)
        x0 = 10 + shift * t
        image[16:32, x0:x0 + 16] = (220, 30, 30)
        mask[16:32, x0:x0 + 16] = 3
        frames.append(image)
        masks.append(mask)
    return frames, masks


def test_registered():
    assert 'embedding' in available_backends()


@pytest.mark.parametrize('options', [{'prior': 'none'}, {'prior': 'flow'},
                                     {'prior': 'flow', 'prior_full_size': True},
                                     {'prior': 'flow', 'fusion': 'mean', 'resolution': 24}])
def test_nearest_neighbour_follows_colour(colour_model, options):
    frames, masks = _square_frames(shift=8)
    session = Session('embedding', model_path=colour_model, device='cpu', **options)
    results = [r for _, r in session.propagate(frames, masks[0])]
    for result, truth in zip(results[1:], masks[1:]):
        assert result.labels.shape == truth.shape
        assert result.object_ids == [3]
        inter = np.logical_and(result.labels == 3, truth == 3).sum()
        union = np.logical_or(result.labels == 3, truth == 3).sum()
        assert inter / union > 0.8


def test_untrained_net_end_to_end(tiny_net):
    clip = make_clip(num_frames=5, width=80, height=64, num_objects=2, seed=1)
    session = Session('embedding', model_path=tiny_net, device='cpu', prior='none')
    for index, result in session.propagate(clip.frames, clip.first_mask):
        assert result.labels.shape == clip.first_mask.shape
        assert result.labels.dtype == np.uint8
        assert result.object_ids == clip.object_ids
        assert set(np.unique(result.labels)) <= {0, *clip.object_ids}
        assert result.probs.shape == (3, 64, 80)
        assert np.allclose(result.probs.sum(axis=0), 1.0, atol=1e-3)
    assert session.backend.describe()['backend'] == 'embedding'


def test_object_added_mid_stream(colour_model):
    frames, masks = _square_frames(shift=4)
    second = np.zeros_like(masks[0])
    second[2:8, 50:60] = 7
    frames[2][2:8, 50:60] = (30, 220, 30)
    frames[3][2:8, 50:60] = (30, 220, 30)
    session = Session('embedding', model_path=colour_model, device='cpu', prior='flow')
    session.step(frames[0], masks[0])
    session.step(frames[1])
    session.step(frames[2], second)
    result = session.step(frames[3])
    assert result.object_ids == [3, 7]
    assert result.probs.shape[0] == 3
    assert (result.labels[2:8, 50:60] == 7).mean() > 0.8
    assert (result.labels == 3).sum() > 100


def test_no_default_model(monkeypatch, tmp_path):
    monkeypatch.setattr(model_io, 'default_model_path', lambda: str(tmp_path / 'none.pt'))
    with pytest.raises(ModelError, match='vos_train'):
        create_backend('embedding')


@pytest.mark.parametrize('options', [{'prior': 'magic'}, {'fusion': 'max'},
                                     {'prior_weight': 2.0}, {'temperature': 0},
                                     {'max_refs': 0}, {'threads': -1},
                                     {'prior': 'none', 'preset': 'fast'}])
def test_bad_options(colour_model, options):
    with pytest.raises(ValueError):
        create_backend('embedding', model_path=colour_model, **options)


def test_propagate_before_memorize(colour_model):
    backend = create_backend('embedding', model_path=colour_model, prior='none')
    with pytest.raises(RuntimeError):
        backend.propagate(np.zeros((16, 16, 3), np.uint8))


@pytest.mark.skipif(not __import__('os').path.isfile(model_io.default_model_path()),
                    reason='no model shipped in vos_ros/data')
def test_shipped_embedding_model_runs():
    meta = model_io.read_metadata(model_io.default_model_path())
    assert meta['kind'] == 'embedding'
    backend = create_backend('embedding', device='cpu', prior='none')
    frames, masks = _square_frames(shift=4)
    session = Session(backend)
    result = [r for _, r in session.propagate(frames, masks[0])][-1]
    assert result.labels.shape == masks[0].shape and result.object_ids == [3]


@pytest.mark.skipif(not __import__('os').path.isfile(model_io.default_model_path()),
                    reason='no model shipped in vos_ros/data')
def test_embedding_pipeline_redetects_after_full_occlusion(occluded_crossing):
    frames, masks, hidden = occluded_crossing
    ious = occluded_crossing_ious(create_backend('embedding', device='cpu'), frames, masks)
    # Found again once it reappears, not stuck at the wall, and followed well before it.
    assert np.mean(ious[hidden[-1] + 3:]) > 0.8, ious
    assert np.mean(ious[:hidden[0]]) > 0.8, ious
