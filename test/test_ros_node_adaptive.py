"""vos_node's target_confidence (issue 15): parameter, run-time changes, effort, diagnostics."""

import time

import cv2
from diagnostic_msgs.msg import DiagnosticArray
from diagnostic_msgs.msg import DiagnosticStatus
import pytest
from rcl_interfaces.srv import SetParameters
import rclpy.parameter

from vos_ros.core.labels import write_labels
from vos_ros.core.synthetic import make_clip
from vos_ros.ros.client import SegmentationClient
from vos_ros.ros.client import stamp_key
from vos_ros.ros.client import start_node
from vos_ros.ros.client import stop_node

pytest.importorskip('torch')

WIDTH, HEIGHT = 160, 120
TIMEOUT = 15.0


@pytest.fixture(scope='module')
def clip():
    return make_clip(num_frames=16, width=WIDTH, height=HEIGHT, num_objects=1, seed=5)


class _Node:
    """A vos_node process with a client, a /diagnostics recorder and a parameter client."""

    def __init__(self, clip, context, folder, name, parameters):
        annotation = folder / f'{name}.png'
        write_labels(annotation, clip.first_mask)
        self.log = folder / f'{name}.log'
        self.process = start_node(dict({'annotation_path': str(annotation), 'device': 'cpu',
                                        'diagnostics_period': 0.3}, **parameters),
                                  remappings={'image': f'/{name}/image',
                                              'segmentation': f'/{name}/labels'},
                                  node_name=name, log_path=str(self.log))
        self.client = SegmentationClient(image_topic=f'/{name}/image',
                                         segmentation_topic=f'/{name}/labels',
                                         vos_node_name=name, context=context,
                                         name=f'{name}_client')
        self.name = name
        self.diagnostics = []
        self.client.node.create_subscription(DiagnosticArray, '/diagnostics',
                                             self.diagnostics.append, 50)
        self.parameters = self.client.node.create_client(SetParameters,
                                                         f'/{name}/set_parameters')
        self.stamp = 100.0
        assert self.client.wait_for_node(60.0, self.process), self.log.read_text()

    def send(self, frame, wait=True):
        self.stamp += 0.1
        msg = self.client.publish(frame, round(self.stamp, 3))
        key = stamp_key(msg.header.stamp)
        return self.client.wait_for_answer(key, TIMEOUT) if wait else key

    def set_target(self, value):
        assert self.parameters.wait_for_service(timeout_sec=TIMEOUT)
        # rclpy's Parameter types the message from the Python value (int, float, str)
        parameter = rclpy.parameter.Parameter('target_confidence', value=value).to_parameter_msg()
        future = self.parameters.call_async(SetParameters.Request(parameters=[parameter]))
        deadline = time.monotonic() + TIMEOUT
        while not future.done() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert future.done()
        return future.result().results[0]

    def values(self, since=0):
        """Key-value dicts of this node's /diagnostics statuses received after ``since``."""
        ours = [status for array in self.diagnostics[since:] for status in array.status
                if status.name == f'{self.name}: segmentation']
        return [dict({kv.key: kv.value for kv in s.values}, message=s.message, level=s.level)
                for s in ours]

    def wait_diagnostics(self, since, predicate, timeout=TIMEOUT):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(predicate(v) for v in self.values(since)):
                return True
            time.sleep(0.05)
        return False

    def close(self):
        self.client.close()
        return stop_node(self.process)


def test_target_at_start_and_at_run_time(clip, ros_context, tmp_path):
    node = _Node(clip, ros_context, tmp_path, 'vos_adaptive', {'target_confidence': 0})
    try:
        for frame in clip.frames[:10]:  # lock-step: never behind
            assert node.send(frame) is not None, node.log.read_text()
        assert node.wait_diagnostics(0, lambda v: float(v['path_cheap_share']) > 0.5), \
            node.values()
        last = node.values()[-1]
        assert last['target_confidence'] == '0' and last['effective_target'] == '0'
        assert last['backend'].startswith('adaptive')
        # out of range: refused by the descriptor, nothing changes; so is a word
        assert not node.set_target(150).successful
        assert not node.set_target(150.5).successful
        refused = node.set_target('high')
        assert not refused.successful and 'must be a number' in refused.reason
        # a decimal is taken as vos_eval takes it
        assert node.set_target(62.5).successful
        assert 'target_confidence 62.5 from the next frame' in node.log.read_text()
        # 100 from the next frame on: the full model on every frame
        assert node.set_target(100).successful
        since = len(node.diagnostics)
        for frame in clip.frames[10:]:
            assert node.send(frame) is not None
        assert node.wait_diagnostics(
            since, lambda v: v['target_confidence'] == '100' and v['effective_target'] == '100'
            and float(v['path_full_share']) > 0.3), \
            [(v['message'], v['target_confidence'], v['effective_target'], v['path_full_share'],
              v['frames_published']) for v in node.values(since)]
        assert 'target_confidence 100 from the next frame' in node.log.read_text()
    finally:
        assert node.close() == 0, node.log.read_text()


def test_behind_the_camera_lowers_the_target_and_says_so(clip, ros_context, tmp_path):
    # Large frames at input size and no waiting for answers: the node cannot keep up.
    node = _Node(clip, ros_context, tmp_path, 'vos_behind',
                 {'target_confidence': 100, 'resolution': 0, 'backend': 'embedding'})
    try:
        big = [cv2.resize(f, (WIDTH * 5, HEIGHT * 5)) for f in clip.frames]
        assert node.send(big[0]) is not None
        for index in range(150):
            node.send(big[index % len(big)], wait=False)
            time.sleep(0.002)
        assert node.wait_diagnostics(
            0, lambda v: float(v['effective_target']) < 100.0), node.values()
        lowered = [v for v in node.values() if float(v['effective_target']) < 100.0]
        assert 'target_confidence lowered' in lowered[0]['message']
        assert all(v['target_confidence'] == '100' for v in lowered)
        assert 'falling behind the camera' in node.log.read_text()
        # The camera stops: behind nothing, the node restores the requested target and says
        # that no image comes (OK), not "behind the camera" for as long as it stays silent.
        since = len(node.diagnostics)
        assert node.wait_diagnostics(since, lambda v: v['message'].startswith(
            'no image for ') and v['effective_target'] == '100'), node.values(since)
        time.sleep(1.0)
        later = node.values(since)
        stopped = next(i for i, v in enumerate(later) if v['message'].startswith('no image'))
        assert all(v['message'].startswith('no image for ') and v['effective_target'] == '100'
                   and v['level'] == DiagnosticStatus.OK for v in later[stopped:]), later
        assert 'target_confidence back to 100' in node.log.read_text()
    finally:
        assert node.close() == 0, node.log.read_text()


def test_flow_refuses_a_target_at_run_time(clip, ros_context, tmp_path):
    node = _Node(clip, ros_context, tmp_path, 'vos_flowonly', {'backend': 'flow'})
    try:
        assert node.send(clip.frames[0]) is not None
        result = node.set_target(50)
        assert not result.successful and 'flow' in result.reason
        assert node.wait_diagnostics(0, lambda v: True), node.log.read_text()
        assert all('target_confidence' not in v for v in node.values())
    finally:
        assert node.close() == 0, node.log.read_text()


def test_a_bad_parameter_says_what_it_takes():
    from rclpy.exceptions import InvalidParameterTypeException
    from rclpy.exceptions import InvalidParameterValueException
    from rclpy.parameter import Parameter as RclpyParameter

    from vos_ros.ros.node import _parameter_hint

    typed = InvalidParameterTypeException(
        RclpyParameter('target_confidence', RclpyParameter.Type.DOUBLE, 85.0),
        'INTEGER')
    assert _parameter_hint(typed) == ('; target_confidence takes a number in -1..100 '
                                      '(default -1)')
    ranged = InvalidParameterValueException('diagnostics_period', 0.0, 'out of range')
    assert 'diagnostics_period takes a number in 0.1..60' in _parameter_hint(ranged)
    assert _parameter_hint(ValueError('no such file: x.png')) == ''


def test_a_refused_parameter_is_one_plain_line():
    from rclpy.exceptions import InvalidParameterTypeException
    from rclpy.exceptions import InvalidParameterValueException
    from rclpy.parameter import Parameter as RclpyParameter

    from vos_ros.ros.node import _parameter_message

    # rclpy's own wording, as a descriptor's range refuses a value at start-up
    ranged = InvalidParameterValueException(
        'target_confidence', 150, 'Parameter target_confidence out of range. Min: -1, Max: '
        '100, value: 150')
    assert _parameter_message(ranged) == ('parameter target_confidence: 150 is out of range; '
                                          'target_confidence takes a number in -1..100 '
                                          '(default -1)')
    typed = InvalidParameterTypeException(
        RclpyParameter('resolution', RclpyParameter.Type.STRING, 'abc'), 'INTEGER')
    assert _parameter_message(typed) == ("parameter resolution: 'abc' is of type string; "
                                         'resolution takes an integer in -1..8192 (default -1)')
    assert _parameter_message(ValueError('no such file: x.png')) == 'no such file: x.png'
