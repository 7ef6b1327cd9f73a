"""launch_testing integration test of launch/vos.launch.py (the ROS-standard way).

The launch description includes the installed launch file with remapped topics, a namespace
and backend/device/annotation arguments; the active tests drive the node over DDS while it runs;
the post-shutdown tests check its exit code and output.

Runs where the package is installed (sourced workspace) and launch_testing is importable:
``colcon test`` in a ROS install (pytest collects it through launch_testing's plugin), or
``launch_test test/test_launch_integration.py``. In the pip venv, test_launch_run.py runs it
with ``launch_test`` and the launch wheels of ../shared/ros_launch; plain pytest skips it here.
"""

import os
import random
import sys
import tempfile
import unittest

import pytest

try:
    from ament_index_python.packages import get_package_share_directory
    from launch import LaunchDescription
    from launch.actions import IncludeLaunchDescription
    from launch.launch_description_sources import PythonLaunchDescriptionSource
    import launch_testing
    import launch_testing.actions
    import launch_testing.asserts
except ImportError as error:
    pytest.skip(f'launch_testing is not importable ({error}); test_launch_run.py runs this file '
                'with the launch wheels of ../shared/ros_launch', allow_module_level=True)
import rclpy

from vos_ros.core.labels import write_labels
from vos_ros.core.synthetic import make_clip
from vos_ros.ros.client import SegmentationClient
from vos_ros.ros.client import stamp_key

# The node inherits this process's environment: DDS stays on loopback, in a domain of its own.
os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
os.environ.setdefault('ROS_DOMAIN_ID', str(random.SystemRandom().randint(1, 200)))

# Collected by plain pytest (no launch_testing plugin), the test cases would run without their
# launch: skip them. The plugin and launch_test do not look at this mark.
pytestmark = pytest.mark.skipif(
    'launch_testing.pytest.hooks' not in sys.modules,
    reason='needs the launch_testing pytest plugin or launch_test (test_launch_run.py)')

NAMESPACE = 'lt'
IMAGE_TOPIC = '/lt_camera/image_raw'
SEGMENTATION_TOPIC = '/lt_camera/labels'
FRAMES = 12


@pytest.mark.launch_test
def generate_test_description():
    """Include the installed vos.launch.py; tests start once the node process runs."""
    clip = make_clip(num_frames=FRAMES, width=160, height=120, num_objects=1, seed=7)
    folder = tempfile.mkdtemp(prefix='vos_launch_test_')
    annotation = os.path.join(folder, 'first.png')
    write_labels(annotation, clip.first_mask)
    launch_file = os.path.join(get_package_share_directory('vos_ros'), 'launch',
                               'vos.launch.py')
    arguments = {'image_topic': IMAGE_TOPIC, 'segmentation_topic': SEGMENTATION_TOPIC,
                 'namespace': NAMESPACE, 'annotation_path': annotation, 'backend': 'flow',
                 'device': 'cpu'}
    return LaunchDescription([
        IncludeLaunchDescription(PythonLaunchDescriptionSource(launch_file),
                                 launch_arguments=arguments.items()),
        launch_testing.actions.ReadyToTest(),
    ]), {'clip': clip, 'annotation': annotation}


class TestRunningNode(unittest.TestCase):
    """While the launch runs: the node segments frames on the remapped topics."""

    @classmethod
    def setUpClass(cls):
        cls.context = rclpy.Context()
        rclpy.init(args=[], context=cls.context)

    @classmethod
    def tearDownClass(cls):
        rclpy.try_shutdown(context=cls.context)

    def test_node_logs_its_remapped_topics(self, proc_output):
        proc_output.assertWaitFor(
            f'segmenting {IMAGE_TOPIC} -> {SEGMENTATION_TOPIC} with backend flow on cpu',
            process='vos_node', timeout=60)

    def test_node_answers_frames_under_its_namespace(self, clip):
        with SegmentationClient(image_topic=IMAGE_TOPIC, segmentation_topic=SEGMENTATION_TOPIC,
                                vos_node_name=f'{NAMESPACE}/vos_node', name='lt_client',
                                context=self.context) as client:
            self.assertTrue(client.wait_for_node(60.0), 'the node did not come up')
            self.assertIn(('vos_node', f'/{NAMESPACE}'),
                          client.node.get_node_names_and_namespaces())
            answered = 0
            for index in range(FRAMES):
                msg = client.publish(clip.frames[index], 100.0 + index * 0.1)
                labels = client.wait_for_answer(stamp_key(msg.header.stamp), timeout=15.0)
                answered += labels is not None
            self.assertGreaterEqual(answered, FRAMES - 2)


@launch_testing.post_shutdown_test()
class TestShutdown(unittest.TestCase):
    """After the launch: the node stopped cleanly and said what it did."""

    def test_exit_code_is_zero(self, proc_info):
        launch_testing.asserts.assertExitCodes(proc_info, process='vos_node')

    def test_output_names_the_annotation_and_no_error(self, proc_output, annotation):
        launch_testing.asserts.assertInStderr(proc_output, f'annotation from {annotation}',
                                              'vos_node')
        for text in ('Traceback', 'vos_node: error'):
            with self.assertRaises(AssertionError):
                launch_testing.asserts.assertInStderr(proc_output, text, 'vos_node')
