"""The node's frame queue policy (``vos_ros.ros.node.queue_frame``), without DDS."""

import collections

import pytest

pytest.importorskip('rclpy')

from vos_ros.ros.node import queue_frame  # noqa: E402


def test_a_node_that_keeps_up_queues_up_to_capacity_and_drops_the_oldest():
    queue = collections.deque()
    # 60 ms steps on a 10 Hz camera: a hiccup leaves two frames waiting, none dropped
    assert queue_frame(queue, 'a', 2, step_ms=60.0, interval_s=0.1) == 0
    assert queue_frame(queue, 'b', 2, step_ms=60.0, interval_s=0.1) == 0
    assert list(queue) == ['a', 'b']
    # a third frame pushes out the oldest
    assert queue_frame(queue, 'c', 2, step_ms=60.0, interval_s=0.1) == 1
    assert list(queue) == ['b', 'c']


def test_an_overloaded_node_keeps_only_the_newest_frame():
    queue = collections.deque(['a', 'b'])
    # 60 ms steps on a 30 Hz camera: the queue would only age the answers
    assert queue_frame(queue, 'c', 2, step_ms=60.0, interval_s=1 / 30) == 2
    assert list(queue) == ['c']


@pytest.mark.parametrize('capacity', [1, 0])
def test_capacity_one_is_keep_latest_and_nothing_is_known_at_start(capacity):
    queue = collections.deque()
    assert queue_frame(queue, 'a', capacity) == 0  # no timing yet: the capacity decides
    assert queue_frame(queue, 'b', capacity) == 1
    assert list(queue) == ['b']
