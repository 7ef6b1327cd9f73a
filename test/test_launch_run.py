"""launch/vos.launch.py run for real, the way ``ros2 launch vos_ros vos.launch.py`` runs it.

The package is built by colcon (the session's ``colcon_workspace``), the launch file is
included with arguments in a ``launch.LaunchService`` in a child process
(test/ros_launch_support.py), and the node it starts is driven over DDS on loopback in a
random domain of its own. In the pip venv launch and launch_ros come from the wheels in
``../shared/ros_launch``, installed into a folder of this session (never into .venv); the tests
skip, saying so, when neither those wheels nor a ROS install are there (and fail instead when
VOS_ROS_REQUIRE_LAUNCH_TESTS is set, as .ci/run does in CI). Never pip-install the wheels into
.venv: launch_testing's pytest plugin (loaded by every pytest run) does not load under pytest 9.

test_launch_integration.py is the same kind of check written as a launch_testing test; the
last test here runs it with ``launch_test`` where pytest does not collect it by itself.
"""

import os
import random
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ElementTree

import pytest
from rcl_interfaces.srv import GetParameters
import rclpy
from rclpy.parameter import parameter_value_to_python
import yaml

from colcon_support import PACKAGE
from colcon_support import sourced_env
import ros_launch_support
from vos_ros.core.labels import write_labels
from vos_ros.core.synthetic import make_clip
from vos_ros.ros.client import local_dds_env
from vos_ros.ros.client import SegmentationClient
from vos_ros.ros.client import stamp_key

LAUNCH_FILE = 'vos.launch.py'
INTEGRATION_TEST = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                'test_launch_integration.py')
WIDTH, HEIGHT = 160, 120
FRAMES = 12
START_TIMEOUT = 60.0
# Set by .ci/run in CI (which has ../shared): these tests must run there, never skip.
REQUIRE = 'VOS_ROS_REQUIRE_LAUNCH_TESTS'
ANSWER_TIMEOUT = 15.0


@pytest.fixture(scope='session')
def launch_env(request, tmp_path_factory):
    """The environment of a shell that sourced the colcon workspace and can run launch.

    Skips before building anything when there is no launch to run.
    """
    reason = ros_launch_support.skip_reason()
    if reason and os.environ.get(REQUIRE):
        pytest.fail(f'{REQUIRE} is set but {reason}')
    if reason:
        pytest.skip(reason)
    target = None
    if not ros_launch_support.native_launch():
        target = ros_launch_support.install_launch(tmp_path_factory.mktemp('ros_launch'))
    ws, env = request.getfixturevalue('colcon_workspace')
    return ros_launch_support.launch_environment(sourced_env(ws, env), target)


@pytest.fixture(scope='module')
def clip():
    return make_clip(num_frames=FRAMES, width=WIDTH, height=HEIGHT, num_objects=1, seed=11)


@pytest.fixture(scope='module')
def annotations(clip, tmp_path_factory):
    """Two annotation files of the clip's first frame (for file-versus-argument checks)."""
    folder = tmp_path_factory.mktemp('annotations')
    paths = (folder / 'from_file.png', folder / 'from_argument.png')
    for path in paths:
        write_labels(path, clip.first_mask)
    return tuple(str(path) for path in paths)


class Launched:
    """``vos.launch.py`` running in a child process, and a ROS context on its domain."""

    def __init__(self, env, arguments, log_path):
        self.domain = random.SystemRandom().randint(1, 200)
        self.log_path = log_path
        command = ros_launch_support.launch_command(PACKAGE, LAUNCH_FILE, arguments)
        with open(log_path, 'wb') as out:
            # A session of its own: Ctrl-C in a terminal reaches the launcher and the node
            # together (launch does not forward a SIGINT it got from the terminal), so
            # interrupt() signals the whole group the same way.
            self.process = subprocess.Popen(
                command, env=local_dds_env(self.domain, env), stdout=out,
                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        self.context = rclpy.Context()
        rclpy.init(args=[], context=self.context, domain_id=self.domain)

    def output(self):
        """Everything the launcher and the node printed so far."""
        return self.log_path.read_text(encoding='utf-8', errors='replace')

    def client(self, **kwargs):
        """A SegmentationClient on this launch's domain."""
        return SegmentationClient(context=self.context, name='launch_test_client', **kwargs)

    def interrupt(self, timeout=30.0):
        """Press Ctrl-C; return the launcher's exit code."""
        os.killpg(self.process.pid, signal.SIGINT)
        return self.wait(timeout)

    def interrupt_launcher(self, timeout=30.0):
        """SIGINT to the launcher alone (a program, not a terminal); return its exit code.

        launch then sends the node nothing for 5 s (it takes the SIGINT for a Ctrl-C that the
        node got too), then SIGTERM, which the node handles like SIGINT.
        """
        self.process.send_signal(signal.SIGINT)
        return self.wait(timeout)

    def wait(self, timeout):
        """Wait for the launcher to exit; return its exit code (fails on timeout)."""
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f'launch still running after {timeout:g} s:\n{self.output()}')

    def close(self):
        try:  # the launcher and whatever it left behind (its group)
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait()
        rclpy.try_shutdown(context=self.context)


@pytest.fixture
def launch(launch_env, tmp_path):
    """Start ``vos.launch.py`` with ``{name: value}`` arguments; everything stops afterwards."""
    started = []

    def start(**arguments):
        launched = Launched(launch_env, arguments, tmp_path / f'launch{len(started)}.log')
        started.append(launched)
        return launched

    yield start
    for launched in started:
        launched.close()


def _connect(launched, client):
    assert client.wait_for_node(START_TIMEOUT, launched.process), \
        f'the node did not come up on the expected topics:\n{launched.output()}'


def _parameters(client, node_name, names, timeout=20.0):
    """Read parameters back through the node's parameter service."""
    service = client.node.create_client(GetParameters, f'{node_name}/get_parameters')
    try:
        assert service.wait_for_service(timeout_sec=timeout), f'no {node_name}/get_parameters'
        future = service.call_async(GetParameters.Request(names=list(names)))
        deadline = time.monotonic() + timeout
        while not future.done() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert future.done(), 'get_parameters did not answer'
        return {name: parameter_value_to_python(value)
                for name, value in zip(names, future.result().values)}
    finally:
        client.node.destroy_client(service)


def _drive(client, clip, count, timeout=ANSWER_TIMEOUT):
    """Publish ``count`` frames one at a time; return the label maps answered (None: none)."""
    answers = []
    for index in range(count):
        msg = client.publish(clip.frames[index], 500.0 + index * 0.1)
        answers.append(client.wait_for_answer(stamp_key(msg.header.stamp), timeout))
    return answers


def _endpoints(infos):
    return {(info.node_namespace, info.node_name) for info in infos}


def _assert_clean_exit(launched, stop=Launched.interrupt):
    code = stop(launched)
    output = launched.output()
    assert code == 0, output
    assert 'process has finished cleanly' in output, output
    bad = ['process has died', 'Traceback']
    if stop is Launched.interrupt:
        bad.append('escalating to')
    for text in bad:
        assert text not in output, output


def test_remapped_topics_namespace_and_overrides_reach_the_node(launch, clip, annotations):
    launched = launch(image_topic='/cam/image_raw', segmentation_topic='/cam/labels',
                      namespace='robot1', annotation_path=annotations[1], backend='flow',
                      device='cpu')
    with launched.client(image_topic='/cam/image_raw', segmentation_topic='/cam/labels',
                         vos_node_name='robot1/vos_node') as client:
        _connect(launched, client)
        node = client.node
        # Matched topics do not mean the node's name has been discovered too (Fast DDS sends
        # names on a discovery topic of their own): give it the time a busy machine needs.
        deadline = time.monotonic() + 10.0
        while (('vos_node', '/robot1') not in node.get_node_names_and_namespaces()
               and time.monotonic() < deadline):
            time.sleep(0.05)
        assert ('vos_node', '/robot1') in node.get_node_names_and_namespaces()
        me = {('/robot1', 'vos_node')}
        assert _endpoints(node.get_subscriptions_info_by_topic('/cam/image_raw')) == me
        assert me <= _endpoints(node.get_publishers_info_by_topic('/cam/labels'))
        assert me <= _endpoints(node.get_publishers_info_by_topic('/cam/labels/overlay'))
        values = _parameters(client, '/robot1/vos_node',
                             ('annotation_path', 'backend', 'device', 'resolution'))
        # resolution: not an argument, so the installed config/vos.yaml's value.
        assert values == {'annotation_path': annotations[1], 'backend': 'flow',
                          'device': 'cpu', 'resolution': -1}
        answers = _drive(client, clip, FRAMES)
        answered = [labels for labels in answers if labels is not None]
        assert len(answered) >= FRAMES - 2, f'{len(answered)}/{FRAMES}:\n{launched.output()}'
        assert answers[0] is not None and (answers[0] == 1).any(), 'annotation not applied'
    assert 'segmenting /cam/image_raw -> /cam/labels with backend flow on cpu' in \
        launched.output()
    _assert_clean_exit(launched)


def test_params_file_argument_and_namespaced_default_topics(launch, clip, annotations,
                                                            tmp_path):
    params = tmp_path / 'my_vos.yaml'
    params.write_text(yaml.safe_dump({'/**': {'ros__parameters': {
        'annotation_path': annotations[0], 'backend': 'flow', 'device': 'cpu',
        'resolution': 96, 'diagnostics_period': 0.5}}}))
    # annotation_path on the command line wins over the file; empty arguments keep its values.
    launched = launch(params_file=str(params), namespace='robot2',
                      annotation_path=annotations[1])
    with launched.client(image_topic='/robot2/image', segmentation_topic='/robot2/segmentation',
                         vos_node_name='robot2/vos_node') as client:
        _connect(launched, client)
        values = _parameters(client, '/robot2/vos_node',
                             ('annotation_path', 'backend', 'device', 'resolution',
                              'diagnostics_period'))
        assert values == {'annotation_path': annotations[1], 'backend': 'flow',
                          'device': 'cpu', 'resolution': 96, 'diagnostics_period': 0.5}
        answers = _drive(client, clip, 4)
        assert sum(labels is not None for labels in answers) >= 3, launched.output()
    _assert_clean_exit(launched, Launched.interrupt_launcher)


@pytest.mark.parametrize('name, value, code', [
    ('device', 'gpu7', 2),  # a bad parameter value
    ('annotation_path', '/nonexistent/first.png', 1),  # a start-up error
])
def test_bad_argument_value_fails_with_the_node_message(launch, name, value, code):
    launched = launch(backend='flow', **{name: value})
    # The node exits at start-up; launch, with nothing left to run, exits by itself.
    launched.wait(START_TIMEOUT)
    output = launched.output()
    errors = [line for line in output.splitlines() if 'vos_node: error:' in line]
    assert len(errors) == 1, output
    assert f'parameter {name}' in errors[0] and value in errors[0], errors[0]
    assert 'process has died' in output and f'exit code {code}' in output, output
    assert 'Traceback' not in output, output


def test_default_backend_and_topics_from_the_installed_config(launch, clip, annotations):
    launched = launch(annotation_path=annotations[1])
    with launched.client(image_topic='/image', segmentation_topic='/segmentation') as client:
        # The default pipeline loads a torch model: allow it the time a busy machine needs.
        _connect(launched, client)
        values = _parameters(client, '/vos_node', ('backend', 'device'))
        assert values == {'backend': 'adaptive', 'device': 'auto'}
        answers = _drive(client, clip, 3, timeout=60.0)
        assert sum(labels is not None for labels in answers) >= 2, launched.output()
    _assert_clean_exit(launched)


def test_target_confidence_argument_reaches_the_node_as_an_integer(launch, clip, annotations):
    launched = launch(annotation_path=annotations[1], backend='embedding', device='cpu',
                      target_confidence='60')
    with launched.client(image_topic='/image', segmentation_topic='/segmentation') as client:
        _connect(launched, client)
        values = _parameters(client, '/vos_node', ('backend', 'target_confidence'))
        assert values == {'backend': 'embedding', 'target_confidence': 60}
        answers = _drive(client, clip, 3, timeout=60.0)
        assert sum(labels is not None for labels in answers) >= 2, launched.output()
    assert 'with backend adaptive: embedding + flow' in launched.output()
    _assert_clean_exit(launched)


def test_launch_testing_integration_test_passes(launch_env, tmp_path):
    if 'launch_testing.pytest.hooks' in sys.modules:
        pytest.skip('pytest collects test_launch_integration.py itself (launch_testing plugin)')
    report = tmp_path / 'launch_test.xml'
    env = local_dds_env(None, launch_env)
    proc = subprocess.Popen(
        [sys.executable, '-m', 'launch_testing.launch_test', INTEGRATION_TEST,
         '--package-name', PACKAGE, '--junit-xml', str(report)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        text=True, start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # launch_test and the node it started
        output, _ = proc.communicate()
        pytest.fail(f'launch_test still running after 300 s:\n{output[-6000:]}')
    output = output[-6000:]
    assert proc.returncode == 0, output
    root = ElementTree.parse(report).getroot()
    suites = [root] if root.tag == 'testsuite' else list(root.iter('testsuite'))
    counts = {key: sum(int(suite.get(key, 0)) for suite in suites)
              for key in ('tests', 'failures', 'errors', 'skipped')}
    # Active tests and post-shutdown tests all ran and passed.
    assert counts['tests'] >= 4, (counts, output)
    assert counts['failures'] == counts['errors'] == counts['skipped'] == 0, \
        (counts, output)
