"""The test harness itself: processes always stop, even when they ignore SIGINT."""

import signal
import sys

import pytest
import ros_harness

SLEEPER = "import time; print('ready', flush=True); time.sleep(120)"
SIGINT_IGNORER = ("import signal, time; signal.signal(signal.SIGINT, signal.SIG_IGN); "
                  "print('ready', flush=True); time.sleep(120)")


def wait_until_ready(process, timeout=10.0):
    import time

    deadline = time.monotonic() + timeout
    while "ready" not in process.output():
        assert process.returncode is None, process.output()
        assert time.monotonic() < deadline, "process did not start"
        time.sleep(0.05)


def test_sigint_reaches_children_even_if_the_parent_ignores_it(tmp_path):
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # as in a background shell job
    try:
        process = ros_harness.start_process([sys.executable, "-c", SLEEPER], tmp_path / "a.log")
    finally:
        signal.signal(signal.SIGINT, previous)
    wait_until_ready(process)
    assert process.stop(sigint_timeout=10.0) == -signal.SIGINT
    assert "KeyboardInterrupt" in process.output()


def test_stop_escalates_to_sigterm_when_sigint_is_ignored(tmp_path):
    process = ros_harness.start_process([sys.executable, "-c", SIGINT_IGNORER], tmp_path / "b.log")
    wait_until_ready(process)
    assert process.stop(sigint_timeout=0.5) == -signal.SIGTERM


def test_launch_process_fixture_runs_outside_the_repo_with_the_session_env(launch_process, tmp_path):
    import os

    process = launch_process([sys.executable, "-c",
                              "import os; print(os.getcwd(), os.environ['ROS_DOMAIN_ID'], "
                              "os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'], os.environ['FASTDDS_DEFAULT_PROFILES_FILE'])"])
    assert process.wait(timeout=30) == 0
    cwd, domain_id, discovery, profile = process.output().split()
    assert cwd == str(tmp_path)
    assert domain_id == os.environ["ROS_DOMAIN_ID"] and 100 <= int(domain_id) <= 199
    assert discovery == "SYSTEM_DEFAULT" and profile.endswith("config/fastdds_localhost.xml")


def test_wait_for_messages_times_out_with_a_clear_error(ros_node, unique_topic):
    from std_msgs.msg import String

    with pytest.raises(TimeoutError, match=f"got 0 of 2 messages on {unique_topic}"):
        ros_node.wait_for_messages(unique_topic, String, count=2, timeout=0.3)
    with pytest.raises(TimeoutError, match=f"no publisher on {unique_topic}"):
        ros_node.wait_for_publisher(unique_topic, timeout=0.2)


def test_collect_gets_messages_from_a_publisher_in_this_process(ros_node, unique_topic):
    from std_msgs.msg import String

    collector = ros_node.collect(unique_topic, String)
    publisher = ros_node.node.create_publisher(String, unique_topic, 10)
    try:
        ros_node.wait_for_subscriber(unique_topic, timeout=5.0)
        import time

        deadline = time.monotonic() + 10.0
        while len(collector.messages) < 3 and time.monotonic() < deadline:
            publisher.publish(String(data=f"hello {len(collector.messages)}"))
            time.sleep(0.05)
        received = [msg.data for msg in collector.wait_for(3, timeout=1.0)]
        assert all(text.startswith("hello ") for text in received), received
    finally:
        collector.close()
        ros_node.node.destroy_publisher(publisher)
