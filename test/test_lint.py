"""flake8 (PEP 8, 99 columns, single quotes; config in setup.cfg) over the code base."""

import importlib.util
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGETS = ('vos_ros', 'test', 'bench', 'launch', 'setup.py')


@pytest.mark.skipif(importlib.util.find_spec('flake8') is None, reason='flake8 not installed')
def test_flake8():
    targets = [t for t in TARGETS if os.path.exists(os.path.join(ROOT, t))]
    assert 'vos_ros' in targets
    done = subprocess.run([sys.executable, '-m', 'flake8', *targets], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f'flake8 found problems:\n{done.stdout}{done.stderr}'
