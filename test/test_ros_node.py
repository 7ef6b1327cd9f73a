"""vos_node as a real process over real DDS on loopback (domain set by conftest)."""

import subprocess
import sys
import time

from diagnostic_msgs.msg import DiagnosticArray
import numpy as np
import pytest
from sensor_msgs.msg import Image

from vos_ros.core.labels import write_labels
from vos_ros.core.metrics import db_eval_iou
from vos_ros.core.model_io import default_model_path
from vos_ros.core.model_io import read_metadata
from vos_ros.core.session import Session
from vos_ros.core.session import SessionConfig
from vos_ros.core.synthetic import make_clip
from vos_ros.ros.client import node_command
from vos_ros.ros.client import SegmentationClient
from vos_ros.ros.client import start_node
from vos_ros.ros.client import stamp_key
from vos_ros.ros.client import stop_node
from vos_ros.ros.conversions import image_msg_to_array

WIDTH, HEIGHT = 160, 120
ANSWER_TIMEOUT = 15.0


@pytest.fixture(scope='module')
def clip():
    return make_clip(num_frames=16, width=WIDTH, height=HEIGHT, num_objects=2, seed=3)


@pytest.fixture(scope='module')
def annotated_node(clip, ros_context, tmp_path_factory):
    """A vos_node started with the clip's first mask as annotation_path."""
    folder = tmp_path_factory.mktemp('node')
    annotation = folder / 'first.png'
    write_labels(annotation, clip.first_mask)
    log = folder / 'node.log'
    process = start_node({'annotation_path': str(annotation), 'device': 'cpu',
                          'resolution': 0, 'diagnostics_period': 0.5},
                         log_path=str(log))
    client = SegmentationClient(context=ros_context, name='vos_test_client')
    try:
        assert client.wait_for_node(60.0, process), \
            f'node did not come up; log:\n{log.read_text()}'
        yield process, client, log
    finally:
        client.close()
        stop_node(process)


class _Stamps:
    """Increasing stamps shared by the tests of one node."""

    def __init__(self, start=1000.0):
        self.value = start

    def next(self):
        self.value += 0.1
        return round(self.value, 3)


STAMPS = _Stamps()


def _send(client, image, encoding='rgb8'):
    stamp = STAMPS.next()
    msg = client.publish(image, stamp, encoding=encoding)
    return stamp_key(msg.header.stamp)


def _send_msg(client, msg):
    client.publish_msg(msg, STAMPS.next())
    return stamp_key(msg.header.stamp)


def _answer(client, key, timeout=ANSWER_TIMEOUT):
    return client.wait_for_answer(key, timeout)


# The sequence test runs first (file order): the node pairs its annotation with the first frame.
def test_sequence_in_masks_out_with_matching_stamps(annotated_node, clip):
    _, client, log = annotated_node
    headers = {}
    client.node.create_subscription(
        Image, '/segmentation', lambda m: headers.__setitem__(stamp_key(m.header.stamp), m), 50)
    keys = []
    for frame in clip.frames:  # lock-step: every frame must be answered, none dropped
        keys.append(_send(client, frame))
        assert _answer(client, keys[-1]) is not None, log.read_text()
    answers = [client.answers[key][1] for key in keys]
    np.testing.assert_array_equal(answers[0], clip.first_mask)  # annotation paired with frame 0
    ious = [db_eval_iou(gt == i, out == i) for gt, out in zip(clip.masks[1:], answers[1:])
            for i in clip.object_ids]
    assert np.mean(ious) > 0.5, ious
    time.sleep(0.2)
    for key in keys:
        assert headers[key].encoding == 'mono8' and headers[key].header.frame_id == 'camera'
        assert (headers[key].width, headers[key].height) == (WIDTH, HEIGHT)
    # The node is a thin shell: its answers are what the bare session computes.
    session = Session(None, SessionConfig(resolution=0))  # as the node's resolution:=0
    offline = [session.step(f, clip.first_mask if i == 0 else None).labels
               for i, f in enumerate(clip.frames)]
    agreement = np.mean([np.mean(a == b) for a, b in zip(answers, offline)])
    assert agreement > 0.99


def _raw(height, width, encoding, step, data):
    msg = Image(height=height, width=width, encoding=encoding, step=step)
    msg.data = bytes(data)
    return msg


BAD_INPUTS = {
    'wrong data length': lambda f: _raw(HEIGHT, WIDTH, 'rgb8', WIDTH * 3, f.tobytes()[:-7]),
    'unknown encoding': lambda f: _raw(HEIGHT, WIDTH, 'yuv422', WIDTH * 2,
                                       bytes(WIDTH * 2 * HEIGHT)),
    'zero size': lambda f: _raw(0, 0, 'rgb8', 0, b''),
    'step too small': lambda f: _raw(HEIGHT, WIDTH, 'rgb8', WIDTH * 3 - 3,
                                     bytes((WIDTH * 3 - 3) * HEIGHT)),
    # the session refuses images under 2x2: a bad frame too, not a failed one
    'too small': lambda f: _raw(1, 1, 'rgb8', 3, bytes(3)),
}


#: What the node's warning must say for each problem.
BAD_WORDS = {
    'wrong data length': 'data length',
    'unknown encoding': 'unsupported encoding',
    'zero size': 'zero-size',
    'step too small': 'step',
    'too small': 'image is too small: 1x1',
}


def _wait_for_log(log, words, timeout=ANSWER_TIMEOUT):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = [line for line in log.read_text().splitlines() if 'skipping frame' in line]
        if any(words in line for line in lines):
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize('problem', list(BAD_INPUTS))
def test_bad_input_is_skipped_and_next_frame_answered(annotated_node, clip, problem):
    _, client, log = annotated_node
    bad_key = _send_msg(client, BAD_INPUTS[problem](clip.frames[-1]))
    # Wait for the warning before the good frame, or the good one may replace the bad one in
    # the node's frame queue before the worker looks at it.
    assert _wait_for_log(log, BAD_WORDS[problem]), log.read_text()
    good_key = _send(client, clip.frames[-1])
    assert _answer(client, good_key) is not None, log.read_text()
    assert bad_key not in client.answers


def test_padded_rows_and_other_encodings_are_answered(annotated_node, clip):
    _, client, log = annotated_node
    frame = clip.frames[-1]
    reference = _answer(client, _send(client, frame))
    padded = np.concatenate([frame.reshape(HEIGHT, -1), np.full((HEIGHT, 5), 9, np.uint8)],
                            axis=1)
    padded_key = _send_msg(client, _raw(HEIGHT, WIDTH, 'rgb8', WIDTH * 3 + 5, padded.tobytes()))
    padded_answer = _answer(client, padded_key)
    assert padded_answer is not None
    # Same picture again: a correct reading of the padding gives (nearly) the same labels.
    assert np.mean(padded_answer == reference) > 0.98
    for encoding, image in (('bgr8', frame[:, :, ::-1]), ('mono8', frame[:, :, 1])):
        answer = _answer(client, _send(client, np.ascontiguousarray(image), encoding))
        assert answer is not None and answer.shape == (HEIGHT, WIDTH)


def test_size_change_mid_stream_is_answered_at_new_size(annotated_node, clip):
    _, client, log = annotated_node
    import cv2

    bigger = cv2.resize(clip.frames[-1], (WIDTH * 2, HEIGHT * 2))
    answer = _answer(client, _send(client, bigger))
    assert answer is not None and answer.shape == (HEIGHT * 2, WIDTH * 2)
    assert 'image size changed' in log.read_text()
    answer = _answer(client, _send(client, clip.frames[-1]))
    assert answer is not None and answer.shape == (HEIGHT, WIDTH)


def test_reinitialise_via_topic_and_service(annotated_node, clip):
    _, client, log = annotated_node
    # A new object (id 5) given on the annotation topic is tracked from the next frame.
    added = np.zeros((HEIGHT // 2, WIDTH // 2), np.uint8)  # half size: rescaled by the node
    added[2:12, 3:20] = 5
    client.publish_annotation(added)
    deadline = time.monotonic() + ANSWER_TIMEOUT
    answer = None
    while time.monotonic() < deadline:  # the annotation travels on its own topic
        answer = _answer(client, _send(client, clip.frames[-1]))
        if answer is not None and (answer == 5).any():
            break
        time.sleep(0.1)
    assert answer is not None and (answer == 5).any(), log.read_text()
    assert (answer[4:24, 6:40] == 5).all()
    previous = set(np.unique(answer)) - {0, 5}
    assert previous, 'adding an object must keep the tracked ones'

    response = client.reset()
    assert response is not None and response.success
    assert 'annotation_path' in response.message
    answer = _answer(client, _send(client, clip.frames[0]))
    # After a reset the node re-applies its annotation file: exactly the first mask again.
    np.testing.assert_array_equal(answer, clip.first_mask)


def test_overlay_and_diagnostics(annotated_node, clip, ros_context):
    _, client, log = annotated_node
    overlays, diagnostics = [], []
    client.node.create_subscription(Image, '/segmentation/overlay', overlays.append, 10)
    client.node.create_subscription(DiagnosticArray, '/diagnostics', diagnostics.append, 10)
    deadline = time.monotonic() + ANSWER_TIMEOUT
    while time.monotonic() < deadline and not (overlays and len(diagnostics) > 1):
        _answer(client, _send(client, clip.frames[-1]))
        time.sleep(0.2)
    assert overlays and overlays[-1].encoding == 'rgb8'
    overlay = image_msg_to_array(overlays[-1])
    assert overlay.shape == (HEIGHT, WIDTH, 3)
    assert not np.array_equal(overlay, clip.frames[-1])  # objects are coloured in
    ours = [status for array in diagnostics for status in array.status
            if status.name == 'vos_node: segmentation']
    assert ours, (diagnostics, log.read_text())
    values = {kv.key: kv.value for kv in ours[-1].values}
    for key in ('fps', 'latency_p95_ms', 'frames_dropped', 'backend', 'device'):
        assert key in values
    assert values['device'] == 'cpu'
    assert int(values['frames_published']) > 0 and int(values['frames_bad']) >= 0
    assert values['frames_failed'] == '0'  # bad input is skipped as bad, never as a failure
    shipped = default_model_path('memory')  # the default pipeline's model: what ran
    assert values['model'] == shipped, values
    assert values['model_version'] == read_metadata(shipped)['version']


def test_startup_line_names_the_model_and_its_version(annotated_node):
    _, _, log = annotated_node
    shipped = default_model_path('memory')
    lines = [line for line in log.read_text().splitlines() if 'segmenting ' in line]
    assert len(lines) == 1, log.read_text()
    assert (f'with backend adaptive: memory + roi/flow on cpu, model {shipped} version '
            f'{read_metadata(shipped)["version"]}, target_confidence ') in lines[0], lines[0]


def test_waits_without_annotation_then_compressed_input_and_sigint(clip, ros_context,
                                                                   tmp_path):
    log = tmp_path / 'node.log'
    process = start_node({'device': 'cpu', 'image_transport': 'compressed'},
                         remappings={'image': '/cam/image', 'segmentation': '/cam/labels'},
                         node_name='vos_wait', log_path=str(log))
    client = SegmentationClient(image_topic='/cam/image/compressed',
                                segmentation_topic='/cam/labels', vos_node_name='vos_wait',
                                context=ros_context, name='vos_wait_client', compressed=True)
    try:
        assert client.wait_for_node(60.0, process), log.read_text()

        def send(frame):
            return _send(client, frame)

        waiting_key = send(clip.frames[0])
        assert _answer(client, waiting_key, timeout=1.5) is None  # no objects: no answer
        client.publish_annotation(clip.first_mask)
        # The annotation travels on its own topic, so resend until a frame is answered.  The
        # first answered one (in send order) is the annotated frame, even when its answer takes
        # longer than one resend period (a slow CI machine); later ones are propagated.
        deadline = time.monotonic() + ANSWER_TIMEOUT
        keys = []
        while time.monotonic() < deadline:
            keys.append(send(clip.frames[0]))
            if _answer(client, keys[-1], timeout=1.0) is not None:
                break
            if any(key in client.answers for key in keys):
                break
        answered = [key for key in keys if key in client.answers]
        assert answered, log.read_text()
        np.testing.assert_array_equal(client.answers[answered[0]][1], clip.first_mask)
        assert 'waiting for an annotation' in log.read_text()
    finally:
        client.close()
        code = stop_node(process)
    assert code == 0, log.read_text()
    assert 'Traceback' not in log.read_text()


def test_an_annotation_of_another_aspect_ratio_is_refused_and_tracking_goes_on(
        clip, ros_context, tmp_path):
    annotation = tmp_path / 'first.png'
    write_labels(annotation, clip.first_mask)
    log = tmp_path / 'node.log'
    process = start_node({'annotation_path': str(annotation), 'backend': 'flow'},
                         remappings={'image': '/sq/image', 'segmentation': '/sq/labels'},
                         node_name='vos_square', log_path=str(log))
    client = SegmentationClient(image_topic='/sq/image', segmentation_topic='/sq/labels',
                                vos_node_name='vos_square', context=ros_context,
                                name='vos_square_client')
    try:
        assert client.wait_for_node(60.0, process), log.read_text()
        first = _answer(client, _send(client, clip.frames[0]))
        np.testing.assert_array_equal(first, clip.first_mask)
        square = np.zeros((HEIGHT, HEIGHT), np.uint8)
        square[10:30, 10:30] = 7  # a new object on a map of another aspect ratio
        client.publish_annotation(square)
        deadline = time.monotonic() + ANSWER_TIMEOUT
        while 'refused' not in log.read_text() and time.monotonic() < deadline:
            answer = _answer(client, _send(client, clip.frames[1]))
            assert answer is not None, log.read_text()  # the frame is still answered
            assert 7 not in np.unique(answer)
        assert 'annotation: mask size 120x120 differs' in log.read_text(), log.read_text()
        # the objects given at first are still tracked, and nothing else
        answer = _answer(client, _send(client, clip.frames[2]))
        assert set(np.unique(answer)) == {0, *clip.object_ids}
    finally:
        client.close()
        code = stop_node(process)
    assert code == 0, log.read_text()


def _write_bad_png(path):
    path.write_bytes(b'not a png')
    return path


STARTUP_ERRORS = [
    # (parameters, expected exit code, word the one line must name)
    ({'annotation_path': '/nonexistent/first.png'}, 1, 'annotation_path'),
    ({'annotation_path': 'BAD_PNG'}, 1, 'annotation_path'),
    ({'annotation_path': 'EMPTY_PNG'}, 1, 'annotation_path'),
    ({'device': 'gpu'}, 2, 'device'),
    ({'backend': 'no_such_backend'}, 2, 'backend'),
    ({'input_reliability': 'sometimes'}, 2, 'input_reliability'),
    ({'input_depth': 0}, 2, 'input_depth'),
    ({'resolution': 'high'}, 2, 'resolution'),
    ({'model_path': '/nonexistent/model.pt', 'backend': 'flow'}, 1, 'model_path'),
]


def test_startup_errors_exit_non_zero_with_one_line(tmp_path):
    files = {'BAD_PNG': str(_write_bad_png(tmp_path / 'bad.png')),
             'EMPTY_PNG': str(tmp_path / 'empty.png')}
    write_labels(files['EMPTY_PNG'], np.zeros((HEIGHT, WIDTH), np.uint8))
    cases = list(STARTUP_ERRORS)
    if not _cuda_available():
        cases.append(({'device': 'cuda'}, 1, 'CUDA'))
    results = []
    for start in range(0, len(cases), 4):  # a few at a time: start-up time dominates
        batch = []
        for params, _, _ in cases[start:start + 4]:
            params = {k: files.get(v, v) for k, v in params.items()}
            batch.append(subprocess.Popen(node_command(params), stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE, text=True))
        results += [(process, *process.communicate(timeout=90)) for process in batch]
    for (params, code, word), (process, out, err) in zip(cases, results):
        lines = [line for line in (out + err).splitlines() if line.strip()]
        assert process.returncode == code, (params, out, err)
        assert len(lines) == 1 and word in lines[0], (params, lines)
        assert 'Traceback' not in err


def _cuda_available():
    from vos_ros.core.device import cuda_device_count

    return cuda_device_count() > 0


def test_help_lists_parameters():
    result = subprocess.run([sys.executable, '-m', 'vos_ros.ros.node', '--help'],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    for name in ('annotation_path', 'model_path', 'device', 'input_reliability'):
        assert name in result.stdout
