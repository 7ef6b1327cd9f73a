"""vos_node on defaults with the cameras people have: best-effort publishers (issue 17).

A real node process over real DDS on loopback (domain set by conftest); the flow backend keeps
it fast. The camera side starts publishing as soon as the node is up, without waiting for
its subscription to match, as a camera driver does.
"""

import time

import pytest
import rclpy

from vos_ros.core.labels import write_labels
from vos_ros.core.synthetic import make_clip
from vos_ros.ros.client import SegmentationClient
from vos_ros.ros.client import start_node
from vos_ros.ros.client import stop_node

FRAMES = 40
RATE_HZ = 10.0


@pytest.fixture(scope='module')
def clip():
    return make_clip(num_frames=FRAMES, width=160, height=120, num_objects=1, seed=5)


@pytest.fixture
def ros_context():
    context = rclpy.Context()
    rclpy.init(context=context)
    yield context
    rclpy.try_shutdown(context=context)


def _start(tmp_path, clip, **parameters):
    annotation = tmp_path / 'first.png'
    write_labels(annotation, clip.first_mask)
    log = tmp_path / 'node.log'
    process = start_node({'annotation_path': str(annotation), 'backend': 'flow',
                          'device': 'cpu', **parameters}, log_path=str(log))
    return process, log


def _wait_for_node(context, process, log, timeout=60.0):
    """Wait until the node publishes /segmentation (so a camera started now comes later)."""
    watcher = rclpy.create_node('vos_test_watcher', context=context)
    try:
        deadline = time.monotonic() + timeout
        while watcher.count_publishers('/segmentation') == 0:
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, f'node did not come up:\n{log.read_text()}'
            time.sleep(0.05)
    finally:
        watcher.destroy_node()


def _play(client, clip):
    """Publish the clip at RATE_HZ from now on; return the number of frames answered."""
    keys = []
    start = time.monotonic()
    for index, image in enumerate(clip.frames):
        delay = start + index / RATE_HZ - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        msg = client.publish(image, 100.0 + index / RATE_HZ)
        keys.append((int(msg.header.stamp.sec), int(msg.header.stamp.nanosec)))
    return client.wait_for_answers(keys, timeout=10.0, idle=3.0)


@pytest.mark.timeout(150)
@pytest.mark.parametrize('camera', ['best_effort', 'reliable'])
def test_default_node_answers_the_camera_whatever_its_reliability(
        tmp_path, clip, ros_context, camera):
    process, log = _start(tmp_path, clip)
    client = None
    try:
        _wait_for_node(ros_context, process, log)
        # The camera appears after the node and publishes at once, matched or not.
        client = SegmentationClient(context=ros_context, name='vos_test_camera',
                                    reliability=camera, depth=10)
        while client.subscription.get_publisher_count() == 0:
            time.sleep(0.01)
        answered = _play(client, clip)
    finally:
        if client is not None:
            client.close()
        stop_node(process)
    text = log.read_text()
    assert answered >= 0.8 * FRAMES, f'{answered}/{FRAMES} answered; node log:\n{text}'
    # The node says which reliability it chose, and why.
    assert 'reliable QoS (auto: no publisher yet' in text
    if camera == 'best_effort':
        assert 'best_effort QoS (auto, publishers changed: publishers offer best_effort)' in text
    else:
        assert 'best_effort QoS' not in text  # reliable publishers keep a reliable reader
    # rclpy's generic warning is not the only hint any more: it is not printed at all.
    assert 'incompatible QoS' not in text


@pytest.mark.timeout(120)
def test_explicit_reliability_is_kept(tmp_path, clip, ros_context):
    process, log = _start(tmp_path, clip, input_reliability='reliable')
    _wait_for_node(ros_context, process, log)
    client = SegmentationClient(context=ros_context, name='vos_test_camera_be',
                                reliability='best_effort')
    try:
        time.sleep(1.5)  # several QoS check periods
        assert client.publisher.get_subscription_count() == 0
    finally:
        client.close()
        stop_node(process)
    assert 'reliable QoS (parameter input_reliability)' in log.read_text()


def test_annotation_path_that_is_a_directory_says_so(tmp_path, clip):
    log = tmp_path / 'node.log'
    process = start_node({'annotation_path': str(tmp_path), 'backend': 'flow'},
                         log_path=str(log))
    assert process.wait(timeout=60) == 1
    lines = [line for line in log.read_text().splitlines() if line.strip()]
    assert len(lines) == 1 and 'is a directory' in lines[0], lines
    assert 'annotation_path' in lines[0]
