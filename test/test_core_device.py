"""Device selection: auto, cpu, cuda, cuda:N and their errors."""

import pytest

from vos_ros.core import device
from vos_ros.core.device import resolve_device
from vos_ros.core.device import validate_device_string
from vos_ros.core.errors import DeviceError


def _real_cuda_count():
    try:
        import torch
    except ImportError:
        return 0
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


@pytest.mark.skipif(_real_cuda_count() > 0, reason='this machine has CUDA')
def test_auto_is_cpu_without_cuda():
    assert resolve_device('auto') == 'cpu'
    assert resolve_device() == 'cpu'
    with pytest.raises(DeviceError, match='CUDA is not available'):
        resolve_device('cuda')


@pytest.mark.skipif(_real_cuda_count() == 0, reason='no CUDA here')
def test_auto_is_cuda_with_cuda():
    assert resolve_device('auto') == 'cuda:0'
    assert resolve_device('cuda') == 'cuda:0'


def test_cpu_always_works():
    assert resolve_device('cpu') == 'cpu'
    assert resolve_device(' CPU ') == 'cpu'


@pytest.mark.parametrize('spec', ['cuda', 'cuda:0', 'cuda:1'])
def test_cuda_absent_raises_device_error(monkeypatch, spec):
    monkeypatch.setattr(device, 'cuda_device_count', lambda: 0)
    with pytest.raises(DeviceError) as info:
        resolve_device(spec)
    assert spec in str(info.value)
    assert 'cpu' in str(info.value)
    assert resolve_device('auto') == 'cpu'


def test_cuda_present_picks_index(monkeypatch):
    monkeypatch.setattr(device, 'cuda_device_count', lambda: 2)
    assert resolve_device('auto') == 'cuda:0'
    assert resolve_device('cuda') == 'cuda:0'
    assert resolve_device('cuda:1') == 'cuda:1'
    with pytest.raises(DeviceError, match='only 2 CUDA device'):
        resolve_device('cuda:2')


@pytest.mark.parametrize('spec', ['gpu', 'cuda:x', '', 'cuda:', 'cpu:0', 'cuda:-1', None, 3])
def test_invalid_spec_raises_value_error(spec):
    with pytest.raises(ValueError, match='invalid device'):
        validate_device_string(spec)
    with pytest.raises(ValueError):
        resolve_device(spec)


@pytest.mark.parametrize('spec,expected', [('AUTO', 'auto'), ('cuda:12', 'cuda:12'),
                                           ('Cuda', 'cuda')])
def test_validate_normalises(spec, expected):
    assert validate_device_string(spec) == expected
