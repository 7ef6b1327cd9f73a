"""vos_make_bag: DAVIS sequences, image folders and videos into rosbag2, read back with rosbags."""

import os
from pathlib import Path

import cv2
import numpy as np
import pytest
from rosbags.rosbag2 import Reader
from rosbags.typesys import get_typestore
from rosbags.typesys import Stores

from vos_ros.core.davis import read_image
from vos_ros.core.labels import read_labels
from vos_ros.core.synthetic import make_clip
from vos_ros.core.synthetic import write_davis
from vos_ros.tools import make_bag

TYPESTORE = get_typestore(Stores.ROS2_JAZZY)
FRAMES = 6


@pytest.fixture(scope='module')
def dataset(tmp_path_factory):
    """A DAVIS root with two sequences: 'multi' (2 objects, palette masks), 'single' (0/255)."""
    root = tmp_path_factory.mktemp('davis')
    write_davis(root, 'multi', make_clip(num_frames=FRAMES, width=64, height=48, num_objects=2,
                                         seed=1))
    single = make_clip(num_frames=FRAMES, width=64, height=48, num_objects=1, seed=2)
    image_dir, mask_dir = write_davis(root, 'single', single)
    for name in os.listdir(mask_dir):  # rewrite as DAVIS-2016 style 0/255 grayscale masks
        path = os.path.join(mask_dir, name)
        cv2.imwrite(path, (read_labels(path) > 0).astype(np.uint8) * 255)
    return root


def read_bag(path):
    """Return {topic: [(log_time, msg)]} read with rosbags directly (not through bagio)."""
    result = {}
    with Reader(Path(path)) as reader:
        for connection, timestamp, data in reader.messages():
            msg = TYPESTORE.deserialize_cdr(data, connection.msgtype)
            result.setdefault(connection.topic, []).append((timestamp, msg))
    return result


def pixels(msg, channels):
    shape = (msg.height, msg.width, channels) if channels > 1 else (msg.height, msg.width)
    return np.asarray(msg.data, dtype=np.uint8).reshape(shape)


@pytest.mark.parametrize('storage', ['mcap', 'sqlite3'])
def test_davis_sequence_roundtrip(dataset, tmp_path, storage):
    seq_dir = dataset / 'JPEGImages' / '480p' / 'multi'
    out = tmp_path / 'bag'
    code = make_bag.main([str(seq_dir), str(out), '--storage', storage, '--fps', '5',
                          '--start-time', '100.25', '--quiet'])
    assert code == 0
    assert list(out.glob('*.mcap' if storage == 'mcap' else '*.db3'))
    topics = read_bag(out)
    assert set(topics) == {'/image', '/ground_truth'}
    images, truths = topics['/image'], topics['/ground_truth']
    assert len(images) == FRAMES and len(truths) == FRAMES
    frame_paths = sorted(seq_dir.iterdir())
    mask_dir = dataset / 'Annotations' / '480p' / 'multi'
    for index, ((log_time, image), (gt_time, gt)) in enumerate(zip(images, truths)):
        expected = 100_250_000_000 + index * 200_000_000
        stamp = image.header.stamp.sec * 10**9 + image.header.stamp.nanosec
        assert log_time == expected and stamp == expected and gt_time == expected
        assert gt.header.stamp.sec == image.header.stamp.sec
        assert gt.header.stamp.nanosec == image.header.stamp.nanosec
        assert image.encoding == 'rgb8' and image.step == image.width * 3
        assert gt.encoding == 'mono8' and gt.step == gt.width
        assert np.array_equal(pixels(image, 3), read_image(frame_paths[index]))
        assert np.array_equal(pixels(gt, 1), read_labels(mask_dir / f'{index:05d}.png'))
    assert set(np.unique(pixels(truths[0][1], 1))) == {0, 1, 2}


def test_dataset_root_with_sequence_and_0_255_masks(dataset, tmp_path):
    out = tmp_path / 'bag'
    assert make_bag.main([str(dataset), str(out), '--sequence', 'single', '--quiet']) == 0
    truths = read_bag(out)['/ground_truth']
    assert len(truths) == FRAMES
    for _, gt in truths:
        assert set(np.unique(pixels(gt, 1))) <= {0, 1}
    assert any(pixels(gt, 1).any() for _, gt in truths)


def test_dataset_root_needs_sequence(dataset, tmp_path, capsys):
    assert make_bag.main([str(dataset), str(tmp_path / 'bag'), '--quiet']) == 1
    assert '--sequence' in capsys.readouterr().err


def test_image_folder_without_masks_and_bgr(dataset, tmp_path):
    folder = tmp_path / 'frames'
    folder.mkdir()
    sources = sorted((dataset / 'JPEGImages' / '480p' / 'multi').iterdir())[:4]
    for path in sources:
        (folder / path.name).write_bytes(path.read_bytes())
    out = tmp_path / 'bag'
    assert make_bag.main([str(folder), str(out), '--encoding', 'bgr8', '--quiet']) == 0
    topics = read_bag(out)
    assert set(topics) == {'/image'}
    assert [m.encoding for _, m in topics['/image']] == ['bgr8'] * 4
    assert np.array_equal(pixels(topics['/image'][0][1], 3)[:, :, ::-1], read_image(sources[0]))


def test_video_with_masks_folder(tmp_path):
    clip = make_clip(num_frames=5, width=64, height=48, num_objects=1, seed=4)
    video = tmp_path / 'clip.avi'
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*'MJPG'), 5.0, (64, 48))
    if not writer.isOpened():
        pytest.skip('this OpenCV build cannot write MJPG')
    for frame in clip.frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    masks = tmp_path / 'masks'
    masks.mkdir()
    cv2.imwrite(str(masks / '00002.png'), clip.masks[2] * 255)
    out = tmp_path / 'bag'
    assert make_bag.main([str(video), str(out), '--masks', str(masks), '--quiet']) == 0
    topics = read_bag(out)
    assert len(topics['/image']) == 5
    # Only frame 2 has a mask; its message carries frame 2's stamp.
    assert len(topics['/ground_truth']) == 1
    assert topics['/ground_truth'][0][0] == topics['/image'][2][0]
    assert np.array_equal(pixels(topics['/ground_truth'][0][1], 1), clip.masks[2])
    # The video's own rate (5 fps) is used when --fps is not given: 0.2 s apart.
    assert topics['/image'][1][0] - topics['/image'][0][0] == 200_000_000


def test_existing_output_and_missing_source(dataset, tmp_path, capsys):
    seq_dir = dataset / 'JPEGImages' / '480p' / 'multi'
    out = tmp_path / 'bag'
    assert make_bag.main([str(seq_dir), str(out), '--quiet', '--max-frames', '2']) == 0
    assert make_bag.main([str(seq_dir), str(out), '--quiet']) == 1
    assert 'already exists' in capsys.readouterr().err
    assert make_bag.main([str(seq_dir), str(out), '--quiet', '--overwrite']) == 0
    assert len(read_bag(out)['/image']) == FRAMES
    assert make_bag.main([str(tmp_path / 'nothing'), str(tmp_path / 'b2'), '--quiet']) == 1
    assert 'not found' in capsys.readouterr().err


def test_bagio_decodes_padded_bgr_and_rejects_garbage():
    from vos_ros.core.errors import DataError
    from vos_ros.tools import bagio

    rgb = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    msg = bagio.image_msg(rgb[:, :, ::-1], 123, encoding='bgr8')
    padded = np.zeros((5, 7 * 3 + 3), np.uint8)   # rows padded to step = 24 bytes
    padded[:, :21] = rgb[:, :, ::-1].reshape(5, 21)
    msg.step, msg.data = 24, padded.reshape(-1)
    decoded = bagio.deserialize(bagio.serialize(msg))
    assert np.array_equal(bagio.image_rgb(decoded), rgb)
    msg.data = padded.reshape(-1)[:-30]            # shorter than step * height
    with pytest.raises(DataError, match='does not match step x height'):
        bagio.image_array(msg)
    with pytest.raises(DataError):
        bagio.deserialize(b'\x00\x01\x00\x00garbage')


def _bag_state(path):
    """Return ``{file name: bytes}`` of a bag folder, to show it was left untouched."""
    return {name: (path / name).read_bytes() for name in sorted(os.listdir(path))}


def test_negative_max_frames_is_refused_before_touching_out(dataset, tmp_path, capsys):
    seq_dir = dataset / 'JPEGImages' / '480p' / 'multi'
    out = tmp_path / 'bag'
    assert make_bag.main([str(seq_dir), str(out), '--quiet', '--max-frames', '2']) == 0
    before = _bag_state(out)
    capsys.readouterr()
    for value in ('-1', 'x'):
        with pytest.raises(SystemExit) as stop:
            make_bag.main([str(seq_dir), str(out), '--quiet', '--overwrite',
                           '--max-frames', value])
        assert stop.value.code == 2
        err = capsys.readouterr().err
        assert err.count('\n') == 1 and 'argument --max-frames:' in err, err
        assert 'no frames' not in err
    assert _bag_state(out) == before
    # 0 keeps its meaning: every frame
    assert make_bag.main([str(seq_dir), str(out), '--quiet', '--overwrite',
                          '--max-frames', '0']) == 0
    assert len(read_bag(out)['/image']) == FRAMES


def test_failed_write_keeps_the_existing_bag(dataset, tmp_path, capsys):
    sources = sorted((dataset / 'JPEGImages' / '480p' / 'multi').iterdir())
    folder = tmp_path / 'frames'
    folder.mkdir()
    for path in sources[:3]:
        (folder / path.name).write_bytes(path.read_bytes())
    out = tmp_path / 'bag'
    assert make_bag.main([str(folder), str(out), '--quiet']) == 0
    before = _bag_state(out)
    (folder / '00003.jpg').write_bytes(b'not a jpeg')  # fails after three frames are written
    assert make_bag.main([str(folder), str(out), '--quiet', '--overwrite']) == 1
    assert 'cannot read image' in capsys.readouterr().err
    assert _bag_state(out) == before
    assert len(read_bag(out)['/image']) == 3
    # no temporary folder is left next to OUT, and a failed new OUT is not created
    assert make_bag.main([str(folder), str(tmp_path / 'new'), '--quiet']) == 1
    assert sorted(os.listdir(tmp_path)) == ['bag', 'frames']
    # the next run is not told that OUT already exists
    (folder / '00003.jpg').unlink()
    assert make_bag.main([str(folder), str(tmp_path / 'new'), '--quiet']) == 0
    # the storage file keeps OUT's name, as rosbags gives it
    assert sorted(os.listdir(tmp_path / 'new')) == ['metadata.yaml', 'new.mcap']


def test_interrupt_keeps_the_existing_bag(dataset, tmp_path, capsys, monkeypatch):
    seq_dir = dataset / 'JPEGImages' / '480p' / 'multi'
    out = tmp_path / 'bag'
    assert make_bag.main([str(seq_dir), str(out), '--quiet', '--max-frames', '2']) == 0
    before = _bag_state(out)
    calls = []
    image_msg = make_bag.bagio.image_msg

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return image_msg(*args, **kwargs)

    monkeypatch.setattr(make_bag.bagio, 'image_msg', interrupted)
    assert make_bag.main([str(seq_dir), str(out), '--quiet', '--overwrite']) == 130
    assert 'left as it was' in capsys.readouterr().err
    assert _bag_state(out) == before
    assert sorted(os.listdir(tmp_path)) == ['bag']


def test_source_without_frames_writes_nothing(tmp_path):
    from vos_ros.core.errors import VosError

    empty = make_bag.FrameSource(iter(()), 0, {}, 'empty source')
    with pytest.raises(VosError, match='empty source has no frames'):
        make_bag.make_bag(empty, tmp_path / 'bag', progress=False)
    assert not os.listdir(tmp_path)


def test_missing_mask_folder_is_an_error(dataset, tmp_path, capsys):
    seq_dir = dataset / 'JPEGImages' / '480p' / 'multi'
    out = tmp_path / 'bag'
    missing = tmp_path / 'nonexistent'
    for source in ([str(seq_dir)], [str(dataset), '--sequence', 'multi']):
        assert make_bag.main(source + [str(out), '--masks', str(missing), '--quiet']) == 1
        err = capsys.readouterr().err
        assert err == f'vos_make_bag: error: mask folder not found: {missing}\n'
        assert not out.exists()


def test_masks_follow_the_shared_size_rule(dataset, tmp_path, capsys, caplog):
    """A mask a pixel narrower than its frame is resized (said once); another aspect ratio is
    another video's mask: an error, and the bag already at OUT is kept."""
    sources = sorted((dataset / 'JPEGImages' / '480p' / 'single').iterdir())[:3]
    folder, masks = tmp_path / 'frames', tmp_path / 'masks'
    folder.mkdir()
    masks.mkdir()
    truth = []
    for path in sources:
        (folder / path.name).write_bytes(path.read_bytes())
        labels = np.zeros((48, 64), np.uint8)
        labels[10:30, 20:40] = 1
        truth.append(labels)
        cv2.imwrite(str(masks / (path.stem + '.png')), labels[:, :63] * 255)  # 63x48
    out = tmp_path / 'bag'
    with caplog.at_level('WARNING'):
        assert make_bag.main([str(folder), str(out), '--masks', str(masks), '--quiet']) == 0
    resized = [r.getMessage() for r in caplog.records if 'resized' in r.getMessage()]
    assert len(resized) == 1 and 'and 2 more' in resized[0], resized
    ground_truth = read_bag(out)['/ground_truth']
    assert len(ground_truth) == 3
    for (_, msg), labels in zip(ground_truth, truth):
        assert (msg.width, msg.height) == (64, 48)
        got = pixels(msg, 1)
        assert set(np.unique(got)) == {0, 1}  # 255 read as object 1, no blended ids
        overlap = np.logical_and(got == 1, labels == 1).sum()
        assert overlap / np.logical_or(got == 1, labels == 1).sum() > 0.9
    before = _bag_state(out)
    cv2.imwrite(str(masks / (sources[1].stem + '.png')), np.zeros((48, 48), np.uint8))
    capsys.readouterr()
    assert make_bag.main([str(folder), str(out), '--masks', str(masks), '--quiet',
                          '--overwrite']) == 1
    err = capsys.readouterr().err
    assert 'another aspect ratio' in err and sources[1].stem in err, err
    assert _bag_state(out) == before
