"""QoS profiles chosen by name (as in ros2/demos quality_of_service_demo)."""

from rclpy.qos import (DurabilityPolicy, HistoryPolicy, QoSProfile,
                       ReliabilityPolicy)

_RELIABILITY_BY_NAME = {
    "best_effort": ReliabilityPolicy.BEST_EFFORT,
    "reliable": ReliabilityPolicy.RELIABLE,
}

RELIABLE_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10,
                          reliability=ReliabilityPolicy.RELIABLE,
                          durability=DurabilityPolicy.VOLATILE)
# Latched: late subscribers still get the last message (e.g. label_info).
LATCHED_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                         reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)


def qos_from_name(reliability, depth):
    """Volatile keep-last QoS from a reliability name.

    Args:
        reliability: ``'best_effort'`` or ``'reliable'`` (e.g. a node parameter).
        depth: history depth, at least 1.
    """
    if reliability not in _RELIABILITY_BY_NAME:
        raise ValueError(f"unknown QoS reliability {reliability!r}; "
                         f"use one of {sorted(_RELIABILITY_BY_NAME)}")
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
        raise ValueError(f"QoS depth must be a positive integer, got {depth!r}")
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth,
                      reliability=_RELIABILITY_BY_NAME[reliability],
                      durability=DurabilityPolicy.VOLATILE)
