"""Talking to a running ``vos_node``: start it as a child process, feed frames, collect masks.

Used by ``vos_demo``, ``bench/node_latency.py`` and the node tests. Every process that touches
DDS stays on loopback (``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST``) in a domain of its own.
"""

import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from sensor_msgs.msg import CompressedImage
from sensor_msgs.msg import Image
from std_srvs.srv import Trigger

from vos_ros.ros.conversions import array_to_image_msg
from vos_ros.ros.conversions import image_msg_to_array
from vos_ros.ros.conversions import labels_to_msg
from vos_ros.ros.conversions import rgb_to_compressed_msg
from vos_ros.ros.qos import make_qos


def local_dds_env(domain_id=None, env=None):
    """Return ``env`` (default os.environ) with loopback-only discovery and a domain id.

    ``domain_id`` None picks a random one (1..200), so a demo never meets a real robot's graph.
    """
    env = dict(os.environ if env is None else env)
    env['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
    env['ROS_DOMAIN_ID'] = str(random.randint(1, 200) if domain_id is None else int(domain_id))
    env.setdefault('ROS_LOG_DIR', os.path.join(tempfile.gettempdir(), 'vos_ros_logs'))
    return env


def use_local_dds(domain_id=None):
    """Apply :func:`local_dds_env` to this process (call before ``rclpy.init``)."""
    os.environ.update(local_dds_env(domain_id))
    return int(os.environ['ROS_DOMAIN_ID'])


def _param_text(value):
    if isinstance(value, bool):
        return 'true' if value else 'false'
    return str(value)


def node_command(parameters=None, remappings=None, node_name=None):
    """Return the argv that runs ``vos_node`` from this installation (same interpreter)."""
    command = [sys.executable, '-m', 'vos_ros.ros.node', '--ros-args']
    if node_name:
        command += ['-r', f'__node:={node_name}']
    for name, value in (parameters or {}).items():
        command += ['-p', f'{name}:={_param_text(value)}']
    for source, target in (remappings or {}).items():
        command += ['-r', f'{source}:={target}']
    return command


def start_node(parameters=None, remappings=None, env=None, log_path=None, node_name=None):
    """Start ``vos_node`` as a child process; its output goes to ``log_path`` (or a pipe)."""
    env = dict(os.environ if env is None else env)
    if env.get('ROS_AUTOMATIC_DISCOVERY_RANGE') != 'LOCALHOST' or 'ROS_DOMAIN_ID' not in env:
        env = local_dds_env(env.get('ROS_DOMAIN_ID'), env)
    # Child's log lines arrive unbuffered, so a crash leaves its reason in the log.
    env['PYTHONUNBUFFERED'] = '1'
    output = open(log_path, 'wb') if log_path else subprocess.PIPE
    try:
        return subprocess.Popen(node_command(parameters, remappings, node_name), env=env,
                                stdout=output, stderr=subprocess.STDOUT)
    finally:
        if log_path:
            output.close()


def stop_node(process, timeout=10.0):
    """Send SIGINT (as Ctrl-C would) and return the exit code (kills after ``timeout``)."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


def stamp_key(stamp):
    """Return a hashable key of a builtin_interfaces/Time."""
    return int(stamp.sec), int(stamp.nanosec)


class SegmentationClient:
    """A node that publishes images and records the label maps the vos node answers with.

    Spins its own single-threaded executor in a background thread; use as a context manager.
    ``answers`` maps the input stamp key to ``(receive_monotonic_time, labels)``.
    """

    def __init__(self, image_topic='/image', segmentation_topic='/segmentation',
                 vos_node_name='vos_node', name='vos_client', reliability='reliable',
                 depth=10, context=None, compressed=False):
        self._own_context = False
        if context is None and not rclpy.ok():
            rclpy.init()
            self._own_context = True
        self.node = Node(name, context=context)
        self.image_topic = image_topic
        self.segmentation_topic = segmentation_topic
        self.vos_node_name = vos_node_name
        #: True: images go out as PNG sensor_msgs/CompressedImage (lossless).
        self.compressed = compressed
        self.publisher = self.node.create_publisher(
            CompressedImage if compressed else Image, image_topic, make_qos(reliability, depth))
        self.annotation_publisher = self.node.create_publisher(
            Image, f'/{vos_node_name}/annotation', make_qos('reliable', 10))
        self.reset_client = self.node.create_client(Trigger, f'/{vos_node_name}/reset')
        self._cond = threading.Condition()
        self.answers = {}
        self.sent = {}
        self.subscription = self.node.create_subscription(
            Image, segmentation_topic, self._on_segmentation, make_qos('reliable', 50))
        self.executor = SingleThreadedExecutor(context=self.node.context)
        self.executor.add_node(self.node)
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self):
        try:
            self.executor.spin()
        except Exception:  # shutdown while spinning: nothing left to do
            pass

    def _on_segmentation(self, msg):
        received = time.monotonic()
        labels = np.array(image_msg_to_array(msg))
        with self._cond:
            self.answers[stamp_key(msg.header.stamp)] = (received, labels)
            self._cond.notify_all()

    def wait_for_node(self, timeout=30.0, process=None):
        """Wait until the vos node subscribes our images and publishes segmentation.

        Returns True when connected; False on timeout or when ``process`` exited.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process is not None and process.poll() is not None:
                return False
            if (self.publisher.get_subscription_count() > 0
                    and self.subscription.get_publisher_count() > 0):
                # Endpoint matching completes shortly after the graph shows both ends.
                time.sleep(0.3)
                return True
            time.sleep(0.05)
        return False

    def publish(self, image, stamp, encoding='rgb8', frame_id='camera'):
        """Publish one image (``encoding`` of the array) with a stamp (Time or seconds)."""
        if self.compressed:
            msg = rgb_to_compressed_msg(image, 'png')
        else:
            msg = array_to_image_msg(image, encoding)
        self.publish_msg(msg, stamp, frame_id)
        return msg

    def publish_msg(self, msg, stamp=None, frame_id='camera'):
        """Publish a prepared image message (its stamp set from ``stamp`` when given)."""
        if stamp is not None:
            if isinstance(stamp, (int, float)):
                msg.header.stamp.sec = int(stamp)
                msg.header.stamp.nanosec = int(round((stamp - int(stamp)) * 1e9))
            else:
                msg.header.stamp = stamp
            msg.header.frame_id = frame_id
        with self._cond:
            self.sent[stamp_key(msg.header.stamp)] = time.monotonic()
        self.publisher.publish(msg)

    def publish_annotation(self, labels):
        """Publish a label map on the node's ~/annotation topic."""
        self.annotation_publisher.publish(labels_to_msg(labels))

    def reset(self, timeout=10.0):
        """Call the node's ~/reset service; return the response (None on timeout)."""
        if not self.reset_client.wait_for_service(timeout_sec=timeout):
            return None
        future = self.reset_client.call_async(Trigger.Request())
        deadline = time.monotonic() + timeout
        while not future.done() and time.monotonic() < deadline:
            time.sleep(0.01)
        return future.result() if future.done() else None

    def wait_for_answer(self, stamp, timeout=10.0):
        """Return the labels answered for ``stamp`` (key or Time), or None on timeout."""
        key = stamp if isinstance(stamp, tuple) else stamp_key(stamp)
        deadline = time.monotonic() + timeout
        with self._cond:
            while key not in self.answers:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(left)
            return self.answers[key][1]

    def wait_for_answers(self, keys, timeout=10.0, idle=None):
        """Wait until every key is answered, ``timeout`` passes, or nothing arrives for
        ``idle`` seconds; return the number answered."""
        deadline = time.monotonic() + timeout
        with self._cond:
            last_count, last_change = -1, time.monotonic()
            while True:
                count = sum(1 for key in keys if key in self.answers)
                now = time.monotonic()
                if count != last_count:
                    last_count, last_change = count, now
                if count == len(keys) or now >= deadline:
                    return count
                if idle is not None and now - last_change >= idle:
                    return count
                self._cond.wait(min(0.1, max(deadline - now, 0.001)))

    def latencies_ms(self):
        """Return {stamp key: publish-to-answer latency in ms} for every answered frame."""
        with self._cond:
            return {key: (self.answers[key][0] - sent) * 1000.0
                    for key, sent in self.sent.items() if key in self.answers}

    def close(self):
        """Stop spinning and destroy the node (and the context if we created it)."""
        self.executor.shutdown(timeout_sec=1.0)
        self.node.destroy_node()
        if self._own_context:
            rclpy.try_shutdown()
        self._thread.join(timeout=2.0)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()
