"""vos_eval --target-confidence (issue 15) on a synthetic DAVIS folder."""

import os

import numpy as np
import pytest

from vos_ros.core.labels import read_labels
from vos_ros.core.synthetic import make_clip
from vos_ros.core.synthetic import write_davis
from vos_ros.tools import evaluate

pytest.importorskip('torch')


@pytest.fixture(scope='module')
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp('davis')
    write_davis(root, 'aa', make_clip(num_frames=12, num_objects=2, seed=31, width=96,
                                      height=72), masks='all')
    return root


def _run(args, capsys):
    code = evaluate.main([str(a) for a in args] + ['--no-progress'])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _masks(folder):
    names = sorted(os.listdir(folder))
    return [read_labels(os.path.join(folder, name)) for name in names]


def test_target_100_equals_the_full_backend_and_lower_targets_use_the_cheap_path(
        dataset, tmp_path, capsys):
    code, out, err = _run([dataset, '--backend', 'embedding', '--out', tmp_path / 'plain'],
                          capsys)
    assert code == 0, err
    code, out, err = _run([dataset, '--backend', 'embedding', '--target-confidence', '100',
                           '--out', tmp_path / 'hundred'], capsys)
    assert code == 0, err
    assert 'cheap path on 0 %, given masks on 8 % of frames' in out
    for plain, hundred in zip(_masks(tmp_path / 'plain' / 'aa'),
                              _masks(tmp_path / 'hundred' / 'aa')):
        np.testing.assert_array_equal(plain, hundred)
    code, out, err = _run([dataset, '--backend', 'embedding', '--target-confidence', '0',
                           '--out', tmp_path / 'zero'], capsys)
    assert code == 0, err
    # 11 propagated frames: 8 cheap, one forced full run, 2 cheap again
    assert 'full model on 8 %, cheap path on 83 %, given masks on 8 % of frames' in out
    # it says what runs (with its progress bar, or when asked): full model, target, cheap path
    evaluate.evaluate_dataset(dataset, tmp_path / 'said', backend='embedding',
                              target_confidence=0, progress=False, announce=True)
    assert ('backend adaptive (full embedding, target_confidence 0, cheap flow'
            in capsys.readouterr().err)
    # at 100 no cheap path runs, so none is named
    evaluate.evaluate_dataset(dataset, tmp_path / 'said100', backend='embedding',
                              target_confidence=100, progress=False, announce=True)
    said = capsys.readouterr().err
    assert 'backend adaptive (full embedding, target_confidence 100,' in said
    assert 'cheap' not in said
    assert len(_masks(tmp_path / 'zero' / 'aa')) == 12


@pytest.mark.parametrize('args, message', [
    (['--target-confidence', '101'], '0..100'),
    (['--target-confidence', '-3'], '0..100'),
    (['--backend', 'flow', '--target-confidence', '50'], 'flow is the cheap path'),
])
def test_bad_targets(dataset, tmp_path, capsys, args, message):
    code, out, err = _run([dataset, '--out', tmp_path / 'out'] + args, capsys)
    assert code != 0
    assert message in err and err.count('\n') == 1


def test_target_minus_one_is_the_backend_default_as_on_the_node(dataset, tmp_path, capsys):
    # flow with a target is refused; with -1 (= omitted) it runs as flow alone
    code, out, err = _run([dataset, '--backend', 'flow', '--target-confidence', '-1',
                           '--out', tmp_path / 'flow'], capsys)
    assert code == 0, err
    assert 'backend flow' in err and 'target_confidence' not in err
    code, out, err = _run([dataset, '--backend', 'flow', '--target-confidence', '70',
                           '--out', tmp_path / 'refused'], capsys)
    assert code == 1 and 'flow is the cheap path itself' in err
    code, out, err = _run([dataset, '--target-confidence', '-2', '--out', tmp_path / 'x'],
                          capsys)
    assert code == 1 and 'must lie in 0..100 (or -1), got -2' in err
