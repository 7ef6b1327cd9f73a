"""vos_node builds its model on the thread that runs it (in-process, real rclpy).

torch's OpenMP threads form one team per calling thread; a model loaded on the node's thread and
stepped on the worker made two teams on a 2-core machine, and every step ~1.7x slower
(bench/README.md "vos_node: one thread for the model"). Speed is measured in the bench; here
the structure that gives it: the backend is created, and the session stepped, on the worker.
"""

import threading
import time

import numpy as np
import pytest
import rclpy
from sensor_msgs.msg import Image

from vos_ros.core.errors import VosError
from vos_ros.core.labels import write_labels
import vos_ros.ros.node as node_module
from vos_ros.ros.node import VosNode


@pytest.fixture
def context_with():
    contexts = []

    def make(*parameters):
        context = rclpy.Context()
        args = ['vos_node', '--ros-args']
        for parameter in parameters:
            args += ['-p', parameter]
        rclpy.init(args=args, context=context)
        contexts.append(context)
        return context

    yield make
    for context in contexts:
        rclpy.try_shutdown(context=context)


def _recording_make_backend(monkeypatch):
    """Patch the node's make_backend to record (thread id, backend) of each call."""
    calls = []
    original = node_module.make_backend

    def recording(*args, **kwargs):
        backend, used = original(*args, **kwargs)
        calls.append((threading.get_ident(), backend))
        step = backend.propagate

        def propagate(*p_args, **p_kwargs):
            calls.append((threading.get_ident(), 'propagate'))
            return step(*p_args, **p_kwargs)

        backend.propagate = propagate
        return backend, used

    monkeypatch.setattr(node_module, 'make_backend', recording)
    return calls


def test_the_backend_is_built_and_stepped_on_the_worker_thread(context_with, monkeypatch,
                                                               tmp_path):
    labels = np.zeros((48, 64), np.uint8)
    labels[10:30, 20:40] = 1
    annotation = tmp_path / 'first.png'
    write_labels(annotation, labels)
    calls = _recording_make_backend(monkeypatch)
    node = VosNode(context=context_with('backend:=flow', f'annotation_path:={annotation}'))
    try:
        worker = node._worker.ident
        assert worker != threading.get_ident()
        assert [thread for thread, _ in calls] == [worker]
        # Two frames through the node's own queue (the first takes the file's annotation,
        # the second is propagated): the step runs where the model was built.
        for count, value in enumerate((9, 12), start=1):
            node._on_image(Image(height=48, width=64, encoding='rgb8', step=64 * 3,
                                 data=np.full((48, 64, 3), value, np.uint8).tobytes()))
            deadline = time.monotonic() + 20.0
            while node.statistics()['published'] < count and time.monotonic() < deadline:
                time.sleep(0.02)
        assert node.statistics()['published'] == 2
        assert [thread for thread, tag in calls if tag == 'propagate'] == [worker]
    finally:
        node.stop()
        node.destroy_node()


def test_an_error_while_building_is_raised_by_the_constructor(context_with, tmp_path):
    missing = tmp_path / 'missing.pt'
    before = {thread.ident for thread in threading.enumerate()}
    with pytest.raises((VosError, ValueError)) as raised:
        VosNode(context=context_with('backend:=memory', f'model_path:={missing}'))
    assert 'missing.pt' in str(raised.value)
    # The worker that failed has ended; nothing is left waiting for frames.
    left = [thread for thread in threading.enumerate()
            if thread.ident not in before and thread.name == 'vos_worker']
    for thread in left:
        thread.join(timeout=5.0)
    assert not any(thread.is_alive() for thread in left)
