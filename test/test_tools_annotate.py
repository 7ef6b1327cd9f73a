"""Tests of the headless ``annotate`` tool: sources, hints, output and publishing."""

import os
import subprocess
import sys
import time

import cv2
import numpy as np
from PIL import Image
import pytest

from vos_ros.core.labels import read_labels
from vos_ros.tools import annotate


def iou(a, b):
    return np.logical_and(a, b).sum() / max(np.logical_or(a, b).sum(), 1)


def frame(shift=0, height=96, width=128, seed=0):
    """A noisy background with a red disc (object 1) and a blue square (object 2)."""
    rng = np.random.default_rng(seed)
    image = np.clip(rng.normal(120, 6, (height, width, 3)), 0, 255).astype(np.uint8)
    disc = np.zeros((height, width), np.uint8)
    cv2.circle(disc, (40 + shift, 45), 18, 1, -1)
    square = np.zeros((height, width), np.uint8)
    square[20:50, 85:115] = 1
    image[disc > 0] = (210, 40, 40)
    image[square > 0] = (40, 50, 200)
    return image, disc > 0, square > 0


def bbox_text(mask):
    ys, xs = np.nonzero(mask)
    return f'{xs.min()},{ys.min()},{xs.max()},{ys.max()}'


def write_rgb(path, image):
    assert cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    return str(path)


def run(argv):
    return annotate.main([str(a) for a in argv])


def test_box_to_palette_png(tmp_path, capsys):
    image, disc, _ = frame()
    path = write_rgb(tmp_path / 'f.png', image)
    out = tmp_path / 'mask.png'
    assert run(['--image', path, '--box', bbox_text(disc), '--out', out]) == 0
    with Image.open(out) as saved:
        assert saved.mode == 'P'
        assert saved.size == (image.shape[1], image.shape[0])
    labels = read_labels(out)
    assert iou(labels == 1, disc) > 0.85
    assert 'wrote' in capsys.readouterr().out


def test_two_boxes_with_ids(tmp_path):
    image, disc, square = frame()
    path = write_rgb(tmp_path / 'f.png', image)
    out = tmp_path / 'mask.png'
    assert run(['--image', path, '--box', bbox_text(disc), '--object', 3,
                '--box', bbox_text(square), '--object', 5, '--out', out]) == 0
    labels = read_labels(out)
    assert set(np.unique(labels)) == {0, 3, 5}
    assert iou(labels == 3, disc) > 0.85
    assert iou(labels == 5, square) > 0.85


def test_points_alone(tmp_path):
    image, disc, _ = frame()
    path = write_rgb(tmp_path / 'f.png', image)
    out = tmp_path / 'mask.png'
    assert run(['--image', path, '--points', '40,45,1', '5,5,0', '--out', out]) == 0
    assert iou(read_labels(out) == 1, disc) > 0.7


def test_refuses_to_overwrite_without_force(tmp_path, capsys):
    image, disc, _ = frame()
    path = write_rgb(tmp_path / 'f.png', image)
    out = tmp_path / 'mask.png'
    out.write_bytes(b'keep me')
    assert run(['--image', path, '--box', bbox_text(disc), '--out', out]) == 1
    assert out.read_bytes() == b'keep me'
    assert '--force' in capsys.readouterr().err
    assert run(['--image', path, '--box', bbox_text(disc), '--out', out, '--force']) == 0
    assert read_labels(out).any()


@pytest.mark.parametrize('name', ['z.jpg', 'noext', 'folder'])
def test_out_must_be_a_png_file(tmp_path, capsys, name):
    image, disc, _ = frame()
    path = write_rgb(tmp_path / 'f.png', image)
    out = tmp_path / name
    if name == 'folder':
        out.mkdir()
    before = sorted(os.listdir(tmp_path))
    assert run(['--image', path, '--box', bbox_text(disc), '--out', out, '--force']) == 1
    err = capsys.readouterr().err
    expected = 'is a folder' if name == 'folder' else '--out must be a .png file'
    assert len(err.splitlines()) == 1 and expected in err and str(out) in err
    assert sorted(os.listdir(tmp_path)) == before


@pytest.mark.parametrize('name', ['frame.xyz', 'frame', 'folder'])
def test_bad_save_frame_is_refused_before_writing(tmp_path, capsys, name):
    image, disc, _ = frame()
    path = write_rgb(tmp_path / 'f.png', image)
    target = tmp_path / 'ann' / name
    if name == 'folder':
        target.mkdir(parents=True)
    before = sorted(os.listdir(tmp_path))
    assert run(['--image', path, '--box', bbox_text(disc), '--save-frame', target,
                '--out', tmp_path / 'f2.png']) == 1
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and '--save-frame' in err and 'Traceback' not in err
    assert sorted(os.listdir(tmp_path)) == before


def test_save_frame_creates_its_folder(tmp_path):
    image, disc, _ = frame()
    path = write_rgb(tmp_path / 'f.png', image)
    target = tmp_path / 'new' / 'sub' / 'frame.png'
    assert run(['--image', path, '--box', bbox_text(disc), '--save-frame', target,
                '--out', tmp_path / 'm.png']) == 0
    assert np.array_equal(cv2.cvtColor(cv2.imread(str(target)), cv2.COLOR_BGR2RGB), image)


class RectangleSegmenter:
    """Masks exactly the boxes (and click discs): overlaps then follow from the boxes."""

    def box(self, image, box):
        mask = np.zeros(image.shape[:2], bool)
        x0, y0, x1, y1 = (int(v) for v in box)
        mask[y0:y1 + 1, x0:x1 + 1] = True
        return mask

    def clicks(self, image, points, box=None):
        return self.box(image, box)


@pytest.mark.parametrize('boxes, message', [
    (['10,10,50,50', '10,10,50,50'], 'object 1 would have no pixels: object 2 covers'),
    (['10,10,50,50', '10,10,50,29', '10,30,50,50'],
     'object 1 would have no pixels: objects 2, 3 cover'),
])
def test_object_covered_by_others_is_refused(tmp_path, capsys, monkeypatch, boxes, message):
    monkeypatch.setattr(annotate, 'make_segmenter', lambda args: RectangleSegmenter())
    path = write_rgb(tmp_path / 'f.png', frame()[0])
    out = tmp_path / 'm.png'
    argv = ['--image', path, '--out', out]
    for box in boxes:
        argv += ['--box', box]
    assert run(argv) == 1
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and message in err
    assert not out.exists()
    # a partial overlap keeps both objects: the smaller one wins the shared pixels
    assert run(['--image', path, '--box', '10,10,50,50', '--box', '30,30,60,60',
                '--out', out]) == 0
    labels = read_labels(out)
    assert (labels == 1).sum() == 41 * 41 - 21 * 21 and (labels == 2).sum() == 31 * 31


def test_same_box_twice_is_refused(tmp_path, capsys):
    """The real segmenter gives one box the same mask twice: the first object would vanish."""
    image, disc, _ = frame()
    path = write_rgb(tmp_path / 'f.png', image)
    out = tmp_path / 'm.png'
    assert run(['--image', path, '--box', bbox_text(disc), '--box', bbox_text(disc),
                '--out', out]) == 1
    assert 'object 1 would have no pixels: object 2 covers' in capsys.readouterr().err
    assert not out.exists()


def test_from_mask_converts_0_255(tmp_path):
    _, disc, _ = frame()
    source = tmp_path / 'gt.png'
    Image.fromarray(disc.astype(np.uint8) * 255).save(source)
    out = tmp_path / 'mask.png'
    assert run(['--from-mask', source, '--out', out]) == 0
    with Image.open(out) as saved:
        assert saved.mode == 'P'
    assert np.array_equal(read_labels(out), disc.astype(np.uint8))


@pytest.mark.parametrize('kind', ['rgb_aa', 'gray_resized'])
def test_from_mask_snaps_soft_edges_and_says_so_once(tmp_path, capsys, kind):
    import label_cases

    _, labels = label_cases.make_sequence(count=1)
    array = label_cases.messy_mask(labels[0], kind)
    source = tmp_path / 'painted.png'
    Image.fromarray(array).save(source)
    out = tmp_path / 'mask.png'
    assert run(['--from-mask', source, '--out', out]) == 0
    result = read_labels(out)
    assert set(np.unique(result).tolist()) == {0, 1}
    assert iou(result == 1, labels[0] == 1) > 0.95
    notes = [line for line in capsys.readouterr().err.splitlines() if 'note:' in line]
    assert len(notes) == 1 and 'painted.png' in notes[0]


def test_from_mask_size_must_match_frame(tmp_path, capsys):
    image, disc, _ = frame()
    path = write_rgb(tmp_path / 'f.png', image)
    source = tmp_path / 'gt.png'
    Image.fromarray(disc[:50].astype(np.uint8) * 255).save(source)
    assert run(['--image', path, '--from-mask', source, '--out', tmp_path / 'm.png']) == 1
    assert 'but the frame is' in capsys.readouterr().err
    assert not (tmp_path / 'm.png').exists()


@pytest.mark.parametrize('extra, message', [
    (['--box', '500,500,600,600'], 'outside'),
    (['--box', '1,2,3'], 'x0,y0,x1,y1'),
    (['--box', '5,5,40,40', '--object', '1', '--object', '2'], '--object'),
    (['--points', '5,5,0'], 'positive'),
])
def test_bad_hints_exit_nonzero(tmp_path, capsys, extra, message):
    image, _, _ = frame()
    path = write_rgb(tmp_path / 'f.png', image)
    assert run(['--image', path, '--out', tmp_path / 'm.png'] + extra) == 1
    err = capsys.readouterr().err
    assert message in err and 'Traceback' not in err
    assert not (tmp_path / 'm.png').exists()


def test_unreadable_image(tmp_path, capsys):
    bad = tmp_path / 'bad.jpg'
    bad.write_bytes(b'not an image')
    assert run(['--image', bad, '--box', '1,1,9,9', '--out', tmp_path / 'm.png']) == 1
    assert 'cannot read image' in capsys.readouterr().err


def test_no_source_is_an_error(tmp_path, capsys):
    assert run(['--box', '1,1,9,9', '--out', tmp_path / 'm.png']) == 1
    assert 'source' in capsys.readouterr().err


def test_sequence_frame_choice(tmp_path):
    folder = tmp_path / 'seq'
    folder.mkdir()
    discs = []
    for index, shift in enumerate((0, 10, 20)):
        image, disc, _ = frame(shift=shift, seed=index)
        write_rgb(folder / f'{index:05d}.jpg', image)
        discs.append(disc)
    out = tmp_path / 'm.png'
    assert run(['--sequence', folder, '--frame', 2, '--box', bbox_text(discs[2]),
                '--out', out]) == 0
    assert iou(read_labels(out) == 1, discs[2]) > 0.8


def test_sequence_in_davis_root_needs_a_name(tmp_path, capsys):
    for name in ('a', 'b'):
        folder = tmp_path / 'JPEGImages' / '480p' / name
        folder.mkdir(parents=True)
        write_rgb(folder / '00000.jpg', frame()[0])
    out = tmp_path / 'm.png'
    assert run(['--sequence', tmp_path, '--box', '22,27,58,63', '--out', out]) == 1
    assert '--sequence-name' in capsys.readouterr().err
    assert run(['--sequence', tmp_path, '--sequence-name', 'b', '--box', '22,27,58,63',
                '--out', out]) == 0


def test_video_frame_choice(tmp_path):
    path = str(tmp_path / 'clip.avi')
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*'MJPG'), 5, (128, 96))
    assert writer.isOpened()
    discs = []
    for shift in (0, 8, 16, 24):
        image, disc, _ = frame(shift=shift)
        writer.write(cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        discs.append(disc)
    writer.release()
    out = tmp_path / 'm.png'
    assert run(['--video', path, '--frame', 3, '--box', bbox_text(discs[3]), '--out', out]) == 0
    assert iou(read_labels(out) == 1, discs[3]) > 0.8
    assert run(['--video', path, '--frame', 9, '--box', '1,1,9,9', '--out', out,
                '--force']) == 1


def test_bag_topic_frame_choice(tmp_path, capsys):
    from vos_ros.tools.bagio import BagWriter
    from vos_ros.tools.bagio import image_msg

    bag = tmp_path / 'bag'
    discs = []
    with BagWriter(str(bag)) as writer:
        writer.add_topic('/camera/image')
        writer.add_topic('/ground_truth')  # label maps, as vos_make_bag writes beside images
        for index, shift in enumerate((0, 25)):
            image, disc, _ = frame(shift=shift)
            writer.write('/camera/image', 1000 + index, image_msg(image, 1000 + index))
            writer.write('/ground_truth', 1000 + index,
                         image_msg(disc.astype(np.uint8), 1000 + index, encoding='mono8'))
            discs.append(disc)
    out = tmp_path / 'm.png'
    assert run(['--bag', bag, '--topic', '/camera/image', '--frame', 1,
                '--box', bbox_text(discs[1]), '--out', out]) == 0
    assert iou(read_labels(out) == 1, discs[1]) > 0.8
    assert run(['--bag', bag, '--topic', '/nope', '--box', '1,1,9,9', '--out', out,
                '--force']) == 1
    assert '/camera/image' in capsys.readouterr().err
    # The bag's only camera topic is used when --topic is left out (not the label maps).
    out.unlink()
    assert run(['--bag', bag, '--box', bbox_text(discs[0]), '--out', out]) == 0
    assert iou(read_labels(out) == 1, discs[0]) > 0.8


def test_bag_compressed_topic(tmp_path, capsys):
    from vos_ros.tools.bagio import BagWriter
    from vos_ros.tools.annotate import COMPRESSED_TYPE
    from vos_ros.tools.bagio import typestore

    store = typestore()
    header = store.types['std_msgs/msg/Header'](
        stamp=store.types['builtin_interfaces/msg/Time'](sec=1, nanosec=0), frame_id='cam')
    image, disc, _ = frame(shift=10)
    ok, png = cv2.imencode('.png', cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    assert ok
    messages = [store.types[COMPRESSED_TYPE](header=header, format='png', data=png.reshape(-1)),
                store.types[COMPRESSED_TYPE](header=header, format='jpeg',
                                             data=np.arange(50, dtype=np.uint8))]
    bag = tmp_path / 'bag'
    with BagWriter(str(bag)) as writer:
        writer.add_topic('/camera/image/compressed', COMPRESSED_TYPE)
        for index, msg in enumerate(messages):
            writer.write('/camera/image/compressed', 1000 + index, msg)
    out = tmp_path / 'm.png'
    assert run(['--bag', bag, '--box', bbox_text(disc), '--out', out]) == 0
    assert iou(read_labels(out) == 1, disc) > 0.8
    # A corrupt compressed frame is a one-line error naming the format, not a traceback.
    assert run(['--bag', bag, '--frame', 1, '--box', bbox_text(disc), '--out', out,
                '--force']) == 1
    assert 'jpeg' in capsys.readouterr().err


def test_no_display_points_to_headless_flags(tmp_path, monkeypatch, capsys):
    image, _, _ = frame()
    path = write_rgb(tmp_path / 'f.png', image)
    monkeypatch.delenv('DISPLAY', raising=False)
    monkeypatch.delenv('WAYLAND_DISPLAY', raising=False)
    assert run(['--image', path, '--out', tmp_path / 'm.png']) == 2
    err = capsys.readouterr().err
    assert 'display' in err and '--box' in err


def test_publish_without_node_fails_clearly(tmp_path, capsys):
    image, disc, _ = frame()
    path = write_rgb(tmp_path / 'f.png', image)
    out = tmp_path / 'm.png'
    code = run(['--image', path, '--box', bbox_text(disc), '--out', out, '--publish',
                '--annotation-topic', f'/annotate_test_{os.getpid()}/annotation',
                '--timeout', '1'])
    assert code == 1
    err = capsys.readouterr().err
    assert 'no node listens' in err and f'{out} was written all the same' in err
    assert out.exists()


LISTENER = r"""
import sys, time
import numpy as np
import rclpy
from sensor_msgs.msg import Image
rclpy.init()
node = rclpy.create_node('annotation_listener')
got = []
node.create_subscription(Image, sys.argv[1], got.append, 10)
print('ready', flush=True)
deadline = time.monotonic() + 60
while not got and time.monotonic() < deadline:
    rclpy.spin_once(node, timeout_sec=0.1)
msg = got[0]
np.save(sys.argv[2], np.frombuffer(bytes(msg.data), np.uint8).reshape(msg.height, msg.width))
print(msg.encoding, flush=True)
"""


def test_publish_reaches_a_listener(tmp_path):
    image, disc, _ = frame()
    path = write_rgb(tmp_path / 'f.png', image)
    topic = f'/annotate_test_{os.getpid()}/annotation'
    received = tmp_path / 'received.npy'
    listener = subprocess.Popen([sys.executable, '-c', LISTENER, topic, str(received)],
                                stdout=subprocess.PIPE, text=True)
    try:
        assert listener.stdout.readline().strip() == 'ready'
        out = tmp_path / 'm.png'
        started = time.monotonic()
        code = run(['--image', path, '--box', bbox_text(disc), '--out', out, '--publish',
                    '--annotation-topic', topic, '--timeout', '20'])
        assert code == 0, f'publish failed after {time.monotonic() - started:.1f} s'
        encoding = listener.communicate(timeout=30)[0].strip()
    finally:
        listener.kill()
    assert encoding == 'mono8'
    assert np.array_equal(np.load(received), read_labels(out))


def _stub_publisher(monkeypatch):
    """Replace the ROS publisher by a list of what it was given (no node, no DDS)."""
    sent = []
    monkeypatch.setattr(annotate, 'publish_labels',
                        lambda labels, topic, timeout, frame_id: sent.append(
                            (labels.copy(), topic, frame_id)))
    return sent


@pytest.mark.parametrize('mode', ['box', 'points', 'from-mask', 'from-mask alone',
                                  'live topic'])
def test_publish_without_out_writes_no_file(tmp_path, monkeypatch, capsys, mode):
    """The README's re-target step: a mask sent live is not stopped by the first step's file."""
    image, disc, _ = frame()
    path = write_rgb(tmp_path / 'f.png', image)
    gt = tmp_path / 'gt.png'
    Image.fromarray(disc.astype(np.uint8) * 255).save(gt)
    monkeypatch.chdir(tmp_path)
    (tmp_path / annotate.DEFAULT_OUT).write_bytes(b'the node reads me')
    sent = _stub_publisher(monkeypatch)
    monkeypatch.setattr(annotate, 'grab_topic_frame', lambda topic, timeout: (image, 'cam'))
    argv = {'box': ['--image', path, '--box', bbox_text(disc)],
            'points': ['--image', path, '--points', '40,45,1', '5,5,0'],
            'from-mask': ['--image', path, '--from-mask', gt],
            'from-mask alone': ['--from-mask', gt],
            # a frame asked for by name is still written: only the unasked mask file is not
            'live topic': ['--topic', '/camera/image_raw', '--box', bbox_text(disc),
                           '--save-frame', 'frame.png']}[mode]
    before = set(os.listdir(tmp_path))
    assert run(argv + ['--publish']) == 0
    out = capsys.readouterr().out
    assert 'no file written' in out and 'published to /vos_node/annotation' in out
    assert (tmp_path / annotate.DEFAULT_OUT).read_bytes() == b'the node reads me'
    assert set(os.listdir(tmp_path)) - before == ({'frame.png'} if mode == 'live topic'
                                                  else set())
    (labels, topic, frame_id), = sent
    assert topic == '/vos_node/annotation'
    assert frame_id == ('cam' if mode == 'live topic' else '')
    assert iou(labels == 1, disc) > (0.7 if mode == 'points' else 0.85)


def test_publish_without_out_failing_says_no_file_was_written(tmp_path, monkeypatch, capsys):
    image, disc, _ = frame()
    path = write_rgb(tmp_path / 'f.png', image)
    monkeypatch.chdir(tmp_path)
    code = run(['--image', path, '--box', bbox_text(disc), '--publish',
                '--annotation-topic', f'/annotate_test_{os.getpid()}/nobody', '--timeout', '1'])
    assert code == 1
    err = capsys.readouterr().err
    assert 'no node listens' in err and 'no file was written: pass --out FILE' in err
    assert sorted(os.listdir(tmp_path)) == ['f.png']


def test_an_existing_file_stops_only_an_out_that_is_written(tmp_path, monkeypatch, capsys):
    image, disc, _ = frame()
    path = write_rgb(tmp_path / 'f.png', image)
    monkeypatch.chdir(tmp_path)
    default = tmp_path / annotate.DEFAULT_OUT
    default.write_bytes(b'keep me')
    sent = _stub_publisher(monkeypatch)
    box = ['--image', path, '--box', bbox_text(disc)]
    # Without --publish the default file is the result: refused, saying it is the default.
    assert run(box) == 1
    err = capsys.readouterr().err
    assert f'{annotate.DEFAULT_OUT} exists; it is the default --out; pass --out FILE' in err
    assert '--publish without --out' in err
    # The window saves to --out before it publishes (key P), with or without --publish.
    windows = []
    monkeypatch.setattr('vos_ros.tools.annotate_window.run_window',
                        lambda source, args: windows.append(args.out) or 0)
    for extra in ([], ['--publish']):
        assert run(['--image', path] + extra) == 1
        err = capsys.readouterr().err
        assert 'the default --out, where the window saves' in err
        assert '--publish without' not in err
    assert not windows
    default.unlink()
    assert run(['--image', path, '--publish']) == 0
    assert windows == [annotate.DEFAULT_OUT]
    # An --out the user names keeps its protection, --publish or not; nothing is sent.
    out = tmp_path / 'mine.png'
    out.write_bytes(b'mine')
    assert run(box + ['--out', out, '--publish']) == 1
    assert 'mine.png exists; pass --force to overwrite it' in capsys.readouterr().err
    assert out.read_bytes() == b'mine' and not sent
    assert run(box + ['--out', out, '--publish', '--force']) == 0
    assert iou(read_labels(out) == 1, disc) > 0.85 and len(sent) == 1


TALKER = r"""
import sys, time
import numpy as np
import rclpy
from sensor_msgs.msg import Image
rclpy.init()
node = rclpy.create_node('camera_talker')
pub = node.create_publisher(Image, sys.argv[1], 10)
data = np.load(sys.argv[2])
msg = Image(height=data.shape[0], width=data.shape[1], encoding='bgr8', step=data.shape[1] * 3)
msg.header.frame_id = 'test_camera'
msg.data = np.ascontiguousarray(data[:, :, ::-1]).tobytes()
print('ready', flush=True)
deadline = time.monotonic() + 60
while time.monotonic() < deadline:
    pub.publish(msg)
    rclpy.spin_once(node, timeout_sec=0.1)
"""


def test_live_topic_grab(tmp_path):
    image, disc, _ = frame(shift=12)
    np.save(tmp_path / 'frame.npy', image)
    topic = f'/annotate_test_{os.getpid()}/image'
    talker = subprocess.Popen([sys.executable, '-c', TALKER, topic, str(tmp_path / 'frame.npy')],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert talker.stdout.readline().strip() == 'ready'
        out = tmp_path / 'm.png'
        assert run(['--topic', topic, '--box', bbox_text(disc), '--out', out,
                    '--save-frame', tmp_path / 'frame.png', '--timeout', '20']) == 0
    finally:
        talker.kill()
        talker.wait()
    assert iou(read_labels(out) == 1, disc) > 0.85
    saved = cv2.cvtColor(cv2.imread(str(tmp_path / 'frame.png')), cv2.COLOR_BGR2RGB)
    assert np.array_equal(saved, image)


def test_live_topic_timeout(tmp_path, capsys):
    assert run(['--topic', f'/annotate_test_{os.getpid()}/silent', '--box', '1,1,9,9',
                '--out', tmp_path / 'm.png', '--timeout', '0.5']) == 1
    assert 'no image arrived' in capsys.readouterr().err
