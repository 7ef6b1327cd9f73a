"""vos_bag_eval: bags replayed through the real vos_node over DDS on loopback, scored, reported.

Bags are written here with bagio from synthetic clips (so stamps, extra topics and ground truth
are under the test's control); the scores in report.json are checked against masks read back
from DIR/masks and scored again here.
"""

import json
import os
from pathlib import Path
import subprocess
import sys

import numpy as np
import pytest
from rosbags.rosbag2 import Reader

from vos_ros.core.labels import read_labels
from vos_ros.core.labels import write_labels
from vos_ros.core.metrics import evaluate_sequence
from vos_ros.core.synthetic import make_clip
from vos_ros.ros.client import node_command
from vos_ros.tools import bag_eval
from vos_ros.tools import bagio

FRAMES = 20
BASE_NS = 1_700_000_000 * 10**9
# Every run pins the flow backend on the CPU: the test measures the tool, not a model.
NODE_ARGS = '--node-args=-p backend:=flow -p device:=cpu'


@pytest.fixture(scope='module')
def clip():
    return make_clip(num_frames=FRAMES, width=160, height=120, num_objects=1, seed=7)


def write_bag(path, clip, storage='mcap', stamps=None, ground_truth=True, extra_topic=False):
    """Write /image (+ /ground_truth as 0/255, + a /chatter String topic) at 10 Hz."""
    stamps = stamps or [BASE_NS + i * 100_000_000 for i in range(len(clip))]
    store = bagio.typestore()
    with bagio.BagWriter(path, storage) as writer:
        writer.add_topic('/image')
        if extra_topic:
            writer.add_topic('/chatter', 'std_msgs/msg/String')
        for index, (frame, mask) in enumerate(zip(clip.frames, clip.masks)):
            log_time = BASE_NS + index * 100_000_000
            writer.write('/image', log_time, bagio.image_msg(frame, stamps[index]))
            if ground_truth:
                gt = (mask > 0).astype(np.uint8) * 255
                writer.write('/ground_truth', log_time, bagio.image_msg(gt, stamps[index]))
            if extra_topic:
                writer.write('/chatter', log_time,
                             store.types['std_msgs/msg/String'](data=f'frame {index}'))
    return path


@pytest.fixture
def ros_env(monkeypatch):
    """Keep the tool's changes to ROS_DOMAIN_ID & co. inside the test."""
    for name in ('ROS_DOMAIN_ID', 'ROS_AUTOMATIC_DISCOVERY_RANGE', 'ROS_LOG_DIR'):
        if name in os.environ:
            monkeypatch.setenv(name, os.environ[name])
        else:
            monkeypatch.delenv(name, raising=False)


def read_masks(folder):
    names = sorted(n for n in os.listdir(folder) if n.endswith('.png'))
    return [read_labels(os.path.join(folder, n)) for n in names]


# -- without a node ----------------------------------------------------------------------------


def test_matcher_repeated_and_out_of_order_stamps():
    plan = bag_eval.BagPlan()
    plan.stamps = [10, 30, 20, 20, 40]
    matcher = bag_eval.Matcher(plan)
    for index in range(5):
        matcher.published(index, float(index))
    labels = [np.full((2, 2), i, np.uint8) for i in range(6)]
    assert matcher.reply(20, labels[0], 5.0) == 2       # first of the repeated stamp
    assert matcher.reply(30, labels[1], 5.5) == 1       # out of order is fine
    assert matcher.reply(20, labels[2], 6.0) == 3       # then the second one
    assert matcher.reply(20, labels[3], 6.5) is None    # a third has nothing left
    assert matcher.reply(99, labels[4], 7.0) is None
    assert matcher.answered == 3 and matcher.unmatched == 2
    assert matcher.latencies == {2: 3.0, 1: 4.5, 3: 3.0}
    assert matcher.answers[3][0, 0] == 2


def _replay_repeated_stamps(reply_times):
    """40 images, 10/11 and 20/21/22 sharing stamps, published at t = index; ``reply_times``
    maps an image index to the time the node's reply (with that image's stamp) arrives."""
    plan = bag_eval.BagPlan()
    plan.stamps = list(range(40))
    plan.stamps[11] = 10
    plan.stamps[21] = plan.stamps[22] = 20
    matcher = bag_eval.Matcher(plan)
    events = [(float(i), 'publish', i) for i in range(40)]
    events += [(when, 'reply', i) for i, when in reply_times.items()]
    for when, kind, index in sorted(events):
        if kind == 'publish':
            matcher.published(index, when)
        else:
            matcher.reply(plan.stamps[index], np.full((2, 2), index, np.uint8), when)
    return plan, matcher


def test_repeated_stamps_answered_late_are_ambiguous_not_misfiled():
    # The node dropped 10 and 20, 21 (keep-latest) and answered 11 and 22 after they arrived.
    answered = [i for i in range(40) if i not in (10, 20, 21)]
    plan, matcher = _replay_repeated_stamps({i: i + 0.5 for i in answered})
    assert matcher.resolve() == [10, 11, 20, 21, 22]
    assert matcher.ambiguous_replies == 2
    assert not {10, 11, 20, 21, 22} & set(matcher.answers)
    # Every certain pair holds the reply of its own image.
    assert all(labels[0, 0] == index for index, labels in matcher.answers.items())
    assert matcher.answered == 35


def test_repeated_stamps_answered_in_time_pair_with_their_own_frame():
    # Each reply arrives before the next image is published (lock-step): no doubt at all.
    plan, matcher = _replay_repeated_stamps({i: i + 0.5 for i in range(40)})
    assert matcher.resolve() == [] and matcher.ambiguous_replies == 0
    assert matcher.answered == 40
    assert all(labels[0, 0] == index for index, labels in matcher.answers.items())
    # Two replies for three images of one stamp, each after the next image was published:
    # (20, 21), (20, 22) and (21, 22) all fit, so neither reply is certain.
    answered = [i for i in range(40) if i != 20]
    plan, matcher = _replay_repeated_stamps({i: i + 0.5 for i in answered})
    assert matcher.resolve() == [20, 21, 22] and matcher.ambiguous_replies == 2
    assert matcher.answers[19][0, 0] == 19 and matcher.answers[23][0, 0] == 23


def test_ambiguous_frames_are_left_out_of_the_score():
    plan, matcher = _replay_repeated_stamps(
        {i: i + 0.5 for i in range(40) if i not in (10, 20, 21)})
    skip = matcher.resolve()
    truth = []
    for index in range(40):
        labels = np.zeros((8, 8), np.uint8)
        labels[2:6, 2:6] = 1
        truth.append(labels)
    plan.ground_truth = truth
    preds = [truth[i] if i in matcher.answers else np.zeros((8, 8), np.uint8)
             for i in range(40)]
    # Scored as empty masks, the ambiguous frames would count as misses; they are left out.
    assert bag_eval.score(plan, preds)['JF'] < 0.99
    summary = bag_eval.score(plan, preds, skip=skip)
    assert summary['JF'] == pytest.approx(1.0)
    assert summary['frames'] == [i for i in range(1, 39) if i not in skip]


def test_bag_and_folder_scores_follow_one_rule(tmp_path):
    """The same sequence (palette RGB anti-aliased masks, an object entering at frame 4)
    scored by vos_eval and by vos_bag_eval's scoring of a vos_make_bag bag agree."""
    import label_cases
    from vos_ros.tools import evaluate
    from vos_ros.tools import make_bag

    frames, labels = label_cases.make_sequence(late_square_at=4)
    image_dir, _ = label_cases.write_sequence(tmp_path / 'data', 'seq', frames, labels,
                                              'rgb_aa')
    results, _ = evaluate.evaluate_dataset(tmp_path / 'data', tmp_path / 'eval',
                                           backend='flow', progress=False)
    assert make_bag.main([image_dir, str(tmp_path / 'bag'), '--quiet']) == 0
    plan = bag_eval.scan_bag(str(tmp_path / 'bag'), progress=False)
    assert set(np.unique(plan.ground_truth[5]).tolist()) == {0, 1, 2}
    preds = [read_labels(tmp_path / 'eval' / 'seq' / f'{i:05d}.png') for i in range(len(plan))]
    summary = bag_eval.score(plan, preds)
    assert summary['object_ids'] == [1] and summary['unscored_objects'] == [2]
    assert 100.0 * summary['JF'] == pytest.approx(results[0].scores['JF'], abs=1e-6)
    assert results[0].scores['JF'] > 75


def test_ground_truth_paired_by_stamp_then_bag_time_then_order():
    plan = bag_eval.BagPlan()
    plan.stamps = [5, 6, 7]
    plan.log_times = [100, 200, 300]
    masks = [np.full((2, 2), i + 1, np.uint8) for i in range(3)]
    paired, how = bag_eval._pair_ground_truth(
        plan, [(7, 0, masks[2]), (5, 0, masks[0])], '/gt')
    assert how == 'stamp' and paired[0] is masks[0] and paired[1] is None
    assert paired[2] is masks[2]
    # Unset header stamps (0) but the same bag time as the images.
    paired, how = bag_eval._pair_ground_truth(
        plan, [(0, 100, masks[0]), (0, 300, masks[2])], '/gt')
    assert how == 'bag time' and paired == [masks[0], None, masks[2]]
    paired, how = bag_eval._pair_ground_truth(
        plan, [(0, 1, m) for m in masks], '/gt')
    assert how == 'order' and paired == masks
    with pytest.raises(bag_eval.DataError):
        bag_eval._pair_ground_truth(plan, [(0, 1, masks[0])], '/gt')


def test_node_command_comes_from_this_installation():
    command = node_command({'annotation_path': '/data/first.png'},
                           extra_args=['-p backend:=flow', '--ros-args -p device:=cpu'])
    # Never looked up on PATH: the script beside this interpreter, or this interpreter.
    assert command[0] in (str(Path(sys.executable).with_name('vos_node')), sys.executable)
    args = command[command.index('--ros-args'):]
    assert args.count('--ros-args') == 1
    assert args[1:] == ['-p', 'annotation_path:=/data/first.png', '-p', 'backend:=flow',
                        '-p', 'device:=cpu']


def test_corrupt_bag_fails_with_message(tmp_path, clip):
    bag = write_bag(tmp_path / 'bag', clip)
    data_file = next(Path(bag).glob('*.mcap'))
    data_file.write_bytes(data_file.read_bytes()[:len(data_file.read_bytes()) // 2])
    script = Path(sys.executable).with_name('vos_bag_eval')
    command = [str(script)] if script.exists() else [sys.executable, '-m',
                                                     'vos_ros.tools.bag_eval']
    result = subprocess.run(command + [str(bag), '--out', str(tmp_path / 'out'), '--quiet'],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert 'Traceback' not in result.stderr
    assert str(bag) in result.stderr and 'error' in result.stderr


def test_not_a_bag_and_missing_topic(tmp_path, clip, capsys):
    folder = tmp_path / 'folder'
    folder.mkdir()
    assert bag_eval.main([str(folder), '--out', str(tmp_path / 'o'), '--quiet']) == 1
    assert 'metadata.yaml' in capsys.readouterr().err
    bag = write_bag(tmp_path / 'bag', clip)
    assert bag_eval.main([str(bag), '--out', str(tmp_path / 'o'), '--quiet',
                          '--image-topic', '/camera/image']) != 0
    err = capsys.readouterr().err
    assert '/camera/image' in err and '/image' in err


def test_no_ground_truth_needs_annotation(tmp_path, clip, capsys):
    bag = write_bag(tmp_path / 'bag', clip, ground_truth=False)
    assert bag_eval.main([str(bag), '--out', str(tmp_path / 'o'), '--quiet']) == 1
    assert '--annotation' in capsys.readouterr().err


# -- through the real node -----------------------------------------------------------------------


@pytest.mark.timeout(150)
def test_replay_scores_every_frame(tmp_path, clip, ros_env):
    """sqlite3 bag with an extra topic, 0/255 ground truth, lockstep, recorded replies."""
    bag = write_bag(tmp_path / 'bag', clip, storage='sqlite3', extra_topic=True)
    out = tmp_path / 'out'
    record = tmp_path / 'recorded'
    code = bag_eval.main([str(bag), '--out', str(out), '--quiet', '--lockstep', NODE_ARGS,
                          '--record', str(record)])
    assert code == 0, (out / 'node.log').read_text() if (out / 'node.log').exists() else ''
    report = json.loads((out / 'report.json').read_text())
    assert report['frames'] == FRAMES and report['answered'] == FRAMES
    assert report['dropped'] == 0 and report['unmatched_replies'] == 0
    assert report['ignored_topics'] == ['/chatter'] and report['storage'] == 'sqlite3'
    masks = read_masks(out / 'masks')
    assert len(masks) == FRAMES and all(m.shape == (120, 160) for m in masks)
    truth = [(m > 0).astype(np.uint8) for m in clip.masks]
    expected = evaluate_sequence(truth, masks)
    for key in ('JF', 'J', 'F'):
        assert report[key] == pytest.approx(100.0 * expected[key], abs=1e-2)
    # The node really segmented: the object is found where it is (flow backend, easy clip).
    assert report['J'] > 30.0
    for name in ('latency.png', 'jf_per_frame.png', 'side_by_side.mp4', 'annotation.png'):
        assert (out / name).stat().st_size > 0, name
    latency = report['latency_ms']
    assert 0 < latency['p50'] <= latency['p95'] <= latency['max']
    assert report['fps'] > 0
    with Reader(record) as reader:
        assert [c.topic for c in reader.connections] == ['/segmentation']
        assert reader.message_count == FRAMES
        recorded = [bagio.deserialize(data) for _, _, data in reader.messages()]
    stamps = sorted(bagio.stamp_to_ns(m.header.stamp) for m in recorded)
    assert stamps == [BASE_NS + i * 100_000_000 for i in range(FRAMES)]
    assert all(m.encoding == 'mono8' and (m.width, m.height) == (160, 120) for m in recorded)


@pytest.mark.timeout(150)
def test_replay_without_ground_truth_odd_stamps(tmp_path, clip, ros_env):
    """mcap, recorded timing, out-of-order and repeated stamps, no ground truth."""
    stamps = [BASE_NS + i * 100_000_000 for i in range(FRAMES)]
    stamps[5], stamps[6] = stamps[6], stamps[5]
    stamps[10] = stamps[9]
    bag = write_bag(tmp_path / 'bag', clip, stamps=stamps, ground_truth=False)
    annotation = tmp_path / 'first.png'
    write_labels(annotation, clip.masks[0])
    out = tmp_path / 'out'
    code = bag_eval.main([str(bag), '--out', str(out), '--quiet', '--annotation',
                          str(annotation), NODE_ARGS, '--no-video'])
    assert code == 0
    report = json.loads((out / 'report.json').read_text())
    assert report['JF'] is None and report['J'] is None and report['F'] is None
    assert report['frames'] == FRAMES
    assert report['answered'] + report['dropped'] == FRAMES and report['answered'] > 0
    assert report['unmatched_replies'] == 0
    assert len(read_masks(out / 'masks')) == FRAMES
    assert (out / 'latency.png').exists() and not (out / 'jf_per_frame.png').exists()


@pytest.mark.timeout(150)
def test_interrupted_replay_reports_what_it_processed(tmp_path, clip, ros_env, monkeypatch):
    bag = write_bag(tmp_path / 'bag', clip)
    published = bag_eval.Matcher.published

    def interrupt_at_eight(self, index, when):
        if index == 8:
            raise KeyboardInterrupt
        published(self, index, when)

    monkeypatch.setattr(bag_eval.Matcher, 'published', interrupt_at_eight)
    out = tmp_path / 'out'
    code = bag_eval.main([str(bag), '--out', str(out), '--quiet', '--lockstep', NODE_ARGS,
                          '--no-video'])
    assert code == 130
    report = json.loads((out / 'report.json').read_text())
    assert report['interrupted'] is True
    assert report['frames'] == 8 and report['frames_in_bag'] == FRAMES
    assert len(read_masks(out / 'masks')) == 8
    assert report['JF'] is not None


def test_an_annotation_of_another_aspect_ratio_is_refused_before_the_node(tmp_path):
    plan = bag_eval.BagPlan.__new__(bag_eval.BagPlan)
    plan.sizes = [(96, 72)]
    plan.ground_truth = [None]
    square = tmp_path / 'square.png'
    write_labels(square, np.ones((50, 50), np.uint8))
    args = type('Args', (), {'annotation': str(square), 'external': False})()
    with pytest.raises(bag_eval.DataError, match='square.png: mask size 50x50 differs'):
        bag_eval._annotation(args, plan)
    narrower = tmp_path / 'narrower.png'
    write_labels(narrower, np.ones((72, 95), np.uint8))
    args.annotation = str(narrower)
    assert bag_eval._annotation(args, plan).shape == (72, 96)
