"""``main()`` of the project's lifecycle nodes (inference nodes and overlay_node).

With ``managed: false`` the node configures and activates itself; with ``managed: true`` it
waits for a lifecycle manager. Either way the process ends, exit code 0, when the node reaches
``finalized`` (the ``shutdown`` transition), on Ctrl-C or on SIGTERM.
"""

from __future__ import annotations

import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.lifecycle import TransitionCallbackReturn

_SPIN_PERIOD_S = 0.1


def run_node(node_class, args: list[str] | None = None) -> int:
    """Create ``node_class()``, run it until finalized or interrupted.

    Returns:
        0, or 1 when a self-activating node (``managed: false``) fails to configure or activate.
    """
    rclpy.init(args=args)
    node = node_class()
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        if not node.get_parameter("managed").value:
            for name, trigger in (("configure", node.trigger_configure), ("activate", node.trigger_activate)):
                if trigger() != TransitionCallbackReturn.SUCCESS:
                    node.get_logger().fatal(f"{name} failed; exiting")
                    return 1
        while rclpy.ok() and not node.finalized:
            executor.spin_once(timeout_sec=_SPIN_PERIOD_S)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.stop()
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
    return 0
