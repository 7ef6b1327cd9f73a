"""Test-wide settings: DDS stays on loopback in a random domain; ROS logs go to tmp."""

import os
import random
import tempfile

import cv2
import numpy as np
import pytest

# Set before anything imports rclpy: without it Fast DDS multicasts onto the real network.
os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
os.environ.setdefault('ROS_DOMAIN_ID', str(random.randint(1, 200)))
os.environ.setdefault('ROS_LOG_DIR', os.path.join(tempfile.gettempdir(), 'vos_ros_test_logs'))


@pytest.fixture(scope='session')
def colcon_workspace(tmp_path_factory):
    """``(ws, env)``: a clean copy of the repository built by colcon, once per session.

    Used by the packaging and the launch tests (test/colcon_support.py).
    """
    from colcon_support import build_workspace

    ws = tmp_path_factory.mktemp('colcon_ws')
    return ws, build_workspace(ws)


@pytest.fixture(scope='module')
def ros_context():
    """An rclpy context of the test module's own, shut down after its tests."""
    import rclpy

    context = rclpy.Context()
    rclpy.init(context=context)
    yield context
    rclpy.try_shutdown(context=context)


@pytest.fixture(scope='module')
def tiny_memory_model(tmp_path_factory):
    """A memory model file made from a randomly initialised network (no training)."""
    torch = pytest.importorskip('torch')
    pytest.importorskip('deep_sort_realtime', reason='MobileNetV2 architecture')
    from vos_ros.core.models.memory_net import MemoryNet
    from vos_ros.tools import export
    from vos_ros.tools import train

    torch.manual_seed(0)
    net = MemoryNet(key_dim=16, value_dim=32, top_k=8, pretrained=False)
    meta = {'kind': 'memory', 'mean': list(train.MEAN), 'std': list(train.STD), 'stride': 16,
            'input_multiple': 16, 'key_dim': 16, 'value_dim': 32, 'top_k': 8}
    checkpoint = {'arch': 'memnet_mbv2', 'model_kwargs': {'key_dim': 16, 'value_dim': 32,
                                                          'top_k': 8},
                  'state_dict': net.state_dict(), 'iteration': 3, 'meta': dict(meta)}
    folder = tmp_path_factory.mktemp('memory_model')
    ckpt = str(folder / 'ckpt.pt')
    torch.save(checkpoint, ckpt)
    path = str(folder / 'memory.pt')
    assert export.main([ckpt, '--out', path, '--resolution', '64']) == 0
    return path


@pytest.fixture
def occluded_crossing():
    """``(frames, masks, hidden)``: a magenta textured disc crosses a muted 320x240 scene and
    disappears fully behind a striped wall for the frames listed in ``hidden``; masks hold
    only its visible part."""
    width, height = 320, 240
    rng = np.random.default_rng(0)
    small = rng.integers(0, 255, (height // 8, width // 8, 3)).astype(np.float32)
    scene = cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC) * 0.5
    scene = np.clip(scene + (40, 90, 60), 0, 255)
    texture = cv2.resize(rng.integers(0, 255, (8, 8, 3)).astype(np.float32), (width, height),
                         interpolation=cv2.INTER_CUBIC)
    texture = np.clip(texture * 0.3 + (180, 60, 140), 0, 255)
    wall = np.zeros((height, width), bool)
    wall[:, 110:210] = True
    stripes = np.where((np.arange(width) % 20 < 10)[None, :, None], 160.0, 120.0)
    frames, masks = [], []
    for x in np.linspace(40, 280, 30):
        disc = np.zeros((height, width), np.uint8)
        cv2.circle(disc, (int(x), height // 2), 28, 1, -1)
        # the texture moves with the disc
        moved = np.roll(texture, int(x), axis=1)
        image = np.where(disc[..., None] > 0, moved, scene)
        image = np.where(wall[..., None], stripes, image)
        image = np.clip(image + rng.normal(0, 3, image.shape), 0, 255).astype(np.uint8)
        frames.append(image)
        masks.append(np.where(wall, 0, disc).astype(np.uint8))
    hidden = [index for index, mask in enumerate(masks) if not mask.any()]
    # the clip does hide the object, then shows it again for a while
    assert hidden and hidden[-1] < len(masks) - 8
    return frames, masks, hidden


def occluded_crossing_ious(backend, frames, masks):
    """Per-frame IoU of object 1 when ``backend`` runs the clip from its first mask."""
    from vos_ros.core.session import Session

    session = Session(backend)
    ious = []
    for index, (image, mask) in enumerate(zip(frames, masks)):
        labels = session.step(image, mask if index == 0 else None).labels
        union = np.logical_or(labels == 1, mask > 0).sum()
        ious.append(np.logical_and(labels == 1, mask > 0).sum() / union if union else 1.0)
    return ious
