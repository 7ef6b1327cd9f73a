"""What vos_node says on /diagnostics (in-process, real rclpy; no frames through DDS): the status
name, path shares with backend flow, a too small image; and NodeDiagnostics finding its node."""

import time

from diagnostic_msgs.msg import DiagnosticArray
from diagnostic_msgs.msg import DiagnosticStatus
from diagnostic_msgs.msg import KeyValue
import numpy as np
import pytest
import rclpy
from sensor_msgs.msg import Image

from vos_ros.core.labels import write_labels
from vos_ros.ros.client import NodeDiagnostics
from vos_ros.ros.node import VosNode

WIDTH, HEIGHT = 64, 48


class _Recorder:
    """Stands in for the /diagnostics publisher."""

    def __init__(self):
        self.arrays = []

    def publish(self, array):
        self.arrays.append(array)


@pytest.fixture
def start(tmp_path):
    """``start(*ros_args)``: a flow VosNode in a context of its own, stopped after the test."""
    started = []
    labels = np.zeros((HEIGHT, WIDTH), np.uint8)
    labels[10:30, 20:40] = 1
    annotation = tmp_path / 'first.png'
    write_labels(annotation, labels)

    def make(*ros_args):
        context = rclpy.Context()
        rclpy.init(args=['vos_node', '--ros-args', '-p', 'backend:=flow', '-p',
                         f'annotation_path:={annotation}', *ros_args], context=context)
        node = VosNode(context=context)
        node._diag_pub = _Recorder()
        started.append((context, node))
        return node

    yield make
    for context, node in started:
        node.stop()
        node.destroy_node()
        rclpy.try_shutdown(context=context)


def _image(width=WIDTH, height=HEIGHT, value=9):
    return Image(height=height, width=width, encoding='rgb8', step=width * 3,
                 data=np.full((height, width, 3), value, np.uint8).tobytes())


def _wait(node, key, count, timeout=20.0):
    deadline = time.monotonic() + timeout
    while node.statistics()[key] < count and time.monotonic() < deadline:
        time.sleep(0.02)
    return node.statistics()


def _report(node):
    node._publish_diagnostics()
    status = node._diag_pub.arrays[-1].status[0]
    return status, {kv.key: kv.value for kv in status.values}


def test_the_status_name_is_the_fully_qualified_node_name(start):
    assert _report(start())[0].name == 'vos_node: segmentation'
    assert _report(start('-r', '__ns:=/robot1'))[0].name == 'robot1/vos_node: segmentation'
    assert _report(start('-r', '__ns:=/robot2', '-r', '__node:=cam_vos'))[0].name == \
        'robot2/cam_vos: segmentation'


def test_flow_results_are_the_cheap_path_and_a_1x1_image_a_bad_frame(start, capfd):
    node = start()
    for count, value in enumerate((9, 12), start=1):  # the annotated frame, then propagated
        node._on_image(_image(value=value))
        _wait(node, 'published', count)
    status, values = _report(node)
    # flow is the cheap path itself: none of its results is the full model's
    assert (values['path_given_share'], values['path_cheap_share'],
            values['path_full_share']) == ('0.500', '0.500', '0.000')
    # a 1x1 image is skipped as a bad frame (with the other malformed ones), not a failure
    node._on_image(_image(1, 1))
    stats = _wait(node, 'bad', 1)
    assert stats['bad'] == 1 and stats['errors'] == 0
    node._on_image(_image(value=15))
    assert _wait(node, 'published', 3)['published'] == 3  # the next frame is answered
    status, values = _report(node)
    assert values['frames_bad'] == '1' and values['frames_failed'] == '0'
    err = capfd.readouterr().err
    assert 'skipping frame: image is too small: 1x1' in err and 'frame failed' not in err


class _FakeNode:
    def create_subscription(self, *args):
        return None


def _status(name, effective):
    values = {'backend': 'adaptive', 'target_confidence': '100',
              'effective_target': f'{effective:g}'}
    return DiagnosticArray(status=[DiagnosticStatus(
        name=f'{name}: segmentation', level=DiagnosticStatus.OK,
        values=[KeyValue(key=k, value=v) for k, v in values.items()])])


@pytest.mark.parametrize('name, kept', [
    ('robot1/vos_node', [10]),  # namespaced: that node only
    ('/robot1/vos_node', [10]),  # as get_fully_qualified_name() gives it
    ('/vos_node', [30]),  # the root namespace's
    ('vos_node', [10, 20, 30]),  # a plain name: that node in any namespace...
    (None, [10, 20, 30, 40]),  # ...but not other_vos_node; None: any vos node's
])
def test_node_diagnostics_keeps_the_statuses_of_its_node(name, kept):
    diagnostics = NodeDiagnostics(_FakeNode(), name)
    for node_name, effective in (('robot1/vos_node', 10), ('robot2/vos_node', 20),
                                 ('vos_node', 30), ('other_vos_node', 40)):
        diagnostics._on_message(_status(node_name, effective))
    assert diagnostics.count == len(kept)
    assert diagnostics.lowest_target == min(kept)


def test_a_frame_of_another_aspect_ratio_is_a_bad_frame_until_reset(start, capfd):
    from std_srvs.srv import Trigger

    node = start()
    for count, value in enumerate((9, 12), start=1):
        node._on_image(_image(value=value))
        _wait(node, 'published', count)
    # another aspect ratio would squeeze the tracked object: skipped as bad, not failed
    node._on_image(_image(HEIGHT, HEIGHT))
    stats = _wait(node, 'bad', 1)
    assert stats['bad'] == 1 and stats['errors'] == 0 and stats['published'] == 2
    # the same aspect ratio at another size is still answered, at its own size
    node._on_image(_image(WIDTH // 2, HEIGHT // 2))
    assert _wait(node, 'published', 3)['published'] == 3
    err = capfd.readouterr().err
    assert 'another aspect ratio' in err and '~/reset' in err and 'frame failed' not in err
    # after ~/reset the new view starts a new stream: no longer bad, it waits for an
    # annotation of its own (the 64x48 file is of the old view: refused)
    node._on_reset(Trigger.Request(), Trigger.Response())
    waiting = node.statistics()['waiting']
    node._on_image(_image(HEIGHT, HEIGHT))
    stats = _wait(node, 'waiting', waiting + 1)
    assert stats['waiting'] == waiting + 1 and stats['bad'] == 1 and stats['errors'] == 0
    assert 'annotation' in capfd.readouterr().err
