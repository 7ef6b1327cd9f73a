"""``vos_node``: segments the objects of a first-frame annotation in every camera image.

Subscribes ``image`` (sensor_msgs/Image; ``image/compressed`` with ``image_transport:=compressed``)
and publishes ``segmentation`` (mono8 label map, the input header), ``segmentation/overlay``
(rgb8, only while subscribed) and ``/diagnostics``. ``~/annotation`` (label-map Image) sets or
adds objects on the next frame; ``~/reset`` (std_srvs/Trigger) forgets them.

The node is a thin shell around one :class:`vos_ros.core.session.Session`: the subscription
callback only stores the newest frame in a one-slot buffer, and a single worker thread runs the
session, so a slow model drops (and counts) stale frames instead of delaying the camera. The
worker also builds the backend: torch's OpenMP threads belong to the thread that first runs
torch work, and a model loaded on one thread and run on another stepped 1.7x slower here.
"""

import argparse
import collections
import concurrent.futures
import difflib
import math
import os
import re
import sys
import threading
import time

from diagnostic_msgs.msg import DiagnosticArray
from diagnostic_msgs.msg import DiagnosticStatus
from diagnostic_msgs.msg import KeyValue
import numpy as np
from rcl_interfaces.msg import FloatingPointRange
from rcl_interfaces.msg import IntegerRange
from rcl_interfaces.msg import ParameterDescriptor
from rcl_interfaces.msg import SetParametersResult
import rclpy
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException
from rclpy.event_handler import SubscriptionEventCallbacks
from rclpy.node import Node
from rclpy.qos import ReliabilityPolicy
from sensor_msgs.msg import CompressedImage
from sensor_msgs.msg import Image
from std_srvs.srv import Trigger

from vos_ros.core.backends import available_backends
from vos_ros.core.backends.adaptive import AdaptiveBackend
from vos_ros.core.backends.adaptive import DEFAULT_TARGET
from vos_ros.core.backends import create_backend_for
from vos_ros.core.backends import DEFAULT_BACKEND
from vos_ros.core.backends import default_backend_name
from vos_ros.core.davis import fit_labels
from vos_ros.core.device import resolve_device
from vos_ros.core.device import validate_device_string
from vos_ros.core.errors import DataError
from vos_ros.core.errors import VosError
from vos_ros.core.labels import object_ids
from vos_ros.core.labels import overlay
from vos_ros.core.labels import read_labels
from vos_ros.core.session import as_rgb_image
from vos_ros.core.session import Session
from vos_ros.core.session import SessionConfig
from vos_ros.ros.client import check_ros_environment
from vos_ros.ros.client import STATS_WINDOW
from vos_ros.ros.conversions import ConversionError
from vos_ros.ros.conversions import array_to_image_msg
from vos_ros.ros.conversions import compressed_msg_to_rgb
from vos_ros.ros.conversions import image_msg_to_rgb
from vos_ros.ros.conversions import labels_to_msg
from vos_ros.ros.conversions import msg_to_labels
from vos_ros.ros.qos import INPUT_RELIABILITY_CHOICES
from vos_ros.ros.qos import make_qos
from vos_ros.ros.qos import output_qos
from vos_ros.ros.qos import reliability_for_publishers

NODE_NAME = 'vos_node'
TRANSPORT_CHOICES = ('raw', 'compressed')

#: Exit codes of ``main``.
EXIT_OK = 0
EXIT_STARTUP_ERROR = 1
EXIT_BAD_PARAMETER = 2

#: name -> (default, description, read_only, extra descriptor fields). Defaults live here only;
#: config/vos.yaml repeats them for users to edit.
PARAMETERS = {
    'annotation_path': (
        '', 'Label map of the first frame (palette PNG or 0/255 PNG); paired with the first '
        'image received and rescaled if its size differs. Empty: wait for ~/annotation.',
        True, {}),
    'model_path': (
        '', 'Model file for backends that load one (TorchScript with vos.json metadata); '
        'empty: the backend default.', True, {}),
    'backend': (
        DEFAULT_BACKEND, 'Segmentation backend; "default" = the package default.', True,
        {'additional_constraints': 'one of: default, ' + ', '.join(available_backends())}),
    'device': (
        'auto', 'Compute device for backends that use one.', True,
        {'additional_constraints': 'auto, cpu, cuda or cuda:N'}),
    'resolution': (
        -1, 'Shorter side of the working size in pixels (never upscaled); 0 = input size, '
        '-1 = the session/backend default.', True,
        {'integer_range': [IntegerRange(from_value=-1, to_value=8192, step=1)]}),
    'image_transport': (
        'raw', 'raw: subscribe image (sensor_msgs/Image); compressed: subscribe '
        '<image>/compressed (sensor_msgs/CompressedImage).', True,
        {'additional_constraints': 'raw or compressed'}),
    'input_reliability': (
        'auto', 'QoS reliability of the image subscription. auto: reliable while every '
        'publisher found is reliable (it lost no 480p frames in measurements; best_effort lost '
        'about a third), best_effort as soon as one publishes best effort (camera drivers '
        'with sensor-data QoS), re-checked as publishers come and go.', True,
        {'additional_constraints': ' or '.join(INPUT_RELIABILITY_CHOICES)}),
    'input_depth': (
        10, 'QoS history depth of the image subscription.', True,
        {'integer_range': [IntegerRange(from_value=1, to_value=1000, step=1)]}),
    'frame_queue': (
        2, 'Frames that may wait for the segmentation worker while it keeps up with the '
        'camera on average (1 while the camera is faster than the model). A frame that finds '
        'the queue full pushes out the oldest waiting one (counted as dropped). 1 = keep only '
        'the latest (lowest latency); 2 (default) also absorbs a single slow frame (CPU '
        'hiccups of 100+ ms on a 10 Hz camera) without dropping any.', True,
        {'integer_range': [IntegerRange(from_value=1, to_value=30, step=1)]}),
    'publish_overlay': (
        True, 'Publish segmentation/overlay (computed only while someone subscribes).', False,
        {}),
    'overlay_alpha': (
        0.5, 'Opacity of object colours in the overlay.', False,
        {'floating_point_range': [FloatingPointRange(from_value=0.0, to_value=1.0, step=0.0)]}),
    'target_confidence': (
        -1, 'Effort, 0-100: the cheap path (the memory model on a crop around the last result '
        'at 50-99, flow under 50 and for other models) runs while its estimated '
        'confidence (a predicted IoU, %) stays >= this, the full model otherwise or after a '
        'few cheap frames; 100 = full model every frame. -1 = the backend default (adaptive: '
        f'{DEFAULT_TARGET}, chosen by measurement; memory, embedding: 100). Changeable at run '
        'time; when the node falls behind the camera it lowers its effective target before '
        'dropping frames, and restores it as the load allows, when the camera stops and on '
        '~/reset (/diagnostics says so). No effect with backend flow. An integer or '
        'a decimal number (as vos_eval --target-confidence).', False,
        # an integer or a decimal, each with its range (rclpy checks the one of the value's
        # type); dynamic typing as for every decimal parameter (_declare_parameters)
        {'integer_range': [IntegerRange(from_value=-1, to_value=100, step=1)],
         'floating_point_range': [FloatingPointRange(from_value=-1.0, to_value=100.0,
                                                     step=0.0)]}),
    'diagnostics_period': (
        1.0, 'Seconds between /diagnostics messages.', True,
        {'floating_point_range': [FloatingPointRange(from_value=0.1, to_value=60.0,
                                                     step=0.0)]}),
}

#: Parameters that take a decimal number (those with a FloatingPointRange); an integer is
#: taken as the same number (see _number_value).
NUMBER_PARAMETERS = tuple(name for name, (_, _, _, extra) in PARAMETERS.items()
                          if extra.get('floating_point_range'))

#: Seconds between checks of the image publishers' QoS (input_reliability auto).
QOS_CHECK_PERIOD = 0.5


def make_backend(name, model_path='', device='cpu'):
    """Create a backend as every tool does (``backends.create_backend_for``).

    Returns ``(backend, device_used)``: ``'cpu'`` for a backend that takes no device. A model
    path given to a backend without one is an error (ModelError): silently ignoring the user's
    model would be worse.
    """
    return create_backend_for(name, model_path or None, device,
                              model_option='parameter model_path')


#: Frames processed before the node judges whether it keeps up with the camera.
EFFORT_SETTLE_FRAMES = 3
#: The smallest cut of the effective target when behind: just under 100 the cheap path runs
#: and is almost never trusted, so the full model runs too and each frame costs more than at
#: 100 (seen: target 95 made a 10 Hz demo drop frames it answered at 100).
EFFORT_FIRST_STEP = 20.0
#: Judged frames in a row in the hold band (steps at 60-90 % of the input interval, no frame
#: waiting, none dropped) before the effective target is raised a point: the step mean moves
#: by a fifth per frame, so 10 frames show what the last point cost before the next one.
EFFORT_PROBE_FRAMES = 10
#: A camera silent for max(STALL_MIN_S, STALL_INTERVALS x the mean input interval) has
#: stopped: the node is behind nothing, so its effort judgement starts over. 5 intervals: a
#: few missing frames (a retransmission, a driver's hiccup) are not a stop; 2 s at least: 5
#: intervals of a 30 Hz camera are 0.17 s, which a loaded machine's pause can exceed.
STALL_MIN_S = 2.0
STALL_INTERVALS = 5


def queue_frame(queue, frame, capacity, step_ms=None, interval_s=None):
    """Append ``frame`` to ``queue`` (a deque, oldest first); return how many were dropped.

    At most ``capacity`` frames wait while the model keeps up with the camera on average
    (``step_ms``, the recent mean step time, at most ``interval_s``, the recent mean frame
    interval), at most one while the camera outpaces it: a queue then only ages the answers,
    so the newest frame stays alone. The oldest waiting frames make room.
    """
    if step_ms is not None and interval_s and step_ms > 1000.0 * interval_s:
        capacity = 1
    dropped = 0
    while queue and len(queue) >= max(int(capacity), 1):
        queue.popleft()
        dropped += 1
    queue.append(frame)
    return dropped


def _ema(mean, value):
    """The running mean of the effort figures: ``value`` weighs a fifth (None: the first)."""
    return value if mean is None else 0.8 * mean + 0.2 * value


class VosNode(Node):
    """Video object segmentation of a camera stream (see the module docstring)."""

    def __init__(self, **kwargs):
        super().__init__(NODE_NAME, **kwargs)
        try:
            self._setup()
        except BaseException:
            # A half-built node must not linger in the graph (or in DDS at exit); a worker
            # still loading its model (Ctrl-C meanwhile) leaves once it is done.
            if hasattr(self, '_cond'):
                with self._cond:
                    self._stopping = True
                    self._cond.notify_all()
            self.destroy_node()
            raise

    def _setup(self):
        self._declare_parameters()
        settings = self._read_settings()
        self._settings = settings
        # Read the annotation before the (slower) backend so a typo fails fast.
        self._file_annotation = None
        if settings['annotation_path']:
            try:
                self._file_annotation = read_labels(settings['annotation_path'],
                                                    log=self.get_logger().warning)
            except DataError as error:
                raise DataError(f'parameter annotation_path: {error}') from None
            if not self._file_annotation.any():
                raise DataError(f'parameter annotation_path: {settings["annotation_path"]} '
                                'holds no object (all background)')
        # State shared between the executor thread and the worker, guarded by _cond.
        self._cond = threading.Condition()
        #: frames waiting for the worker, oldest first (at most frame_queue)
        self._queue = collections.deque()
        self._stopping = False
        self._reset_pending = False
        self._pending_annotation = None
        self._needs_file_annotation = self._file_annotation is not None
        # Every key exists from the start: statistics() copies while the worker increments.
        self._stats = collections.Counter(dict.fromkeys(
            ('received', 'published', 'dropped', 'bad', 'waiting', 'errors'), 0))
        # Recent figures (cleared by ~/reset): receive->publish and session.step times.
        self._latencies = collections.deque(maxlen=STATS_WINDOW)
        self._step_times = collections.deque(maxlen=STATS_WINDOW)
        self._publish_times = collections.deque(maxlen=STATS_WINDOW)
        self._image_size = None
        self._throttle = {}
        self._last_diag_dropped = 0
        # Effort control (adaptive backends): recent paths, input interval and step time.
        self._paths = collections.deque(maxlen=STATS_WINDOW)
        self._last_received = None  # for the silence of the camera
        self._interval_from = None  # the next input interval starts here (None: a new stream)
        self._interval_ema = None
        self._step_ema = None
        self._full_step_ema = None  # steps of the frames the full model ran on
        self._steps_seen = 0
        self._hold_frames = 0
        self._effort_drops = 0
        # set by _adaptive_backend (on the worker) for backends with a full model
        self._requested_target = None
        self._effort_offset = 0.0
        #: /diagnostics status name: two namespaced nodes must be told apart (robot1/vos_node)
        self._status_name = f'{self.get_fully_qualified_name().lstrip("/")}: segmentation'

        # The worker thread builds the backend and runs every step: torch's OpenMP threads then
        # form one team. A model loaded on this thread and run on another made every step about
        # 1.7x slower on 2 cores (two libgomp teams on 2 cores: libgomp cuts its threads'
        # spin-waits; bench/README.md "vos_node: one thread for the model").
        built = concurrent.futures.Future()
        self._worker = threading.Thread(target=self._work, args=(settings, built),
                                        name='vos_worker', daemon=True)
        self._worker.start()
        built.result()  # the worker's error while building, if any, is raised here

        self._pub = self.create_publisher(Image, 'segmentation', output_qos())
        # Always advertised so publish_overlay can be switched on at run time; it costs
        # nothing until someone subscribes.
        self._overlay_pub = self.create_publisher(Image, 'segmentation/overlay', output_qos(2))
        self._diag_pub = self.create_publisher(DiagnosticArray, '/diagnostics', 10)
        if settings['image_transport'] == 'compressed':
            self._image_type = CompressedImage
            self._image_topic = self.resolve_topic_name('image') + '/compressed'
        else:
            self._image_type = Image
            self._image_topic = self.resolve_topic_name('image')
        self._image_sub = None
        self._input_reliability = None
        if settings['input_reliability'] == 'auto':
            self._subscribe_images(reliability_for_publishers(
                self.get_publishers_info_by_topic(self._image_topic)), 'auto: ')
            # Publishers come and go: follow them (an incompatible one also triggers a check).
            self._qos_timer = self.create_timer(QOS_CHECK_PERIOD, self._adapt_input_qos)
        else:
            self._subscribe_images(settings['input_reliability'], 'parameter input_reliability')
        self._annotation_sub = self.create_subscription(Image, '~/annotation',
                                                        self._on_annotation, 10)
        self._reset_srv = self.create_service(Trigger, '~/reset', self._on_reset)
        self._diag_timer = self.create_timer(settings['diagnostics_period'],
                                             self._publish_diagnostics)
        self.add_on_set_parameters_callback(self._on_set_parameters)

        self.get_logger().info(
            f'segmenting {self._image_sub.topic_name} -> {self._pub.topic_name} with backend '
            f'{self._backend_name} on {self._device}' + self._model_words()
            + (f', target_confidence {self._adaptive.target_confidence:g}'
               if self._adaptive is not None else '') + '; '
            + ('annotation from ' + settings['annotation_path']
               if settings['annotation_path'] else
               f'waiting for a label map on {self._annotation_sub.topic_name}'))

    def _model_words(self):
        """``', model PATH version V'`` for the start-up line; empty without a model."""
        if not self._model:
            return ''
        version = self._model_version
        return f', model {self._model}' + (f' version {version}'
                                           if version not in (None, '') else '')

    # -- input QoS -------------------------------------------------------------------------

    def _subscribe_images(self, reliability, reason):
        """(Re)create the image subscription with ``reliability``; log the choice."""
        if self._image_sub is not None:
            self.destroy_subscription(self._image_sub)
        qos = make_qos(reliability, self._settings['input_depth'])
        callbacks = None
        if self._settings['input_reliability'] == 'auto':
            callbacks = SubscriptionEventCallbacks(incompatible_qos=self._on_incompatible_qos)
        self._image_sub = self.create_subscription(self._image_type, self._image_topic,
                                                   self._on_image, qos,
                                                   event_callbacks=callbacks)
        self._input_reliability = reliability
        if reason.startswith('auto'):
            publishers = self.get_publishers_info_by_topic(self._image_topic)
            offered = sorted({'best_effort' if p.qos_profile.reliability
                              == ReliabilityPolicy.BEST_EFFORT else 'reliable'
                              for p in publishers})
            reason = (f'{reason}publishers offer {" and ".join(offered)}' if offered else
                      f'{reason}no publisher yet; re-checked as publishers appear')
        self.get_logger().info(f'input {self._image_topic}: {reliability} QoS ({reason})')

    def _adapt_input_qos(self):
        """Follow the publishers: best effort if any is, reliable when all are."""
        try:
            publishers = self.get_publishers_info_by_topic(self._image_topic)
        except Exception:  # rclpy's RCLError is not public API
            if not self.context.ok():
                return  # Ctrl-C while the timer fired: the context is gone, nothing to follow
            raise
        wanted = reliability_for_publishers(publishers, self._input_reliability)
        if wanted != self._input_reliability:
            self._subscribe_images(wanted, 'auto, publishers changed: ')

    def _on_incompatible_qos(self, event):
        # A best-effort camera appeared while we are reliable: adapt now, not at the next tick.
        self._adapt_input_qos()

    # -- parameters ------------------------------------------------------------------------

    def _declare_parameters(self):
        for name, (default, description, read_only, extra) in PARAMETERS.items():
            descriptor = ParameterDescriptor(description=description, read_only=read_only,
                                             **extra)
            if name in NUMBER_PARAMETERS:
                # A statically typed double refuses an integer (overlay_alpha:=1, YAML 5,
                # `ros2 param set ... 5`), which users write all the time. Dynamic typing lets
                # it through, but rclpy then checks only the range of the value's own type and
                # lets any type in: _number_value checks both (_read_settings at start-up,
                # _on_set_parameters at run time).
                descriptor.dynamic_typing = True
            self.declare_parameter(name, default, descriptor)
        # rclpy ignores an override of a parameter nobody declares: a misspelt name would
        # silently leave the default in force, so say so (rclpy keeps the overrides it was
        # given in _parameter_overrides; no public accessor).
        unknown = sorted(set(getattr(self, '_parameter_overrides', {})) - set(PARAMETERS)
                         - {'use_sim_time', 'start_type_description_service'})
        for name in unknown:
            close = difflib.get_close_matches(name, PARAMETERS, n=1)
            self.get_logger().warning(
                f"parameter {name!r} is not one of this node's: ignored"
                + (f' (did you mean {close[0]!r}?)' if close else '')
                + f'; it takes {", ".join(PARAMETERS)}')

    def _read_settings(self):
        """Return the parameter values, validated; ValueError names the bad parameter."""
        settings = {name: self.get_parameter(name).value for name in PARAMETERS}
        backend = settings['backend']
        if backend in ('', 'default'):
            backend = DEFAULT_BACKEND
            if settings['model_path'] and os.path.isfile(settings['model_path']):
                # a model file alone chooses the pipeline that runs its kind
                try:
                    backend = default_backend_name(settings['model_path'])
                except VosError:
                    pass  # the backend's own loader reports the bad file at start-up
        if backend not in available_backends():
            raise ValueError(f'parameter backend: unknown backend {settings["backend"]!r}; '
                             f'choose one of default, {", ".join(available_backends())}')
        settings['backend'] = backend
        try:
            settings['device'] = validate_device_string(settings['device'])
        except ValueError as error:
            raise ValueError(f'parameter device: {error}') from None
        if settings['image_transport'] not in TRANSPORT_CHOICES:
            raise ValueError(f'parameter image_transport: must be raw or compressed, got '
                             f'{settings["image_transport"]!r}')
        for name in NUMBER_PARAMETERS:
            settings[name] = _number_value(name, settings[name])
        if settings['input_reliability'] not in INPUT_RELIABILITY_CHOICES:
            raise ValueError(f'parameter input_reliability: must be '
                             f'{" or ".join(INPUT_RELIABILITY_CHOICES)}, got '
                             f'{settings["input_reliability"]!r}')
        return settings

    # -- effort (target_confidence) ----------------------------------------------------------

    def _adaptive_backend(self, backend, target):
        """Return the backend the session runs: adaptive for every backend with a full model.

        Backends that are not adaptive (memory, embedding) are wrapped at target 100 (unless
        ``target`` says otherwise), which gives exactly their own results, so that the target
        can change at run time and the node can lower its effort when it falls behind.
        """
        self._adaptive = None
        self._default_target = None
        if isinstance(backend, AdaptiveBackend):
            self._adaptive = backend
        elif getattr(backend, 'name', '') != 'flow':
            self._adaptive = AdaptiveBackend(full=backend, target_confidence=100)
        else:
            if target >= 0:
                self.get_logger().warning('parameter target_confidence has no effect with '
                                          'backend flow (it is the cheap path itself)')
            return backend
        self._default_target = self._adaptive.target_confidence
        self._requested_target = self._default_target if target < 0 else float(target)
        self._effort_offset = 0.0
        self._adaptive.set_target(self._requested_target)
        return self._adaptive

    def _on_set_parameters(self, parameters):
        """Check decimal parameters set at run time; apply a new target_confidence.

        rclpy has refused read-only parameters already; with dynamic typing it lets any type
        through, and an integer without checking the range (_declare_parameters).
        """
        for parameter in parameters:
            if parameter.name not in NUMBER_PARAMETERS:
                continue
            try:
                value = _number_value(parameter.name, parameter.value)
            except ValueError as error:
                return SetParametersResult(successful=False, reason=str(error))
            if parameter.name != 'target_confidence':
                continue  # overlay_alpha: read for every overlay
            if self._adaptive is None:
                return SetParametersResult(
                    successful=False, reason='target_confidence has no effect with backend '
                    'flow (it is the cheap path itself)')
            target = self._default_target if value < 0 else value
            with self._cond:
                self._requested_target = target
                self._effort_offset = 0.0
                self._hold_frames = 0
            self.get_logger().info(f'target_confidence {target:g} from the next frame')
        return SetParametersResult(successful=True)

    def _adapt_effort(self, step_ms, backlog, drops, path=None):
        """Lower the effective target when the node falls behind the camera; restore it later.

        Behind: a frame was dropped since the last step, or one was already waiting when the
        worker got free while steps take more than 90 % of the input interval. Both lower the
        effective target (by 10 and 5 points, at least EFFORT_FIRST_STEP below the request).
        Back up: at once to the requested target when the full model's own steps (``path``
        'full') take under 80 % of the interval, the costliest frames at any target; steps
        under 60 % of the interval raise it a point per frame (the last EFFORT_FIRST_STEP
        points at once, but not to a request over 100 - EFFORT_FIRST_STEP once the full
        model's frames were measured too slow for it); steps at 60-90 % with nothing waiting
        hold it, and raise it a point after EFFORT_PROBE_FRAMES such frames in a row, down to
        EFFORT_FIRST_STEP below the request (a probe that falls behind is cut again). Nothing
        is judged in the first EFFORT_SETTLE_FRAMES frames of a stream. A client that waits
        for each answer (lock-step) never leaves a frame waiting, so it is never judged behind.
        """
        with self._cond:  # the executor thread starts the judgement over (_restart_effort)
            self._step_ema = _ema(self._step_ema, step_ms)
            if path == 'full':
                self._full_step_ema = _ema(self._full_step_ema, step_ms)
            self._steps_seen += 1
            if self._adaptive is None or self._steps_seen <= EFFORT_SETTLE_FRAMES:
                # The first frames say little of the load: the mean step and frame interval
                # are still settling (frames matched late arrive in a burst), so nothing is
                # judged yet.
                return
            interval_ms = 1000.0 * (self._interval_ema or 0.0)
            requested = self._requested_target
            offset = self._effort_offset
            load = self._step_ema / interval_ms if interval_ms else 0.0
            full_load = self._full_step_ema / interval_ms \
                if interval_ms and self._full_step_ema is not None else None
            mean_ms, full_ms = self._step_ema, self._full_step_ema  # for the log line
            hold = full_fits = False
            if drops:
                offset = max(offset + 10.0, EFFORT_FIRST_STEP)
            elif backlog and load > 0.9:
                offset = max(offset + 5.0, EFFORT_FIRST_STEP)
            elif full_load is not None and full_load < 0.8:
                # Every frame the full model runs on fits (at 50-99 it follows a rejected
                # cheap try, the costliest frame there is), so any target keeps up; without
                # it a node that fell behind once stayed low though 100 fitted. 0.8, not the
                # 0.9 that cuts: a margin, or the next frames' noise cuts it again at once.
                offset = 0.0
                full_fits = True
            elif load < 0.6 and offset > 0.0:
                offset -= 1.0
                if offset < EFFORT_FIRST_STEP:
                    # back to the requested target in one step (same reason), unless the full
                    # model's frames, what a request over 100 - EFFORT_FIRST_STEP costs on
                    # (nearly) every frame, were measured not to fit: that jump swung a 20 Hz
                    # camera between 80 and 100 twice a second
                    offset = EFFORT_FIRST_STEP if full_load is not None and \
                        requested > 100.0 - EFFORT_FIRST_STEP else 0.0
            elif not backlog and load <= 0.9:
                # Keeping up, but with no room to spare: without a probe the target stayed
                # lowered for good once the load sat here. One point at a time, and never
                # the last EFFORT_FIRST_STEP: at 81-99 both paths run on most frames, so
                # that jump can cost more than all the probes before it.
                hold = True
                self._hold_frames += 1
                if self._hold_frames >= EFFORT_PROBE_FRAMES and offset > EFFORT_FIRST_STEP:
                    offset -= 1.0
                    self._hold_frames = 0
            if not hold:
                self._hold_frames = 0
            offset = min(max(offset, 0.0), requested)
            if requested == self._requested_target:  # not changed meanwhile
                self._effort_offset = offset
        effective = requested - offset
        current = self._adaptive.target_confidence
        if effective != current:
            if effective < current:
                self._log_throttled('warning', 'effort', (
                    f'falling behind the camera: target_confidence lowered to {effective:g} '
                    f'(requested {requested:g})'), period=10.0)
            elif effective == requested:
                why = (f"the full model's frames take {full_ms:.0f} ms" if full_fits else
                       f'steps take {mean_ms:.0f} ms')
                self._log_throttled('info', 'effort_back', (
                    f'keeping up with the camera: target_confidence back to {requested:g} '
                    f'({why} of {interval_ms:.0f})'), period=10.0)
            self._adaptive.set_target(effective)

    def _camera_stopped(self, now):
        """``(silence, lowered)``: seconds without an image once the camera counts as stopped
        (else None), and the effective target a stop restored (else None).

        Stopped: silent for max(STALL_MIN_S, STALL_INTERVALS x the mean input interval). The
        first stop after a stream starts the effort judgement over (_restart_effort). Called
        with ``_cond`` held.
        """
        if self._last_received is None:
            return None, None
        silence = now - self._last_received
        limit = STALL_MIN_S
        if self._interval_ema is not None:
            limit = max(limit, STALL_INTERVALS * self._interval_ema)
        if silence <= limit:
            return None, None
        if self._interval_ema is None and self._effort_offset == 0.0:
            # nothing learnt of a stream yet: a camera slower than one frame in STALL_MIN_S
            # must still get its first interval measured
            return silence, None
        return silence, self._restart_effort()

    def _restart_effort(self):
        """Start the effort judgement over: the requested target from the next frame on.

        For a new stream (the camera stopped, ~/reset): the figures of the last one would
        judge the next one, and a target lowered for a camera that is gone kept /diagnostics
        saying "behind the camera". The next frames settle afresh (EFFORT_SETTLE_FRAMES).
        Called with ``_cond`` held; returns the effective target that was lowered, or None.
        """
        lowered = None
        if self._adaptive is not None and self._effort_offset > 0.0:
            lowered = self._requested_target - self._effort_offset
        self._effort_offset = 0.0
        self._interval_from = None  # the silence is no interval of the next stream
        self._interval_ema = None
        self._step_ema = None
        self._full_step_ema = None
        self._steps_seen = 0
        self._hold_frames = 0
        return lowered

    def _log_restored(self, lowered, why):
        self.get_logger().info(f'target_confidence back to {self._requested_target:g} '
                               f'(was lowered to {lowered:g}): {why}')

    # -- callbacks (executor thread: never run the model here) ------------------------------

    def _on_image(self, msg):
        received = time.monotonic()
        with self._cond:
            # a stop the diagnostics timer has not seen yet (a long diagnostics_period): this
            # frame starts a new stream all the same
            silence, lowered = self._camera_stopped(received)
            if self._interval_from is not None:
                self._interval_ema = _ema(self._interval_ema, received - self._interval_from)
            self._interval_from = received
            self._last_received = received
            self._stats['received'] += 1
            settled = self._steps_seen > EFFORT_SETTLE_FRAMES
            self._stats['dropped'] += queue_frame(
                self._queue, (msg, received), self._settings['frame_queue'],
                self._step_ema if settled else None, self._interval_ema)
            self._cond.notify()
        if lowered is not None:
            self._log_restored(lowered, f'no image for {silence:.1f} s before this one')

    def _on_annotation(self, msg):
        try:
            labels = msg_to_labels(msg, log=self.get_logger().warning)
        except ConversionError as error:
            self._log_throttled('warning', 'annotation', f'ignoring annotation: {error}')
            return
        with self._cond:
            self._pending_annotation = labels
        self.get_logger().info(f'annotation received: objects {object_ids(labels)} '
                               f'({msg.width}x{msg.height}); applied to the next frame')

    def _on_reset(self, request, response):
        with self._cond:
            self._reset_pending = True
            self._pending_annotation = None
            self._latencies.clear()
            self._step_times.clear()
            lowered = self._restart_effort()  # a reset starts the stream over
        if lowered is not None:
            self._log_restored(lowered, 'tracking reset')
        response.success = True
        if self._file_annotation is not None:
            response.message = ('tracking reset; annotation_path is applied again to the next '
                                'frame')
        else:
            response.message = (f'tracking reset; waiting for a label map on '
                                f'{self._annotation_sub.topic_name}')
        self.get_logger().info(response.message)
        return response

    # -- worker thread ---------------------------------------------------------------------

    def _build(self, settings):
        """Create the backend and the session (on the worker thread; see ``_setup``)."""
        device = resolve_device(settings['device'])
        backend, used = make_backend(settings['backend'], settings['model_path'], device)
        if used != device:
            self.get_logger().info(f'backend {settings["backend"]} takes no device; it runs on '
                                   f'the CPU (device {device} unused)')
        backend = self._adaptive_backend(backend, settings['target_confidence'])
        config = SessionConfig()
        if settings['resolution'] >= 0:
            config.resolution = settings['resolution']
        self.session = Session(backend, config)
        if self._file_annotation is not None:
            # The first calls at a new shape run several times slower; pay them now, before
            # the camera's first frames (annotation and frames share their size).
            height, width = self._file_annotation.shape[:2]
            took = self.session.warm_up(width, height, len(object_ids(self._file_annotation)))
            self.get_logger().debug(f'backend warmed up at {width}x{height} in {took:.0f} ms')
        described = backend.describe() if hasattr(backend, 'describe') else {}
        self._backend_name = str(described.get('backend', settings['backend']))
        if self._adaptive is not None:
            self._backend_name = (f'adaptive: {described["full"]} + '
                                  f'{described.get("cheap_paths", described["cheap"])}')
        self._device = str(described.get('device', used))
        # which model file ran, and its version (as vos_eval's run.json records it): a flow
        # backend has none
        self._model = described.get('model') or None
        self._model_version = described.get('version') if self._model else None

    def _work(self, settings, built):
        try:
            self._build(settings)
        except BaseException as error:  # raised again by _setup on the node's thread
            built.set_exception(error)
            return
        built.set_result(None)
        while True:
            with self._cond:
                # A frame already waiting when the worker gets free: it is the bottleneck.
                backlog = bool(self._queue)
                while not self._queue and not self._stopping:
                    self._cond.wait()
                if self._stopping:
                    return
                drops = self._stats['dropped'] - self._effort_drops
                self._effort_drops = self._stats['dropped']
                msg, received = self._queue.popleft()
                reset = self._reset_pending
                self._reset_pending = False
                annotation = self._pending_annotation
                self._pending_annotation = None
            try:
                self._process(msg, received, reset, annotation, backlog, drops)
            except Exception as error:  # the node must outlive any one bad frame
                if self._stopping or not rclpy.ok(context=self.context):
                    return
                self._stats['errors'] += 1
                self._log_throttled('error', 'step', f'frame failed and was skipped: '
                                    f'{type(error).__name__}: {error}')

    def _process(self, msg, received, reset, annotation, backlog=False, drops=0):
        if reset:
            self.session.reset()
            self._image_size = None  # a new stream: its first frame sets the size
            self._needs_file_annotation = self._file_annotation is not None
        try:
            if isinstance(msg, CompressedImage):
                image = compressed_msg_to_rgb(msg)
            else:
                image = image_msg_to_rgb(msg)
            try:
                image = as_rgb_image(image)  # what the session accepts (at least 2x2)
            except ValueError as error:
                # a bad frame like any malformed one, not a failed step; a kind of its own,
                # or a zero-size frame's warning would silence it for 2 s
                raise ConversionError(str(error), 'small') from None
            height, width = image.shape[:2]
            if self._image_size not in (None, (width, height)) \
                    and not self.session.accepts_frame(width, height):
                # resizing would squeeze the tracked objects (Session.step refuses it): a bad
                # frame too, so that the annotation waits and `frames_bad` counts it
                raise ConversionError(
                    f'image size {width}x{height} has another aspect ratio than the stream '
                    f'({self._image_size[0]}x{self._image_size[1]}); call ~/reset and '
                    f'annotate again to track in the new view', 'aspect')
        except ConversionError as error:
            self._stats['bad'] += 1
            if annotation is not None:  # keep it for the next good frame
                with self._cond:
                    if self._pending_annotation is None:
                        self._pending_annotation = annotation
            self._log_throttled('warning', 'bad:' + error.kind,
                                f'skipping frame: {error}')
            return
        if self._image_size is not None and self._image_size != (width, height):
            self._log_throttled('warning', 'size', (
                f'image size changed from {self._image_size[0]}x{self._image_size[1]} to '
                f'{width}x{height}; continuing at the same working size'))
        self._image_size = (width, height)

        mask = annotation
        if mask is None and self._needs_file_annotation:
            mask = self._file_annotation
        if mask is not None:
            self._needs_file_annotation = False
            if mask.shape != (height, width):
                try:
                    # the session's rule (davis.fit_labels), checked here so that the frame is
                    # still answered with the objects tracked so far
                    mask = fit_labels(mask, (height, width), 'annotation',
                                      lambda line: self.get_logger().info(line))
                except DataError as error:
                    self._log_throttled('warning', 'annotation', f'{error}: refused')
                    mask = None
        if mask is None and not self.session.initialized:
            self._stats['waiting'] += 1
            self._log_throttled('info', 'waiting', (
                f'waiting for an annotation: set parameter annotation_path or publish a label '
                f'map on {self._annotation_sub.topic_name}'), period=10.0)
            return
        if self._adaptive is not None:  # a target set at run time applies from this frame
            with self._cond:
                effective = self._requested_target - self._effort_offset
            if effective != self._adaptive.target_confidence:
                self._adaptive.set_target(effective)
        tic = time.monotonic()
        result = self.session.step(image, mask)
        step_ms = (time.monotonic() - tic) * 1000.0
        self._pub.publish(labels_to_msg(result.labels, msg.header))
        done = time.monotonic()
        with self._cond:
            self._stats['published'] += 1
            self._latencies.append((done - received) * 1000.0)
            self._step_times.append(step_ms)
            self._publish_times.append(done)
            self._paths.append(result.path)
        self._adapt_effort(step_ms, backlog, drops, result.path)
        if self._overlay_pub.get_subscription_count() > 0 \
                and self.get_parameter('publish_overlay').value:
            alpha = float(self.get_parameter('overlay_alpha').value)
            blended = overlay(image, result.labels, alpha=alpha)
            self._overlay_pub.publish(array_to_image_msg(blended, 'rgb8', msg.header))

    # -- diagnostics and logging -----------------------------------------------------------

    def statistics(self):
        """Return counters and latency figures (a dict; also what /diagnostics carries)."""
        with self._cond:
            stats = dict(self._stats)
            latencies = np.array(self._latencies, dtype=np.float64)
            steps = np.array(self._step_times, dtype=np.float64)
            times = list(self._publish_times)
        recent = [t for t in times if t >= time.monotonic() - 5.0]
        stats['fps'] = ((len(recent) - 1) / (recent[-1] - recent[0])
                        if len(recent) > 1 and recent[-1] > recent[0] else 0.0)
        stats['latency_p50_ms'] = float(np.percentile(latencies, 50)) if latencies.size else 0.0
        stats['latency_p95_ms'] = float(np.percentile(latencies, 95)) if latencies.size else 0.0
        stats['step_p50_ms'] = float(np.percentile(steps, 50)) if steps.size else 0.0
        stats['step_p95_ms'] = float(np.percentile(steps, 95)) if steps.size else 0.0
        with self._cond:
            paths = list(self._paths)
        for path in ('full', 'cheap', 'given'):
            stats[f'path_{path}_share'] = paths.count(path) / len(paths) if paths else 0.0
        if self._adaptive is not None:
            with self._cond:
                # what the next frame runs at: a target restored while no frame comes (the
                # camera stopped, ~/reset) reaches the backend only with the next frame
                stats['target_confidence'] = self._requested_target
                stats['effective_target'] = self._requested_target - self._effort_offset
        return stats

    def _publish_diagnostics(self):
        with self._cond:
            silence, lowered = self._camera_stopped(time.monotonic())
        if lowered is not None:  # the camera stopped: the node is behind nothing now
            self._log_restored(lowered, f'no image for {silence:.1f} s on '
                               f'{self._image_sub.topic_name}; the next stream is judged '
                               'afresh')
        stats = self.statistics()
        status = DiagnosticStatus(name=self._status_name, hardware_id=self._device)
        new_drops = stats['dropped'] - self._last_diag_dropped
        self._last_diag_dropped = stats['dropped']
        if stats['received'] == 0:
            status.level = DiagnosticStatus.WARN
            status.message = f'no image received yet on {self._image_sub.topic_name}'
        elif not self.session.initialized and not self._needs_file_annotation:
            status.level = DiagnosticStatus.WARN
            status.message = 'waiting for an annotation'
        elif new_drops:
            status.level = DiagnosticStatus.WARN
            status.message = f'dropping frames: inference slower than input ({new_drops} new)'
            if self._adaptive is not None and \
                    stats['effective_target'] < stats['target_confidence']:
                status.message += (f'; target_confidence lowered to '
                                   f'{stats["effective_target"]:g} (requested '
                                   f'{stats["target_confidence"]:g})')
            self._log_throttled('warning', 'dropped', (
                f'dropped {stats["dropped"]} of {stats["received"]} frames so far: '
                'inference is slower than the camera'), period=10.0)
        elif silence is not None:
            # OK: the node is ready and behind nothing. A stopped camera is the camera's
            # (or the bag's end), and a WARN would flag every replay that ends; "no image
            # received yet" stays WARN: mostly a wrong topic or QoS.
            status.level = DiagnosticStatus.OK
            status.message = f'no image for {silence:.0f} s on {self._image_sub.topic_name}'
        elif self._adaptive is not None and \
                stats['effective_target'] < stats['target_confidence']:
            status.level = DiagnosticStatus.WARN
            status.message = (f'behind the camera: target_confidence lowered to '
                              f'{stats["effective_target"]:g} (requested '
                              f'{stats["target_confidence"]:g}) to keep up without dropping '
                              'frames')
        else:
            status.level = DiagnosticStatus.OK
            status.message = 'tracking'
        values = {
            'fps': f'{stats["fps"]:.2f}',
            'latency_p50_ms': f'{stats["latency_p50_ms"]:.1f}',
            'latency_p95_ms': f'{stats["latency_p95_ms"]:.1f}',
            'step_p50_ms': f'{stats["step_p50_ms"]:.1f}',
            'step_p95_ms': f'{stats["step_p95_ms"]:.1f}',
            'frames_received': stats['received'],
            'frames_published': stats['published'],
            'frames_dropped': stats['dropped'],
            'frames_bad': stats['bad'],
            'frames_failed': stats['errors'],
            'objects': ' '.join(str(i) for i in self.session.object_ids),
            'backend': self._backend_name,
            'device': self._device,
            # share of the recent results (last STATS_WINDOW) each path produced
            'path_full_share': f'{stats["path_full_share"]:.3f}',
            'path_cheap_share': f'{stats["path_cheap_share"]:.3f}',
            'path_given_share': f'{stats["path_given_share"]:.3f}',
        }
        if self._adaptive is not None:
            values['target_confidence'] = f'{stats["target_confidence"]:g}'
            values['effective_target'] = f'{stats["effective_target"]:g}'
        if self._model:  # what ran, for vos_demo's summary and a diagnostics monitor
            values['model'] = self._model
            if self._model_version not in (None, ''):
                values['model_version'] = self._model_version
        status.values = [KeyValue(key=key, value=str(value)) for key, value in values.items()]
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self._diag_pub.publish(array)

    def _log_throttled(self, level, key, text, period=2.0):
        """Log ``text`` at most once per ``period`` seconds per ``key``; count the rest."""
        now = time.monotonic()
        last, suppressed = self._throttle.get(key, (None, 0))
        if last is not None and now - last < period:
            self._throttle[key] = (last, suppressed + 1)
            return
        if suppressed:
            text += f' ({suppressed} more since the last message)'
        self._throttle[key] = (now, 0)
        # One call site per severity: rclpy refuses a call site whose severity changes.
        logger = self.get_logger()
        if level == 'info':
            logger.info(text)
        elif level == 'warning':
            logger.warning(text)
        else:
            logger.error(text)

    def stop(self):
        """Stop the worker thread (waits for the frame in progress)."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._worker.is_alive() and self._worker is not threading.current_thread():
            self._worker.join(timeout=10.0)


def _parse_args(argv):
    from rclpy.utilities import remove_ros_args

    lines = [f'  {name} (default {default!r}): {description}'
             for name, (default, description, _, _) in PARAMETERS.items()]
    parser = argparse.ArgumentParser(
        prog=NODE_NAME, formatter_class=argparse.RawDescriptionHelpFormatter,
        description='Video object segmentation node: image -> segmentation (mono8 labels).',
        epilog='ROS parameters (--ros-args -p name:=value, or --params-file config/vos.yaml):\n'
        + '\n'.join(lines))
    parser.parse_args(remove_ros_args(args=argv)[1:])


def _number_value(name, value):
    """The value of the decimal parameter ``name`` (one of NUMBER_PARAMETERS) as a float.

    An integer is the same number. ValueError, naming the parameter and its range, for any
    other type (dynamic typing lets it through) and for a number out of the range of the
    parameter's FloatingPointRange (rclpy checks a decimal against it, not an integer).
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f'parameter {name}: must be {_parameter_takes(name)}, got {value!r}')
    bounds = PARAMETERS[name][3]['floating_point_range'][0]
    low, high = sorted((bounds.from_value, bounds.to_value))
    # the edges with rclpy's tolerance, so that no value rclpy accepted is refused here
    if not (low <= value <= high or math.isclose(value, low, rel_tol=Node.PARAM_REL_TOL)
            or math.isclose(value, high, rel_tol=Node.PARAM_REL_TOL)):
        raise ValueError(f'parameter {name}: {value!r} is out of range; {name} takes '
                         f'{_parameter_takes(name)}')
    return float(value)


def _parameter_message(error):
    """One line for a start-up error; rclpy's refusals of a parameter reworded.

    rclpy says ``Invalid parameter value (150) for parameter. Reason: Parameter
    target_confidence out of range. Min: -1, Max: 100, value: 150: target_confidence``; this
    says ``parameter target_confidence: 150 is out of range; target_confidence takes a number
    in -1..100 (default -1)``. Other errors are returned as they are.
    """
    text = str(error)
    hint = _parameter_hint(error)
    if not hint:
        return text
    name = text.rsplit(':', 1)[-1].strip()
    value = re.match(r'Invalid parameter value \((.*)\) for parameter\. Reason: (.*): ', text)
    typed = re.match(r"Trying to set parameter '[^']*' to '(.*)' of type '(\w+)'", text)
    if value:
        why = 'is out of range' if 'out of range' in value.group(2) else \
            f'is refused ({value.group(2)})'
        return f'parameter {name}: {value.group(1)} {why}{hint}'
    if typed:
        kind = typed.group(2).lower().replace('_', ' ')
        return f'parameter {name}: {typed.group(1)!r} is of type {kind}{hint}'
    return text + hint


def _parameter_hint(error):
    """'; PARAM takes ...' for rclpy's type and range errors, which name the parameter last
    (``...: target_confidence``) but not what it takes; '' for other errors."""
    if not isinstance(error, ParameterException):
        return ''
    name = str(error).rsplit(':', 1)[-1].strip()
    if name not in PARAMETERS:
        return ''
    return f'; {name} takes {_parameter_takes(name)}'


def _parameter_takes(name):
    """What parameter ``name`` takes, e.g. 'a number in 0.1..60 (default 1.0)'."""
    default, _, _, extra = PARAMETERS[name]
    kinds = {bool: 'true or false', int: 'an integer', float: 'a number', str: 'a string'}
    takes = kinds.get(type(default), type(default).__name__)
    if name in NUMBER_PARAMETERS:
        takes = 'a number'  # an integer or a decimal (target_confidence's default is -1)
    ranges = extra.get('floating_point_range') or extra.get('integer_range')
    if ranges:
        takes += f' in {ranges[0].from_value:g}..{ranges[0].to_value:g}'
    elif extra.get('additional_constraints'):
        takes += f' ({extra["additional_constraints"]})'
    return f'{takes} (default {default!r})'


def main(argv=None):
    """Run the node until SIGINT/SIGTERM; return the exit code (0 on a clean stop)."""
    argv = list(sys.argv if argv is None else argv)
    if not argv or argv[0].startswith('-'):
        argv.insert(0, NODE_NAME)
    _parse_args(argv)
    try:
        check_ros_environment()  # Fast DDS would exit with a raw error on a bad domain id
    except VosError as error:
        print(f'{NODE_NAME}: error: {error}', file=sys.stderr)
        return EXIT_STARTUP_ERROR
    try:
        rclpy.init(args=argv)
    except Exception as error:  # malformed --ros-args: rclpy's text says what is wrong
        print(f'{NODE_NAME}: error: invalid ROS arguments: {error}', file=sys.stderr)
        return EXIT_BAD_PARAMETER
    try:
        node = VosNode()
    except (KeyboardInterrupt, ExternalShutdownException):
        rclpy.try_shutdown()
        return EXIT_OK
    except (ValueError, ParameterException, VosError) as error:
        # One clear line, no traceback: these are the user's settings or files.
        print(f'{NODE_NAME}: error: {_parameter_message(error)}', file=sys.stderr)
        rclpy.try_shutdown()
        return EXIT_STARTUP_ERROR if isinstance(error, VosError) else EXIT_BAD_PARAMETER
    except Exception:
        if not rclpy.ok():  # SIGINT/SIGTERM while starting: rclpy shut the context down
            return EXIT_OK
        raise
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception:
        # A signal shut the context down while a callback ran (its publish failed) or while
        # the executor built its wait set (seen: SIGTERM from launch): a stop, not a crash.
        if rclpy.ok():
            raise
    finally:
        node.stop()
        node.destroy_node()
        rclpy.try_shutdown()
    return EXIT_OK


if __name__ == '__main__':
    sys.exit(main())
