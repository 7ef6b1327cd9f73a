"""vos_demo end to end: a synthetic clip through a real vos_node over loopback DDS."""

import json
import os
import shutil

import numpy as np
import pytest

from vos_ros.core.labels import read_labels
from vos_ros.core.labels import write_labels
from vos_ros.core.model_io import default_model_path
from vos_ros.core.model_io import read_metadata
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
    # no --model: the node's default model, named by the node, with its version
    shipped = default_model_path('memory')
    assert summary['model'] == shipped
    assert summary['model_version'] == read_metadata(shipped)['version']
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


def test_demo_refuses_bad_integers_while_parsing(tmp_path, capsys, monkeypatch):
    # refused before a clip is made or a node started: load_clip must not be reached
    monkeypatch.setattr(demo, 'load_clip', lambda args: pytest.fail('clip made'))
    for option, value, words in (('--frames', '-3', 'must be >= 0 (0 = all)'),
                                 ('--frames', 'x', 'expected an integer'),
                                 ('--domain-id', '500', 'must lie in 0..232'),
                                 ('--domain-id', '-1', 'must lie in 0..232'),
                                 ('--objects', '0', 'must lie in 1..255'),
                                 ('--objects', '256', 'must lie in 1..255')):
        with pytest.raises(SystemExit) as stop:
            demo.main([option, value, '--out', str(tmp_path)])
        assert stop.value.code == 2
        err = capsys.readouterr().err
        assert err.count('\n') == 1 and f'argument {option}: {words}' in err, err
        assert f'got {value!r}' in err
    # the values in range keep their meaning: --frames 0 plays all (synthetic: 60)
    parser = demo.build_parser()
    assert parser.parse_args(['--frames', '0']).frames == 0
    args = parser.parse_args(['--domain-id', '232', '--objects', '255', '--frames', '5'])
    assert (args.domain_id, args.objects, args.frames) == (232, 255, 5)
    assert parser.parse_args(['--domain-id', '0']).domain_id == 0
    assert parser.parse_args([]).domain_id is None


def test_demo_out_file_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(demo, 'load_clip', lambda args: pytest.fail('clip made'))
    path = tmp_path / 'summary.txt'
    path.write_text('a file')
    assert demo.main(['--out', str(path)]) == 1
    err = capsys.readouterr().err
    assert err == f'vos_demo: error: --out {path} is a file, expected a folder\n'
    assert path.read_text() == 'a file'


def _fake_play(clip, args, out):
    """``demo.play`` without a node: every frame answered with the ground truth the demo read
    (the annotation where a frame has none)."""
    truth = [clip.annotation if labels is None else labels
             for labels in clip.ground_truth or [None] * len(clip.frames)]
    timings = {'startup_s': 0.0, 'wall_s': 1.0, 'output_fps': 10.0,
               'latency_ms': [5.0] * len(clip.frames),
               'node': {'last': {}, 'lowered_messages': 0}}
    return [labels.copy() for labels in truth], timings


def test_demo_scores_the_frames_that_have_masks(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(demo, 'play', _fake_play)
    clip = make_clip(num_frames=8, width=160, height=120, num_objects=1, seed=5)
    _, mask_dir = write_davis(tmp_path / 'davis', 'toy', clip)
    for index in (1, 2, 4, 6):  # DAVIS-2017 style: a few frames annotated
        os.remove(os.path.join(mask_dir, f'{index:05d}.png'))
    # frame 3 shows an object the annotation lacks; frame 5's mask is a pixel narrower
    extra = clip.masks[3].copy()
    extra[:4, :4] = 2
    write_labels(os.path.join(mask_dir, '00003.png'), extra)
    write_labels(os.path.join(mask_dir, '00005.png'), clip.masks[5][:, :-1])
    out = tmp_path / 'out'
    code = demo.main(['--sequence', str(tmp_path / 'davis'), '--name', 'toy', '--no-video',
                      '--out', str(out)])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    summary = json.loads((out / 'summary.json').read_text())
    # frames 3 and 5: frame 0 is the annotation and frame 7 the last, as vos_eval scores
    assert summary['scored_frames'] == 2 and summary['JF'] == 100.0, summary
    assert summary['unscored_objects'] == [2]
    assert 'J&F 100.0 (J 100.0, F 100.0) on 2 of 8 frames' in printed.out
    assert 'object(s) [2] appear only after the first frame' in printed.err


def test_demo_says_when_it_cannot_score(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(demo, 'play', _fake_play)
    clip = make_clip(num_frames=6, width=160, height=120, num_objects=1, seed=5)
    image_dir, _ = write_davis(tmp_path / 'davis', 'toy', clip, masks='first')
    out = tmp_path / 'out'
    assert demo.main(['--sequence', image_dir, '--no-video', '--out', str(out)]) == 0
    assert 'not scored: no frame has a ground-truth mask' in capsys.readouterr().out
    summary = json.loads((out / 'summary.json').read_text())
    assert summary['scored_frames'] == 0 and 'JF' not in summary


def test_demo_records_the_model_and_its_version(tmp_path, capsys, monkeypatch):
    # the user's --model, relative: its absolute path and the version its metadata gives
    shutil.copy(default_model_path('memory'), tmp_path / 'mem.pt')
    version = read_metadata(tmp_path / 'mem.pt')['version']
    monkeypatch.setattr(demo, 'play', _fake_play)
    monkeypatch.chdir(tmp_path)
    assert demo.main(['--frames', '3', '--width', '64', '--height', '48', '--no-video',
                      '--model', 'mem.pt', '--out', 'out']) == 0
    summary = json.loads((tmp_path / 'out' / 'summary.json').read_text())
    model = os.path.abspath('mem.pt')
    assert (summary['model'], summary['model_version']) == (model, version)
    assert f'model {model} version {version}\n' in capsys.readouterr().out


def test_an_annotation_of_another_aspect_ratio_is_refused_while_loading(tmp_path, capsys):
    square = tmp_path / 'square.png'
    write_labels(square, np.ones((50, 50), np.uint8))
    args = demo.build_parser().parse_args(['--annotation', str(square), '--frames', '3',
                                           '--width', '96', '--height', '72'])
    with pytest.raises(demo.DataError, match='square.png: mask size 50x50 differs'):
        demo.load_clip(args)
    narrower = tmp_path / 'narrower.png'
    write_labels(narrower, np.ones((72, 95), np.uint8))
    args.annotation = str(narrower)
    assert demo.load_clip(args).annotation.shape == (72, 96)
    assert 'narrower.png: mask 95x72 resized to the frame size 96x72' in capsys.readouterr().err
