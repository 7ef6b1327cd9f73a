"""QoS profiles of the node's topics, built from parameter values.

Input defaults to reliable / keep last 10: measured with Fast DDS here, a best-effort reader lost
about a third of 854x480 rgb8 frames sent reliably at 10 Hz while a reliable reader lost none
(``bench/node_latency.py --input-reliability``). Dropping stale frames is the node's job (its
frame queue counts what it drops), not the transport's.

But a reliable reader receives nothing from a best-effort writer (the sensor-data QoS of many
camera drivers), so the node's default, ``auto``, follows the publishers it finds: reliable
while every publisher is reliable (or none is known yet), best effort as soon as one is not.
"""

from rclpy.qos import HistoryPolicy
from rclpy.qos import QoSProfile
from rclpy.qos import ReliabilityPolicy

RELIABILITY_CHOICES = ('reliable', 'best_effort')
#: Choices of the node's input_reliability parameter: auto follows the publishers found.
INPUT_RELIABILITY_CHOICES = ('auto',) + RELIABILITY_CHOICES

_RELIABILITY = {
    'reliable': ReliabilityPolicy.RELIABLE,
    'best_effort': ReliabilityPolicy.BEST_EFFORT,
}


def make_qos(reliability='reliable', depth=10):
    """Return a keep-last QoS profile; ValueError names a bad reliability or depth."""
    if reliability not in _RELIABILITY:
        raise ValueError(f'reliability must be one of {", ".join(RELIABILITY_CHOICES)}, '
                         f'got {reliability!r}')
    if int(depth) < 1:
        raise ValueError(f'QoS depth must be >= 1, got {depth}')
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=int(depth),
                      reliability=_RELIABILITY[reliability])


def output_qos(depth=10):
    """Return the profile of the label-map and overlay publishers (reliable, keep last)."""
    return make_qos('reliable', depth)


def reliability_for_publishers(publishers, current='reliable'):
    """Return the input reliability that hears every publisher in ``publishers``.

    ``publishers`` are rclpy ``TopicEndpointInfo`` (``node.get_publishers_info_by_topic``).
    Best effort when any of them is best effort (a reliable reader would get nothing from it),
    reliable when all are reliable, ``current`` when there are none.
    """
    if not publishers:
        return current
    if any(info.qos_profile.reliability == ReliabilityPolicy.BEST_EFFORT for info in publishers):
        return 'best_effort'
    return 'reliable'
