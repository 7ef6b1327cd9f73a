"""bench/whole_command.py: the issue's whole-command check, on a small synthetic folder."""

import csv
import importlib.util
import os

import pytest

from vos_ros.core.synthetic import make_clip
from vos_ros.core.synthetic import write_davis

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='module')
def whole_command():
    spec = importlib.util.spec_from_file_location(
        'whole_command', os.path.join(ROOT, 'bench', 'whole_command.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_rounds_alternate_and_ratios_use_the_same_round(whole_command):
    configs = [('a', []), ('b', ['--backend', 'flow'])]
    assert whole_command.round_order(configs, 0) == configs
    assert whole_command.round_order(configs, 1) == configs[::-1]
    rows = [{'round': 0, 'config': 'a', 'wall_s': 10.0},
            {'round': 0, 'config': 'b', 'wall_s': 4.0},
            {'round': 1, 'config': 'b', 'wall_s': 6.0},
            {'round': 1, 'config': 'a', 'wall_s': 9.0}]
    whole_command.ratios(rows, 'a')
    assert [row['ratio'] for row in rows] == [1.0, 2.5, 1.5, 1.0]
    assert whole_command.parse_config('full=--target-confidence 100') == (
        'full', ['--target-confidence', '100'])
    assert whole_command.parse_config('default=') == ('default', [])
    with pytest.raises(ValueError):
        whole_command.parse_config('--backend flow')
    assert whole_command.vos_eval_command('/opt/x/vos_eval') == ['/opt/x/vos_eval']


def test_vos_eval_found_in_a_venv_or_run_as_a_module(whole_command, tmp_path, monkeypatch):
    venv_bin = tmp_path / 'bin'
    venv_bin.mkdir()
    script = venv_bin / 'vos_eval'
    script.write_text('#!/bin/sh\n')
    script.chmod(0o755)
    monkeypatch.setattr(whole_command.sys, 'executable', str(venv_bin / 'python'))
    assert whole_command.vos_eval_command() == [str(script)]
    # a colcon install keeps its scripts away from the interpreter: run the module
    monkeypatch.setattr(whole_command.sys, 'executable', str(tmp_path / 'python3'))
    assert whole_command.vos_eval_command() == [str(tmp_path / 'python3'), '-m',
                                                'vos_ros.tools.evaluate']


def test_runs_vos_eval_commands_and_writes_the_table(whole_command, tmp_path, capsys):
    root = tmp_path / 'davis'
    write_davis(root, 'aa', make_clip(num_frames=6, num_objects=1, seed=5, width=96,
                                      height=72), masks='all')
    out = tmp_path / 'out'
    code = whole_command.main([str(root), '--rounds', '2', '--configs', 'flow=--backend flow',
                               'small=--backend flow --resolution 48', '--out', str(out)])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    with open(out / 'whole_command.csv', encoding='utf-8') as handle:
        rows = list(csv.DictReader(handle))
    assert [(row['round'], row['config']) for row in rows] == [
        ('0', 'flow'), ('0', 'small'), ('1', 'small'), ('1', 'flow')]
    assert all(float(row['ratio']) == 1.0 for row in rows if row['config'] == 'flow')
    # the same command scores the same in every round (J&F is deterministic)
    small = [row['JF'] for row in rows if row['config'] == 'small']
    assert small[0] == small[1] and float(small[0]) > 0
    assert (out / 'whole_command.png').stat().st_size > 0
    assert 'x flow' in printed.out


def test_a_failing_command_is_one_line(whole_command, tmp_path, capsys):
    root = tmp_path / 'davis'
    write_davis(root, 'aa', make_clip(num_frames=4, num_objects=1, seed=5, width=96,
                                      height=72), masks='all')
    code = whole_command.main([str(root), '--rounds', '1', '--configs',
                               'bad=--backend nosuch', '--out', str(tmp_path / 'out')])
    err = capsys.readouterr().err
    assert code == 1 and 'whole_command: error:' in err and 'nosuch' in err
    assert whole_command.main([str(tmp_path / 'missing'), '--out', str(tmp_path / 'o')]) == 1
