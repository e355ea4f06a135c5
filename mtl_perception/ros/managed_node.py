"""The lifecycle base and ``main()`` of the project's nodes (inference nodes and overlay_node).

With ``managed: false`` a node configures and activates itself; with ``managed: true`` it waits
for a lifecycle manager. Either way its process ends, exit code 0, when the node reaches
``finalized`` (the ``shutdown`` transition, from any state), on Ctrl-C or on SIGTERM.
"""

from __future__ import annotations

import rclpy
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.executors import Executor, ExternalShutdownException, SingleThreadedExecutor
from rclpy.experimental import EventsExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn

from mtl_perception.exit_codes import EXIT_FAILED, EXIT_OK

_SPIN_PERIOD_S = 0.1

# How a node's process takes its callbacks. The events executor takes a message straight from the
# middleware's event queue instead of rebuilding a wait set for every spin: on the demo bag
# (2-core EPYC, one thread) it cut the multitask node's lockstep p50 from about 32 to 28 ms
# (queue 0.55 -> 0.07 ms, transport in 0.82 -> 0.55 ms, publish 1.33 -> 1.08 ms).
EXECUTORS = {"events": EventsExecutor, "single_threaded": SingleThreadedExecutor}


class ManagedNode(LifecycleNode):
    """A lifecycle node that knows its state (``state_label``, for /diagnostics) and when it is finalized.

    Subclasses create publishers in ``on_configure`` and subscriptions in ``on_activate`` (setting
    ``state_label`` to ``inactive`` / ``active`` on success), and implement :meth:`stop` (undo
    activate) and :meth:`unload` (undo configure); deactivate, cleanup and shutdown call them.
    """

    def __init__(self, node_name: str, **kwargs) -> None:
        super().__init__(node_name, **kwargs)
        self.declare_parameter("managed", False, ParameterDescriptor(
            description="Run as a managed lifecycle node (wait for configure/activate); false = configure and activate at start.", read_only=True))
        self.state_label = "unconfigured"
        self.finalized = False
        self._choices: dict[str, tuple[str, ...]] = {}
        self.declare_choice("executor", "events", "How the process takes its callbacks: 'events' "
                            "(rclpy's events executor, the lower latency) or 'single_threaded' "
                            "(rclpy's wait-set executor).", tuple(EXECUTORS))

    def declare_choice(self, name: str, default: str, description: str, choices: tuple[str, ...],
                       read_only: bool = True) -> None:
        """Declare a string parameter that must be one of ``choices`` (checked by :meth:`check_choices`)."""
        self._choices[name] = tuple(choices)
        self.declare_parameter(name, default, ParameterDescriptor(
            description=f"{description} One of: {', '.join(choices)}.", read_only=read_only,
            additional_constraints=f"one of {list(choices)}"))

    def choice(self, name: str) -> str:
        """The value of the :meth:`declare_choice` parameter ``name``.

        Raises:
            ValueError: naming the parameter, its choices and the value, when it holds another.
        """
        value, choices = self.get_parameter(name).value, self._choices[name]
        if value not in choices:
            raise ValueError(f"parameter '{name}' must be one of {list(choices)}, got {value!r}")
        return value

    def check_choices(self) -> bool:
        """True when every :meth:`declare_choice` parameter holds one of its choices; otherwise
        log which one does not (for ``on_configure`` to fail with)."""
        for name in self._choices:
            try:
                self.choice(name)
            except ValueError as error:
                self.get_logger().error(str(error))
                return False
        return True

    def stop(self) -> None:
        """Stop taking input (idempotent)."""
        raise NotImplementedError

    def unload(self) -> None:
        """Release what configure created (idempotent)."""
        raise NotImplementedError

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.stop()
        self.state_label = "inactive"
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.unload()
        self.state_label = "unconfigured"
        return super().on_cleanup(state)

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.stop()
        self.unload()
        self.state_label = "finalized"
        self.finalized = True
        return super().on_shutdown(state)


def make_executor(node: ManagedNode) -> Executor:
    """The executor the node's ``executor`` parameter names (ValueError for another value, see
    :meth:`ManagedNode.choice`)."""
    return EXECUTORS[node.choice("executor")](context=node.context)


def run_node(node_class, args: list[str] | None = None) -> int:
    """Create ``node_class()`` (a :class:`ManagedNode`), run it until finalized or interrupted.

    Returns:
        0, or 1 when a self-activating node (``managed: false``) fails to configure or activate.
    """
    rclpy.init(args=args)
    node = node_class()
    try:
        executor = make_executor(node)
    except ValueError as error:
        node.get_logger().fatal(f"{error}; exiting")
        node.destroy_node()
        rclpy.try_shutdown()
        return EXIT_FAILED
    executor.add_node(node)
    try:
        if not node.get_parameter("managed").value:
            for name, trigger in (("configure", node.trigger_configure), ("activate", node.trigger_activate)):
                if trigger() != TransitionCallbackReturn.SUCCESS:
                    node.get_logger().fatal(f"{name} failed; exiting")
                    return EXIT_FAILED
        while rclpy.ok() and not node.finalized:
            executor.spin_once(timeout_sec=_SPIN_PERIOD_S)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.stop()
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
    return EXIT_OK
