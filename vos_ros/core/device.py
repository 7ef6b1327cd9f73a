"""Compute device selection: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``."""

import re

from vos_ros.core.errors import DeviceError

DEVICE_CHOICES = ('auto', 'cpu', 'cuda', 'cuda:N')
_DEVICE_PATTERN = re.compile(r'^(auto|cpu|cuda(:\d+)?)$')


def validate_device_string(spec):
    """Return ``spec`` normalised, or raise ValueError if it is not a device spec."""
    text = str(spec).strip().lower()
    if not _DEVICE_PATTERN.match(text):
        raise ValueError(
            f'invalid device {spec!r}: use one of auto, cpu, cuda, cuda:N (N = GPU index)')
    return text


def cuda_device_count():
    """Return the number of usable CUDA devices (0 when torch is absent or CPU-only)."""
    try:
        import torch
    except ImportError:
        return 0
    try:
        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:  # a broken driver must read as "no CUDA", not crash start-up
        return 0


def resolve_device(spec='auto'):
    """Turn a device spec into a concrete ``'cpu'`` or ``'cuda:N'`` string.

    ``auto`` picks ``cuda:0`` when a GPU is usable, else ``cpu``. Asking for CUDA where there
    is none raises DeviceError with a message that says what to do instead.
    """
    text = validate_device_string(spec)
    if text == 'cpu':
        return 'cpu'
    count = cuda_device_count()
    if text == 'auto':
        return 'cuda:0' if count > 0 else 'cpu'
    index = int(text.split(':')[1]) if ':' in text else 0
    if count == 0:
        raise DeviceError(
            f'device {spec!r} requested but CUDA is not available here '
            '(no GPU, or torch is a CPU build); use device auto or cpu')
    if index >= count:
        raise DeviceError(
            f'device {spec!r} requested but only {count} CUDA device(s) exist '
            f'(cuda:0..cuda:{count - 1})')
    return f'cuda:{index}'
