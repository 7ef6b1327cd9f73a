"""vos_demo end to end: a synthetic clip through a real vos_node over loopback DDS."""

import json
import os

import numpy as np
import pytest

from vos_ros.core.labels import read_labels
from vos_ros.core.synthetic import make_clip
from vos_ros.core.synthetic import write_davis
from vos_ros.tools import demo


def test_demo_writes_masks_video_and_scores(tmp_path, capsys, monkeypatch):
    for name in ('ROS_DOMAIN_ID', 'ROS_AUTOMATIC_DISCOVERY_RANGE'):
        monkeypatch.setenv(name, os.environ[name])  # the demo picks its own domain: restore
    out = tmp_path / 'demo'
    code = demo.main(['--frames', '12', '--width', '160', '--height', '120', '--rate', '10',
                      '--device', 'cpu', '--seed', '4', '--target-confidence', '80',
                      '--out', str(out)])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    summary = json.loads((out / 'summary.json').read_text())
    # the node's own report names the pipeline and the target the demo asked for
    assert summary['node_backend'].startswith('adaptive: memory'), summary
    assert summary['node_target_confidence'] == 80
    assert 'node: backend adaptive: memory' in printed.out
    assert 'target_confidence 80' in printed.out
    assert summary['frames_sent'] == 12
    assert summary['frames_answered'] + summary['frames_dropped'] == 12
    assert summary['frames_answered'] >= 6  # a small clip at 10 Hz: most frames are answered
    assert 'J&F' in printed.out and summary['JF'] > 40
    clip = make_clip(num_frames=12, width=160, height=120, num_objects=2, seed=4)
    np.testing.assert_array_equal(read_labels(out / 'AnnotatedFrame.png'), clip.first_mask)
    masks = sorted((out / 'masks').glob('*.png'))
    assert len(masks) == summary['frames_answered']
    assert (out / 'masks' / '00000.png').exists()
    video = summary['outputs']['video']
    assert video and os.path.getsize(video) > 0


def test_demo_bad_arguments_give_one_line(tmp_path, capsys, monkeypatch):
    for name in ('ROS_DOMAIN_ID', 'ROS_AUTOMATIC_DISCOVERY_RANGE'):
        monkeypatch.setenv(name, os.environ[name])  # the demo sets its own domain: restore
    assert demo.main(['--video', str(tmp_path / 'missing.mp4'), '--out', str(tmp_path)]) == 1
    assert 'video file not found' in capsys.readouterr().err
    assert demo.main(['--rate', '0', '--out', str(tmp_path)]) == 1
    assert '--rate' in capsys.readouterr().err
    assert demo.main(['--target-confidence', '150', '--out', str(tmp_path)]) == 1
    assert 'must lie in 0..100' in capsys.readouterr().err
    assert demo.main(['--backend', 'flow', '--target-confidence', '70',
                      '--out', str(tmp_path)]) == 1
    assert 'flow is the cheap path itself' in capsys.readouterr().err
    assert demo.main(['--domain-id', '500', '--frames', '3', '--out', str(tmp_path)]) == 1
    assert "ROS_DOMAIN_ID='500' is not a domain id (0..232)" in capsys.readouterr().err
    for text in ('high', 'nan', '1e400'):
        with pytest.raises(SystemExit) as stop:
            demo.main(['--target-confidence', text, '--out', str(tmp_path)])
        assert stop.value.code == 2
        err = capsys.readouterr().err
        assert 'argument --target-confidence:' in err and f'got {text!r}' in err


def test_demo_target_keeps_the_type_given():
    # the node's target_confidence is dynamically typed: 80 stays an int, 62.5 a float
    parser = demo.build_parser()
    assert parser.parse_args(['--target-confidence', '80']).target_confidence == 80
    assert isinstance(parser.parse_args(['--target-confidence', '80']).target_confidence, int)
    assert parser.parse_args(['--target-confidence', '62.5']).target_confidence == 62.5


def test_demo_plays_a_davis_sequence_folder(tmp_path, capsys, monkeypatch):
    for name in ('ROS_DOMAIN_ID', 'ROS_AUTOMATIC_DISCOVERY_RANGE'):
        monkeypatch.setenv(name, os.environ[name])
    clip = make_clip(num_frames=8, width=160, height=120, num_objects=1, seed=5)
    image_dir, _ = write_davis(tmp_path / 'davis', 'toy', clip)
    out = tmp_path / 'out'
    code = demo.main(['--sequence', image_dir, '--rate', '8', '--device', 'cpu', '--no-video',
                      '--out', str(out)])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    summary = json.loads((out / 'summary.json').read_text())
    assert summary['clip'] == 'toy' and summary['frames_sent'] == 8
    assert 'JF' in summary and summary['outputs']['video'] is None
    np.testing.assert_array_equal(read_labels(out / 'AnnotatedFrame.png'), clip.first_mask)


def test_demo_video_needs_an_annotation(tmp_path, capsys):
    from vos_ros.core.video import VideoWriter

    clip = make_clip(num_frames=3, width=64, height=48, seed=1)
    with VideoWriter(tmp_path / 'clip.avi', fps=5) as writer:
        for frame in clip.frames:
            writer.write(frame)
    assert demo.main(['--video', writer.path, '--out', str(tmp_path / 'out')]) == 1
    assert '--annotation' in capsys.readouterr().err
