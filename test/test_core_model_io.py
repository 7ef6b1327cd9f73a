"""Tests of vos_ros.core.model_io: TorchScript + vos.json save/load and rejection cases."""

import json
import zipfile

import pytest

torch = pytest.importorskip('torch')

from vos_ros.core import model_io  # noqa: E402
from vos_ros.core.errors import DeviceError  # noqa: E402
from vos_ros.core.errors import ModelError  # noqa: E402


class TinyEmbedder(torch.nn.Module):
    """[1,3,H,W] -> [1,D,H/stride,W/stride]."""

    def __init__(self, dim=5, stride=2):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, dim, 3, stride=stride, padding=1)

    def forward(self, x):
        return self.conv(x)


def _traced(dim=5, stride=2):
    torch.manual_seed(0)
    return torch.jit.trace(TinyEmbedder(dim, stride).eval(), torch.zeros(1, 3, 32, 32))


def _meta(**changes):
    meta = {'kind': 'embedding', 'mean': [1.0, 2.0, 3.0], 'std': [4.0, 5.0, 6.0],
            'stride': 2, 'embedding_dim': 5, 'training_data': 'none', 'version': 't1'}
    meta.update(changes)
    return meta


def test_roundtrip_keeps_metadata_and_runs(tmp_path):
    path = tmp_path / 'm.pt'
    module = _traced()
    model_io.save_model(module, path, _meta())
    meta = model_io.read_metadata(path)
    for key, value in _meta().items():
        assert meta[key] == value
    assert meta['format_version'] == model_io.FORMAT_VERSION
    loaded = model_io.load_model(path, device='cpu')
    assert loaded.kind == 'embedding'
    assert loaded.dtype == torch.float32
    image = torch.randint(0, 255, (1, 24, 40, 3), dtype=torch.uint8).numpy()
    tensor = loaded.normalize(image)
    assert tensor.shape == (1, 3, 24, 40)
    expected = (torch.from_numpy(image).permute(0, 3, 1, 2).float()
                - torch.tensor([1.0, 2.0, 3.0]).view(1, 3, 1, 1)) / torch.tensor(
                    [4.0, 5.0, 6.0]).view(1, 3, 1, 1)
    assert torch.allclose(tensor, expected)
    out = loaded(tensor)
    assert out.shape == (1, 5, 12, 20)
    assert torch.allclose(out, module(tensor))


def test_missing_file(tmp_path):
    with pytest.raises(ModelError, match='not found'):
        model_io.load_model(tmp_path / 'nope.pt', device='cpu')


def test_traced_without_metadata_says_what_to_do(tmp_path):
    path = tmp_path / 'raw.pt'
    torch.jit.save(_traced(), str(path))
    with pytest.raises(ModelError, match='vos_export --from-traced'):
        model_io.load_model(path, device='cpu')


def test_unknown_kind_rejected(tmp_path):
    path = tmp_path / 'odd.pt'
    torch.jit.save(_traced(), str(path), _extra_files={
        model_io.META_FILE: json.dumps(dict(_meta(kind='detector'), format_version=1))})
    with pytest.raises(ModelError, match="unknown model kind 'detector'"):
        model_io.load_model(path, device='cpu')
    with pytest.raises(ModelError):
        model_io.save_model(_traced(), tmp_path / 'odd2.pt', _meta(kind='detector'))


def test_checkpoint_is_not_a_model(tmp_path):
    path = tmp_path / 'ckpt.pt'
    torch.save({'state_dict': TinyEmbedder().state_dict()}, path)
    with pytest.raises(ModelError, match='vos_export'):
        model_io.load_model(path, device='cpu')


def test_garbage_and_bad_json(tmp_path):
    path = tmp_path / 'garbage.pt'
    path.write_bytes(b'not a model at all')
    with pytest.raises(ModelError, match='not a TorchScript'):
        model_io.load_model(path, device='cpu')
    bad = tmp_path / 'badjson.pt'
    torch.jit.save(_traced(), str(bad), _extra_files={model_io.META_FILE: '{oops'})
    with pytest.raises(ModelError, match='not valid JSON'):
        model_io.read_metadata(bad)
    assert zipfile.is_zipfile(bad)


@pytest.mark.parametrize('changes, message', [
    ({'stride': 0}, 'stride'),
    ({'std': [1.0, 0.0, 1.0]}, 'std'),
    ({'mean': [1.0, 2.0]}, 'mean'),
    ({'embedding_dim': 'x'}, 'embedding_dim'),
    ({'format_version': 99}, 'newer'),
])
def test_invalid_metadata(changes, message):
    meta = dict(_meta(), format_version=1)
    meta.update(changes)
    with pytest.raises(ModelError, match=message):
        model_io.validate_metadata(meta)


def test_missing_keys_named():
    with pytest.raises(ModelError, match='stride'):
        model_io.validate_metadata({'kind': 'embedding', 'format_version': 1, 'mean': [0] * 3,
                                    'std': [1] * 3, 'embedding_dim': 4})


def test_probe_measures_dim_and_stride():
    assert model_io.probe_embedding(_traced(dim=7, stride=4), (64, 96)) == (7, 4)

    class Flat(torch.nn.Module):
        def forward(self, x):
            return x.mean(dim=(2, 3))

    with pytest.raises(ModelError, match=r'\[1,D,h,w\]'):
        model_io.probe_embedding(torch.jit.script(Flat()))


def test_half_on_cpu_falls_back_to_fp32(tmp_path):
    path = tmp_path / 'm.pt'
    model_io.save_model(_traced(), path, _meta())
    assert model_io.load_model(path, device='cpu', half=True).dtype == torch.float32


@pytest.mark.skipif(torch.cuda.is_available(), reason='needs a machine without CUDA')
def test_cuda_request_without_gpu(tmp_path):
    path = tmp_path / 'm.pt'
    model_io.save_model(_traced(), path, _meta())
    with pytest.raises(DeviceError):
        model_io.load_model(path, device='cuda')


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
def test_fp16_on_cuda(tmp_path):
    path = tmp_path / 'm.pt'
    model_io.save_model(_traced(), path, _meta())
    loaded = model_io.load_model(path, device='cuda')
    assert loaded.dtype == torch.float16
    out = loaded(loaded.normalize(torch.zeros(1, 16, 16, 3, dtype=torch.uint8).numpy()))
    assert out.dtype == torch.float16 and out.shape == (1, 5, 8, 8)


def test_default_pipeline_uses_the_shipped_model():
    """The default backend loads the packaged model: it must be installed, valid and small."""
    import os

    from vos_ros.core.backends import ADAPTIVE_KINDS
    from vos_ros.core.backends import create_backend
    from vos_ros.core.backends import DEFAULT_BACKEND
    from vos_ros.core.backends import default_backend_name

    backend = create_backend(None, device='cpu')
    assert backend.name == DEFAULT_BACKEND == 'adaptive'
    kind = backend.full.name  # the default pipeline's full model
    assert kind in ADAPTIVE_KINDS and kind in model_io.KNOWN_KINDS
    path = model_io.default_model_path(kind)
    assert os.path.isfile(path), f'{path} is missing (setup.py package_data)'
    assert os.path.getsize(path) <= 30e6
    meta = model_io.read_metadata(path)
    assert meta['kind'] == kind and meta['input_multiple'] >= meta['stride']
    assert os.path.samefile(backend.describe()['model'], path)
    # its model file alone chooses the same pipeline; the embedding model runs alone
    assert default_backend_name(path) == DEFAULT_BACKEND
    assert default_backend_name(model_io.default_model_path('embedding')) == 'embedding'
    # the previous default still ships and loads by name
    assert os.path.isfile(model_io.default_model_path('embedding'))
