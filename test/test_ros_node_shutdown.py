"""vos_node's main(): a signal that shuts the context down mid-callback is a clean stop."""

import pytest
import rclpy

import vos_ros.ros.node as node_module


def _spin_that_fails(shut_down_first):
    def spin(node):
        if shut_down_first:  # as rclpy's SIGTERM handler does, between two callbacks
            rclpy.shutdown()
        raise RuntimeError("Failed to publish: publisher's context is invalid")
    return spin


def test_an_error_after_the_context_was_shut_down_exits_cleanly(monkeypatch):
    monkeypatch.setattr(node_module.rclpy, 'spin', _spin_that_fails(True))
    assert node_module.main(['vos_node', '--ros-args', '-p', 'backend:=flow']) == \
        node_module.EXIT_OK


def test_an_error_while_the_context_is_up_is_not_hidden(monkeypatch):
    monkeypatch.setattr(node_module.rclpy, 'spin', _spin_that_fails(False))
    with pytest.raises(RuntimeError, match='context is invalid'):
        node_module.main(['vos_node', '--ros-args', '-p', 'backend:=flow'])
    assert not rclpy.ok()  # main shut its context down on the way out
