"""vos_node's decimal parameters take integers: at start-up, from a file and at run time."""

import subprocess
import time

from diagnostic_msgs.msg import DiagnosticArray
import numpy as np
import pytest
from rcl_interfaces.msg import ParameterType
from rcl_interfaces.srv import GetParameters
from rcl_interfaces.srv import SetParameters
import rclpy.parameter
from sensor_msgs.msg import Image

from vos_ros.core.labels import overlay
from vos_ros.core.labels import write_labels
from vos_ros.core.synthetic import make_clip
from vos_ros.ros.client import node_command
from vos_ros.ros.client import SegmentationClient
from vos_ros.ros.client import stamp_key
from vos_ros.ros.client import start_node
from vos_ros.ros.client import stop_node
from vos_ros.ros.conversions import image_msg_to_array

WIDTH, HEIGHT = 160, 120
TIMEOUT = 15.0
NAME = 'vos_params'
#: A period the default (1 s) cannot be mistaken for, in whole seconds.
PERIOD = 3


@pytest.fixture(scope='module')
def clip():
    return make_clip(num_frames=8, width=WIDTH, height=HEIGHT, num_objects=2, seed=7)


def _call(client, request):
    assert client.wait_for_service(timeout_sec=TIMEOUT)
    future = client.call_async(request)
    deadline = time.monotonic() + TIMEOUT
    while not future.done() and time.monotonic() < deadline:
        time.sleep(0.01)  # the SegmentationClient's executor thread completes the future
    assert future.done()
    return future.result()


class _Node:
    """A vos_node process (flow backend) with a client, an overlay and a /diagnostics log."""

    def __init__(self, clip, context, folder, name, parameters, extra_args=None):
        annotation = folder / f'{name}.png'
        write_labels(annotation, clip.first_mask)
        self.log = folder / f'{name}.log'
        self.name = name
        # Own topics, so that other nodes of the same domain cannot answer for this one.
        self.process = start_node(
            dict({'annotation_path': str(annotation), 'backend': 'flow', 'device': 'cpu',
                  'resolution': 0}, **parameters),
            remappings={'image': f'/{name}/image', 'segmentation': f'/{name}/labels',
                        'segmentation/overlay': f'/{name}/overlay'},
            node_name=name, log_path=str(self.log), extra_args=extra_args)
        self.client = SegmentationClient(image_topic=f'/{name}/image',
                                         segmentation_topic=f'/{name}/labels',
                                         vos_node_name=name, context=context,
                                         name=f'{name}_client')
        node = self.client.node
        self.overlays = {}
        self.overlay_sub = node.create_subscription(
            Image, f'/{name}/overlay',
            lambda m: self.overlays.__setitem__(stamp_key(m.header.stamp), m), 10)
        self.diagnostics = []
        node.create_subscription(DiagnosticArray, '/diagnostics', self._on_diagnostics, 10)
        self.getter = node.create_client(GetParameters, f'/{name}/get_parameters')
        self.setter = node.create_client(SetParameters, f'/{name}/set_parameters')
        self.stamp = 100.0
        assert self.client.wait_for_node(60.0, self.process), self.log.read_text()

    def _on_diagnostics(self, array):
        for status in array.status:
            if status.name == f'{self.name}: segmentation':
                stamp = array.header.stamp
                self.diagnostics.append(stamp.sec + stamp.nanosec * 1e-9)

    def get(self, name):
        """The parameter's value as a Python number (an integer or a float)."""
        value = _call(self.getter, GetParameters.Request(names=[name])).values[0]
        assert value.type in (ParameterType.PARAMETER_INTEGER, ParameterType.PARAMETER_DOUBLE)
        if value.type == ParameterType.PARAMETER_INTEGER:
            return value.integer_value
        return value.double_value

    def set(self, name, value):
        """Set a parameter through the node's parameter service; the SetParametersResult."""
        # rclpy's Parameter types the message from the Python value (int, float, str)
        request = SetParameters.Request(
            parameters=[rclpy.parameter.Parameter(name, value=value).to_parameter_msg()])
        return _call(self.setter, request).results[0]

    def overlay_of(self, frame):
        """Send ``frame``; return ``(labels, overlay)`` the node answered with."""
        deadline = time.monotonic() + TIMEOUT
        while self.overlay_sub.get_publisher_count() == 0 and time.monotonic() < deadline:
            time.sleep(0.05)  # the node draws an overlay only while someone subscribes
        time.sleep(0.3)  # matching completes shortly after the graph shows both ends
        self.stamp += 0.1
        key = stamp_key(self.client.publish(frame, round(self.stamp, 3)).header.stamp)
        labels = self.client.wait_for_answer(key, TIMEOUT)
        assert labels is not None, self.log.read_text()
        while key not in self.overlays and time.monotonic() < deadline + TIMEOUT:
            time.sleep(0.02)
        assert key in self.overlays, self.log.read_text()
        return labels, image_msg_to_array(self.overlays[key])

    def close(self):
        self.client.close()
        return stop_node(self.process)


@pytest.fixture(scope='module')
def node(clip, ros_context, tmp_path_factory):
    """A node given both decimal parameters as integers on the command line."""
    started = _Node(clip, ros_context, tmp_path_factory.mktemp('params'), NAME,
                    {'overlay_alpha': 1, 'diagnostics_period': PERIOD})
    try:
        yield started
    finally:
        assert started.close() == 0, started.log.read_text()
    assert 'Traceback' not in started.log.read_text()


def test_integers_on_the_command_line_are_the_same_numbers(node, clip):
    assert node.get('overlay_alpha') == 1 and node.get('diagnostics_period') == PERIOD
    labels, drawn = node.overlay_of(clip.frames[0])
    assert (labels > 0).any()
    # alpha 1: the objects are drawn in their palette colours alone
    np.testing.assert_array_equal(drawn, overlay(clip.frames[0], labels, alpha=1.0))
    assert not np.array_equal(drawn, overlay(clip.frames[0], labels, alpha=0.5))
    deadline = time.monotonic() + 3 * PERIOD + TIMEOUT
    while len(node.diagnostics) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(node.diagnostics) >= 2, node.log.read_text()
    # the timer runs at the period given: not the default 1 s
    interval = np.median(np.diff(node.diagnostics))
    assert PERIOD - 1.0 < interval < PERIOD + 1.5, node.diagnostics


def test_an_integer_changes_overlay_alpha_at_run_time(node, clip):
    result = node.set('overlay_alpha', 0)
    assert result.successful, result.reason
    assert node.get('overlay_alpha') == 0
    labels, drawn = node.overlay_of(clip.frames[1])
    # alpha 0: the frame itself, only the outlines drawn
    np.testing.assert_array_equal(drawn, overlay(clip.frames[1], labels, alpha=0.0))
    assert not np.array_equal(drawn, overlay(clip.frames[1], labels, alpha=1.0))
    # out of range or not a number: refused with the range; the value stays
    for bad in (2, -1, 'opaque'):
        result = node.set('overlay_alpha', bad)
        assert not result.successful, bad
        assert 'overlay_alpha' in result.reason and '0..1' in result.reason, result.reason
        assert '\n' not in result.reason
    assert not node.set('overlay_alpha', 1.5).successful  # rclpy's range check, as before
    assert node.get('overlay_alpha') == 0
    assert node.set('overlay_alpha', 0.25).successful  # a decimal, as before
    assert node.get('overlay_alpha') == 0.25
    # read-only as before, whatever the type
    assert not node.set('diagnostics_period', 2).successful
    assert node.get('diagnostics_period') == PERIOD


def test_integers_in_a_params_file_are_the_same_numbers(clip, ros_context, tmp_path):
    params = tmp_path / 'params.yaml'
    params.write_text('/**:\n  ros__parameters:\n    overlay_alpha: 0\n'
                      f'    diagnostics_period: {PERIOD + 1}\n')
    node = _Node(clip, ros_context, tmp_path, 'vos_params_file', {},
                 extra_args=[f'--params-file {params}'])
    try:
        assert node.get('overlay_alpha') == 0
        assert node.get('diagnostics_period') == PERIOD + 1
        labels, drawn = node.overlay_of(clip.frames[0])
        np.testing.assert_array_equal(drawn, overlay(clip.frames[0], labels, alpha=0.0))
    finally:
        assert node.close() == 0, node.log.read_text()


#: (parameters, what the one line must say); each exits 2.
REFUSED = [
    ({'diagnostics_period': 0}, ['diagnostics_period', 'out of range', '0.1..60']),
    ({'diagnostics_period': 61}, ['diagnostics_period', 'out of range', '0.1..60']),
    ({'overlay_alpha': 2}, ['overlay_alpha', 'out of range', '0..1']),
    ({'overlay_alpha': -1}, ['overlay_alpha', 'out of range', '0..1']),
    ({'overlay_alpha': 'opaque'}, ['overlay_alpha', 'must be a number', '0..1']),
]


def test_out_of_range_integers_are_refused_with_the_range():
    processes = [subprocess.Popen(node_command(dict({'backend': 'flow'}, **params)),
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for params, _ in REFUSED]
    for (params, words), process in zip(REFUSED, processes):
        out, err = process.communicate(timeout=90)
        lines = [line for line in (out + err).splitlines() if line.strip()]
        assert process.returncode == 2, (params, out, err)
        assert len(lines) == 1 and all(word in lines[0] for word in words), (params, lines)
        # an integer is a number: the range is what is wrong, not the type
        assert 'type' not in lines[0], lines
