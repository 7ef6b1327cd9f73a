"""QoS profiles of the node's topics, built from parameter values.

Input defaults to reliable / keep last 10: measured with Fast DDS here, a best-effort reader lost
about a third of 854x480 rgb8 frames sent reliably at 10 Hz while a reliable reader lost none
(``bench/node_latency.py --input-reliability``). Dropping stale frames is the node's job (its
keep-latest slot counts what it drops), not the transport's.
"""

from rclpy.qos import HistoryPolicy
from rclpy.qos import QoSProfile
from rclpy.qos import ReliabilityPolicy

RELIABILITY_CHOICES = ('reliable', 'best_effort')

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
