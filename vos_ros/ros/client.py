"""Talking to a running ``vos_node``: start it as a child process, feed frames, collect masks.

Used by ``vos_demo``, ``vos_bag_eval``, ``bench/node_latency.py`` and the node tests. Every
process that touches DDS stays on loopback (``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST``) in a
domain of its own.
"""

import collections
import os
import random
import shlex
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

from vos_ros.core.errors import VosError
from vos_ros.ros.conversions import array_to_image_msg
from vos_ros.ros.conversions import image_msg_to_array
from vos_ros.ros.conversions import labels_to_msg
from vos_ros.ros.conversions import rgb_to_compressed_msg
from vos_ros.ros.qos import make_qos

#: Results over which vos_node counts its recent figures (latencies, step times, path
#: shares); its reports and the lines that describe them name the same window.
STATS_WINDOW = 300


def local_dds_env(domain_id=None, env=None):
    """Return ``env`` (default os.environ) with loopback-only discovery and a domain id.

    ``domain_id`` None picks a random one (1..200), so a demo never meets a real robot's graph.
    """
    env = dict(os.environ if env is None else env)
    env['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
    # SystemRandom: a seeded ``random`` (training, synthetic clips) must not pick the same domain
    # in every run.
    env['ROS_DOMAIN_ID'] = str(random.SystemRandom().randint(1, 200) if domain_id is None
                               else int(domain_id))
    env.setdefault('ROS_LOG_DIR', os.path.join(tempfile.gettempdir(), 'vos_ros_logs'))
    return env


def use_local_dds(domain_id=None):
    """Apply :func:`local_dds_env` to this process (call before ``rclpy.init``)."""
    os.environ.update(local_dds_env(domain_id))
    return int(os.environ['ROS_DOMAIN_ID'])


def check_ros_environment():
    """Check this process's ROS_DOMAIN_ID before ``rclpy.init``; return it (default ``'0'``).

    Raises VosError for a value that is not a domain id: Fast DDS exits the process (no
    exception) on a domain whose ports do not exist. Points ROS_LOG_DIR to the temporary folder
    when ``~`` is not writable, where rcl would refuse to start (it cannot create ~/.ros/log).
    """
    domain = os.environ.get('ROS_DOMAIN_ID', '').strip() or '0'
    if not domain.isdigit() or int(domain) > 232:
        raise VosError(f'ROS_DOMAIN_ID={domain!r} is not a domain id (0..232)')
    if 'ROS_LOG_DIR' not in os.environ and not os.access(os.path.expanduser('~'), os.W_OK):
        os.environ['ROS_LOG_DIR'] = os.path.join(tempfile.gettempdir(), 'vos_ros_logs')
    return domain


def _param_text(value):
    if isinstance(value, bool):
        return 'true' if value else 'false'
    return str(value)


def node_command(parameters=None, remappings=None, node_name=None, extra_args=None):
    """Return the argv that runs ``vos_node`` from this installation (same interpreter).

    ``extra_args``: strings of further ROS arguments (``'-p backend:=flow -p device:=cpu'``),
    split like a shell would; a ``--ros-args`` among them is dropped (the command has one).
    """
    command = [sys.executable, '-m', 'vos_ros.ros.node', '--ros-args']
    if node_name:
        command += ['-r', f'__node:={node_name}']
    for name, value in (parameters or {}).items():
        command += ['-p', f'{name}:={_param_text(value)}']
    for source, target in (remappings or {}).items():
        command += ['-r', f'{source}:={target}']
    for chunk in extra_args or []:
        command += [token for token in shlex.split(chunk) if token != '--ros-args']
    return command


class NodeProcess(subprocess.Popen):
    """A ``vos_node`` child process (a Popen) that knows the file its output goes to."""

    def __init__(self, command, log_path=None, **kwargs):
        #: File holding the node's stdout and stderr, or None (they go to a pipe).
        self.log_path = log_path
        super().__init__(command, **kwargs)

    def tail(self, lines=8):
        """Return the last non-blank lines of the node's output ('' without a log file)."""
        if not self.log_path:
            return ''
        try:
            with open(self.log_path, 'rb') as handle:
                text = handle.read().decode('utf-8', 'replace')
        except OSError:
            return ''
        return '\n'.join([line.rstrip() for line in text.splitlines() if line.strip()][-lines:])

    def stop(self, timeout=10.0):
        """Stop the node like :func:`stop_node`; return its exit code."""
        return stop_node(self, timeout)


def start_node(parameters=None, remappings=None, env=None, log_path=None, node_name=None,
               extra_args=None, own_session=False):
    """Start ``vos_node`` as a child process; its output goes to ``log_path`` (or a pipe).

    Returns a :class:`NodeProcess`. ``own_session``: the node does not share our terminal's
    process group, so a Ctrl-C there reaches only us and we stop the node when we are ready.
    """
    env = dict(os.environ if env is None else env)
    if env.get('ROS_AUTOMATIC_DISCOVERY_RANGE') != 'LOCALHOST' or 'ROS_DOMAIN_ID' not in env:
        env = local_dds_env(env.get('ROS_DOMAIN_ID'), env)
    # Child's log lines arrive unbuffered, so a crash leaves its reason in the log.
    env['PYTHONUNBUFFERED'] = '1'
    output = open(log_path, 'wb') if log_path else subprocess.PIPE
    try:
        return NodeProcess(node_command(parameters, remappings, node_name, extra_args),
                           log_path, env=env, stdout=output, stderr=subprocess.STDOUT,
                           stdin=subprocess.DEVNULL, start_new_session=own_session)
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


def _set_stamp(msg, stamp):
    """Set a message's header stamp from a builtin_interfaces/Time or seconds."""
    if isinstance(stamp, (int, float)):
        msg.header.stamp.sec = int(stamp)
        msg.header.stamp.nanosec = int(round((stamp - int(stamp)) * 1e9))
    else:
        msg.header.stamp = stamp


class NodeDiagnostics:
    """Record what a ``vos_node`` says of itself on ``/diagnostics`` (its ``: segmentation``
    status): the latest values, and over the whole recording the targets it ran at.

    ``node``: an rclpy Node to subscribe with (its executor must spin). ``vos_node_name``:
    whose status to keep, as the node names it (its fully qualified name without the leading
    slash): a fully qualified name (``robot1/vos_node``, ``/robot1/vos_node``, ``/vos_node``)
    keeps that node's only, a plain name (``vos_node``) that node's in any namespace, None
    any vos node's. ``values`` holds the latest key/value pairs
    (strings as published), ``count`` the messages seen, ``lowered`` those whose
    ``effective_target`` was under ``target_confidence`` (the node lowering its effort to keep
    up, issue 15) and ``lowest_target`` the lowest effective target seen (None without an
    adaptive backend).
    """

    def __init__(self, node, vos_node_name=None):
        from diagnostic_msgs.msg import DiagnosticArray

        self._name = vos_node_name.lstrip('/') if vos_node_name else None
        self._exact = bool(vos_node_name) and '/' in vos_node_name
        self._lock = threading.Lock()
        self.values = {}
        self.count = 0
        self.lowered = 0
        self.lowest_target = None
        self.subscription = node.create_subscription(DiagnosticArray, '/diagnostics',
                                                     self._on_message, 10)

    def _on_message(self, msg):
        for status in msg.status:
            if not self._ours(status.name):
                continue
            values = {kv.key: kv.value for kv in status.values}
            with self._lock:
                self.values = values
                self.count += 1
                try:
                    requested = float(values['target_confidence'])
                    effective = float(values['effective_target'])
                except (KeyError, ValueError):
                    continue
                if effective < requested:
                    self.lowered += 1
                if self.lowest_target is None or effective < self.lowest_target:
                    self.lowest_target = effective

    def _ours(self, status_name):
        if not status_name.endswith(': segmentation'):
            return False
        if self._name is None:
            return True
        node = status_name[:-len(': segmentation')]
        if self._exact:
            return node == self._name  # two namespaced nodes of one name are told apart
        return node == self._name or node.endswith('/' + self._name)

    def fresh(self, timeout=5.0):
        """Wait up to ``timeout`` s for the next message; return the latest values, numbers
        as int or float where they parse (empty dict when none ever came)."""
        with self._lock:
            seen = self.count
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if self.count != seen:
                    break
            time.sleep(0.05)
        with self._lock:
            values = dict(self.values)
        return {key: _number(value) for key, value in values.items()}

    def summary(self):
        """What a report should say: the latest values (parsed), messages, lowered ones."""
        with self._lock:
            values = {key: _number(value) for key, value in self.values.items()}
            return {'messages': self.count, 'lowered_messages': self.lowered,
                    'lowest_effective_target': self.lowest_target, 'last': values}


def describe_node_report(summary):
    """One line of what a ``vos_node`` said of itself, from :meth:`NodeDiagnostics.summary`.

    For example ``node: backend adaptive: memory + roi/flow on cpu, target_confidence 70
    (lowered to keep up: 60 at the end, 50 at the lowest): full model on 25 %, cheap path on
    70 %, given masks on 5 % of its last 300 results`` (the paths ``vos_eval`` counts; 300 is
    ``STATS_WINDOW``).
    Returns None when no report named a backend. Used by ``vos_demo`` and ``vos_bag_eval``,
    so both say it alike.
    """
    last = (summary or {}).get('last') or {}
    if not last.get('backend'):
        return None
    line = f'node: backend {last["backend"]}'
    if last.get('device'):
        line += f' on {last["device"]}'
    target = last.get('target_confidence')
    if isinstance(target, (int, float)):
        line += f', target_confidence {target:g}'
        effective = last.get('effective_target')
        lowest = summary.get('lowest_effective_target')
        if summary.get('lowered_messages') and isinstance(effective, (int, float)):
            # the node lowered its effort to keep up with the camera: say how far
            line += f' (lowered to keep up: {effective:g} at the end'
            if isinstance(lowest, (int, float)) and lowest < effective:
                line += f', {lowest:g} at the lowest'
            line += ')'
    full, cheap = last.get('path_full_share'), last.get('path_cheap_share')
    # only the adaptive backend has two paths (flow alone is the cheap path, memory alone the
    # full model: their results all count as the backend's own step)
    if str(last['backend']).startswith('adaptive') and isinstance(full, (int, float)) \
            and isinstance(cheap, (int, float)):
        # the node counts paths over a window of its latest results
        given = last.get('path_given_share')
        line += (f': full model on {100 * full:.0f} %, cheap path on {100 * cheap:.0f} %'
                 + (f', given masks on {100 * given:.0f} %' if isinstance(given, (int, float))
                    and given > 0 else '')
                 + f' of its last {STATS_WINDOW} results')
    return line


def _number(text):
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


class SegmentationClient:
    """A node that publishes images and records the label maps the vos node answers with.

    Spins its own single-threaded executor in a background thread; use as a context manager.
    ``answers`` maps the input stamp key to ``(receive_monotonic_time, labels)``. With
    ``raw_answers`` the label maps are not decoded here: ``raw`` instead queues
    ``(receive_monotonic_time, receive_wall_ns, cdr_bytes)`` per message, in arrival order
    (repeated stamps included), for the caller to decode.
    """

    def __init__(self, image_topic='/image', segmentation_topic='/segmentation',
                 vos_node_name='vos_node', name='vos_client', reliability='reliable',
                 depth=10, context=None, compressed=False, answer_depth=50, raw_answers=False):
        self._own_context = None
        if context is None and not rclpy.ok():
            # A context of our own, without this program's command line as ROS arguments.
            context = rclpy.Context()
            rclpy.init(args=[], context=context)
            self._own_context = context
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
        self.raw = collections.deque()
        self.subscription = self.node.create_subscription(
            Image, segmentation_topic, self._on_raw if raw_answers else self._on_segmentation,
            make_qos('reliable', answer_depth), raw=raw_answers)
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

    def _on_raw(self, data):
        # Only timestamp and queue here: the caller decodes in its own thread.
        self.raw.append((time.monotonic(), time.time_ns(), bytes(data)))

    def matched(self):
        """True once the node subscribes our images and we its segmentation."""
        return (self.publisher.get_subscription_count() > 0
                and self.subscription.get_publisher_count() > 0)

    def wait_for_node(self, timeout=30.0, process=None):
        """Wait until the vos node subscribes our images and publishes segmentation.

        Returns True when connected; False on timeout or when ``process`` exited.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process is not None and process.poll() is not None:
                return False
            if self.matched():
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
            _set_stamp(msg, stamp)
            msg.header.frame_id = frame_id
        with self._cond:
            self.sent[stamp_key(msg.header.stamp)] = time.monotonic()
        self.publisher.publish(msg)

    def publish_raw(self, data):
        """Publish an image message given as CDR bytes (sent as they are, stamp included)."""
        self.publisher.publish(data)

    def publish_annotation(self, labels, stamp=None, timeout=None):
        """Publish a label map on the node's ~/annotation topic (``stamp``: Time or seconds).

        With ``timeout``: first wait that long at most for the node to subscribe (VosError if
        it does not), and afterwards give it a moment to take the map before any next image.
        """
        topic = self.annotation_publisher.topic_name
        if timeout is not None:
            deadline = time.monotonic() + timeout
            while self.annotation_publisher.get_subscription_count() == 0:
                if time.monotonic() > deadline:
                    raise VosError(f'no subscriber on {topic} after {timeout:g} s: is the node '
                                   'running in this ROS_DOMAIN_ID?')
                time.sleep(0.05)
        msg = labels_to_msg(labels)
        if stamp is not None:
            _set_stamp(msg, stamp)
        self.annotation_publisher.publish(msg)
        if timeout is not None:
            time.sleep(0.5)  # the annotation must be taken before the first image arrives

    def reset(self, timeout=10.0, service_timeout=None):
        """Call the node's ~/reset service; return the response (None on timeout).

        ``service_timeout``: how long to wait for the service to appear (default ``timeout``).
        """
        service_timeout = timeout if service_timeout is None else service_timeout
        if not self.reset_client.wait_for_service(timeout_sec=service_timeout):
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
        if self._own_context is not None:
            rclpy.try_shutdown(context=self._own_context)
        self._thread.join(timeout=2.0)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()
