"""vos_node's effort controller, driven by hand in-process (no frames through DDS).

``_adapt_effort`` is called directly with chosen step times, input interval, backlog and drops;
the camera's silence is set through the time of the last frame. Over real DDS:
test_ros_node_adaptive.
"""

import re
import time

import numpy as np
import pytest
import rclpy
from sensor_msgs.msg import Image
from std_srvs.srv import Trigger

from vos_ros.ros.node import EFFORT_FIRST_STEP
from vos_ros.ros.node import EFFORT_PROBE_FRAMES
from vos_ros.ros.node import EFFORT_SETTLE_FRAMES
from vos_ros.ros.node import VosNode

pytest.importorskip('torch')

INTERVAL = 0.1  # a 10 Hz camera


@pytest.fixture(scope='module')
def node():
    """An adaptive vos_node (embedding wrapped, target 100) that no frame has reached."""
    context = rclpy.Context()
    rclpy.init(args=['vos_node', '--ros-args', '-p', 'backend:=embedding', '-p', 'device:=cpu',
                     '-p', 'target_confidence:=100'], context=context)
    node = VosNode(context=context)
    try:
        yield node
    finally:
        node.stop()
        node.destroy_node()
        rclpy.try_shutdown(context=context)


class _Recorder:
    """Stands in for the /diagnostics publisher."""

    def __init__(self):
        self.arrays = []

    def publish(self, array):
        self.arrays.append(array)


def _settled(node, offset, step_ms, full_ms=None, silent_s=0.0, requested=100.0):
    """Put ``node`` mid-stream: ``requested`` lowered by ``offset``, judged from now on."""
    with node._cond:
        node._requested_target = requested
        node._effort_offset = float(offset)
        node._interval_ema = INTERVAL
        node._step_ema = float(step_ms)
        node._full_step_ema = full_ms
        node._steps_seen = EFFORT_SETTLE_FRAMES
        node._hold_frames = 0
        node._last_received = node._interval_from = time.monotonic() - silent_s
    node._adaptive.set_target(requested - offset)


def _unhandled(node):
    """Frames received that the worker has not yet answered, skipped, dropped or failed."""
    stats = node.statistics()
    return stats['received'] - sum(stats[key] for key in
                                   ('published', 'dropped', 'bad', 'waiting', 'errors'))


def _drain(node, timeout=20.0):
    """Wait until the worker has handled every frame a test gave the node.

    A frame still queued when the next test starts could be dropped by a third one (a drop
    the last test's /diagnostics would report), or meet a ~/reset a later test sends and reset
    the session while the last test steps it from this thread.
    """
    deadline = time.monotonic() + timeout
    while _unhandled(node) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not _unhandled(node) and node.statistics()['dropped'] == 0


def _effective(node):
    return node.statistics()['effective_target']


def _image(value=9):
    return Image(height=48, width=64, encoding='rgb8', step=64 * 3,
                 data=np.full((48, 64, 3), value, np.uint8).tobytes())


def test_a_load_in_the_hold_band_probes_back_up_a_point_at_a_time(node):
    # 75 ms steps on a 10 Hz camera, nothing waiting, nothing dropped: keeping up, no room
    _settled(node, offset=40, step_ms=75.0)
    for _ in range(EFFORT_PROBE_FRAMES - 1):
        node._adapt_effort(75.0, False, 0, 'cheap')
    assert _effective(node) == 60.0
    node._adapt_effort(75.0, False, 0, 'cheap')
    assert _effective(node) == 61.0 and node._adaptive.target_confidence == 61.0
    # a frame waiting breaks the run: the next probe needs EFFORT_PROBE_FRAMES more
    for _ in range(EFFORT_PROBE_FRAMES - 1):
        node._adapt_effort(75.0, False, 0, 'cheap')
    node._adapt_effort(75.0, True, 0, 'cheap')
    node._adapt_effort(75.0, False, 0, 'cheap')
    assert _effective(node) == 61.0
    # the probe stops EFFORT_FIRST_STEP under the request: the last jump may cost more
    for _ in range(EFFORT_PROBE_FRAMES * 40):
        node._adapt_effort(75.0, False, 0, 'cheap')
    assert _effective(node) == 100.0 - EFFORT_FIRST_STEP
    # a probe that falls behind is cut again before frames are dropped
    node._adapt_effort(200.0, True, 0, 'cheap')  # the mean step rises to 100 ms: load 1.0
    assert _effective(node) == 100.0 - EFFORT_FIRST_STEP - 5.0


def test_the_requested_target_comes_back_once_the_full_model_fits(node):
    # the full model's frames take 120 ms of a 100 ms interval: 100 cannot keep up
    _settled(node, offset=40, step_ms=75.0, full_ms=120.0)
    node._adapt_effort(120.0, False, 0, 'full')
    assert _effective(node) == 60.0
    # 60 ms: every frame the full model runs on fits, so the requested 100 does
    _settled(node, offset=40, step_ms=75.0, full_ms=60.0)
    node._adapt_effort(60.0, False, 0, 'full')
    assert _effective(node) == 100.0 and node._adaptive.target_confidence == 100.0
    # behind all the same (a frame dropped): lowered, whatever the full model's figure
    node._adapt_effort(60.0, False, 2, 'cheap')
    assert _effective(node) == 100.0 - EFFORT_FIRST_STEP


def test_the_last_points_come_at_once_unless_the_full_model_is_too_slow_for_them(node):
    # 40 ms steps of 100: a point per frame, the last EFFORT_FIRST_STEP at once (unmeasured)
    _settled(node, offset=EFFORT_FIRST_STEP + 1, step_ms=40.0)
    node._adapt_effort(40.0, False, 0, 'cheap')
    assert _effective(node) == 100.0 - EFFORT_FIRST_STEP
    node._adapt_effort(40.0, False, 0, 'cheap')
    assert _effective(node) == 100.0
    # the full model's frames take 95 ms: 100 would fall behind at once, so it stays at 80
    # (at 20 Hz it swung between 80 and 100 twice a second)
    _settled(node, offset=EFFORT_FIRST_STEP + 1, step_ms=40.0, full_ms=95.0)
    for _ in range(5):
        node._adapt_effort(40.0, False, 0, 'cheap')
    assert _effective(node) == 100.0 - EFFORT_FIRST_STEP
    # a request of 70 costs the full model's step on few frames: it comes back at once
    _settled(node, offset=EFFORT_FIRST_STEP, step_ms=40.0, full_ms=95.0, requested=70.0)
    node._adapt_effort(40.0, False, 0, 'cheap')
    assert _effective(node) == 70.0


def test_a_target_never_lowered_stays_where_it_is(node):
    # a lock-step client: the interval is the round trip, so the full model's frames take
    # nearly all of it, yet nothing waits and nothing is dropped: never behind, never lowered
    _settled(node, offset=0, step_ms=40.0, full_ms=95.0)
    for _ in range(5):
        node._adapt_effort(40.0, False, 0, 'cheap')
        assert _effective(node) == 100.0


def test_a_frame_after_a_silence_starts_a_new_stream(node, capfd):
    # lowered to 70, then 5 s without a frame, and no /diagnostics report meanwhile
    _settled(node, offset=30, step_ms=75.0, silent_s=5.0)
    node._on_image(_image())
    assert _effective(node) == 100.0
    assert node._step_ema is None and node._steps_seen == 0
    # the silence is no interval of the new stream; its first interval is measured afresh
    assert node._interval_ema is None
    node._on_image(_image())
    assert node._interval_ema is not None and node._interval_ema < 1.0
    assert 'target_confidence back to 100 (was lowered to 70): no image for 5' in \
        capfd.readouterr().err
    _drain(node)


def test_a_slow_camera_is_not_a_stopped_one(node):
    # one frame in 3 s: before a second frame no interval is known, and the first one measured
    # must not be thrown away as a stop
    _settled(node, offset=0, step_ms=75.0, silent_s=3.0)
    with node._cond:
        node._interval_ema = None
    node._on_image(_image())
    assert node._interval_ema == pytest.approx(3.0, abs=0.5)
    _drain(node)
    with node._cond:
        silence, lowered = node._camera_stopped(time.monotonic() + 10.0)
    assert silence is None and lowered is None  # 5 intervals of 3 s: 15 s


def test_reset_restores_the_requested_target(node, capfd):
    _settled(node, offset=30, step_ms=75.0)
    response = node._on_reset(Trigger.Request(), Trigger.Response())
    assert response.success
    assert _effective(node) == 100.0
    assert node._interval_ema is None and node._steps_seen == 0
    assert 'target_confidence back to 100 (was lowered to 70): tracking reset' in \
        capfd.readouterr().err


# Last: it gives the session its objects, after which the worker steps every frame.
def test_a_stopped_camera_restores_the_target_and_diagnostics_say_so(node, capfd):
    from diagnostic_msgs.msg import DiagnosticStatus

    labels = np.zeros((48, 64), np.uint8)
    labels[10:30, 20:40] = 1
    with node._cond:
        assert not node._queue  # no frame in flight: the worker leaves the session alone
    node.session.step(np.full((48, 64, 3), 9, np.uint8), labels)
    recorder = _Recorder()
    node._diag_pub = recorder
    with node._cond:
        node._stats['received'] = max(node._stats['received'], 80)
    # lowered to 0 at 30 Hz, then 3 s without a frame
    _settled(node, offset=100, step_ms=75.0, silent_s=3.0)
    with node._cond:
        node._interval_ema = 1 / 30
    node._publish_diagnostics()
    status = recorder.arrays[-1].status[0]
    values = {kv.key: kv.value for kv in status.values}
    assert status.level == DiagnosticStatus.OK, status.message
    assert re.fullmatch(r'no image for [3-9] s on /image', status.message), status.message
    assert values['effective_target'] == '100' and values['target_confidence'] == '100'
    # the next stream settles afresh: no interval, step or judgement of the last one
    assert node._interval_ema is None and node._step_ema is None
    assert node._steps_seen == 0 and node._interval_from is None
    node._publish_diagnostics()  # said once, not every report
    assert recorder.arrays[-1].status[0].message.startswith('no image for')
    err = capfd.readouterr().err
    assert len(re.findall(r'target_confidence back to 100 \(was lowered to 0\): no image for '
                          r'[3-9]\.\d s on /image', err)) == 1, err
    # camera back: tracking again
    _settled(node, offset=0, step_ms=75.0)
    node._publish_diagnostics()
    assert recorder.arrays[-1].status[0].message == 'tracking'
