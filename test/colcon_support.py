"""Build a clean copy of the repository with colcon, as a user's workspace would hold it.

Shared by the packaging tests (test_packaging_colcon.py) and the launch tests
(test_launch_run.py) through the session fixture ``colcon_workspace`` in conftest.py, so one
pytest run builds the package once.
"""

import os
from pathlib import Path
import shutil
import subprocess
import sys

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = 'vos_ros'
# Build products and local state that never belong in a source copy.
SKIP_DIRS = {'.git', '.venv', 'build', 'install', 'log', 'out', 'runs', '__pycache__',
             '.pytest_cache', '.hypothesis', '.whl'}


def source_files(root):
    """Relative paths of the files a clean clone would hold."""
    if (root / '.git').exists() and shutil.which('git'):
        out = subprocess.run(
            ['git', 'ls-files', '-z', '--cached', '--others', '--exclude-standard'],
            cwd=root, capture_output=True, check=True).stdout.decode()
        # --cached still lists files deleted from the work tree but not yet from the index.
        return sorted(f for f in out.split('\0') if f and (root / f).is_file())
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames
                       if d not in SKIP_DIRS and not d.endswith('.egg-info')]
        for name in filenames:
            if not name.endswith('.pyc'):
                files.append(os.path.relpath(os.path.join(dirpath, name), root))
    return sorted(files)


def without_other_installs(env):
    """Drop search-path entries that already hold vos_ros (an underlay, e.g. in the image)."""
    env = dict(env)
    for var in ('AMENT_PREFIX_PATH', 'COLCON_PREFIX_PATH', 'CMAKE_PREFIX_PATH', 'PYTHONPATH'):
        if var not in env:
            continue
        keep = [entry for entry in env[var].split(os.pathsep)
                if entry and not any((Path(entry) / sub).exists() for sub in
                                     (PACKAGE, Path('share') / PACKAGE))]
        env[var] = os.pathsep.join(keep)
    return env


def colcon(args, cwd, env, timeout):
    """Run colcon under this interpreter; fail with its output when it fails."""
    cmd = [sys.executable, '-m', 'colcon', '--log-base', str(cwd / 'log')] + list(args)
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, (
        f'{" ".join(args[:1])} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n'
        f'{proc.stderr[-4000:]}')
    return proc


def sourced_env(ws, env):
    """The environment after `source install/setup.bash`, as a user's shell would have it."""
    proc = subprocess.run(
        ['bash', '-c', 'source install/setup.bash >/dev/null && env -0'],
        cwd=ws, env=env, capture_output=True, check=True, timeout=60)
    pairs = (item.split('=', 1) for item in proc.stdout.decode().split('\0') if '=' in item)
    return dict(pairs)


def build_workspace(ws):
    """Copy the repository to ``ws``/src/vos_ros and colcon-build it; return the build env.

    Skips when colcon is not installed for this interpreter.
    """
    if subprocess.run([sys.executable, '-c', 'import colcon_core'],
                      capture_output=True).returncode != 0:
        pytest.skip('colcon is not installed for this interpreter (requirements.txt has it)')
    src = ws / 'src' / PACKAGE
    for rel in source_files(REPO):
        dest = src / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, dest)
    env = without_other_installs(os.environ)
    # A user's ~/.colcon defaults (symlink-install, mixins ...) must not change this build.
    env['COLCON_HOME'] = str(ws / '.colcon_home')
    env.pop('COLCON_DEFAULTS_FILE', None)
    env['PYTHONDONTWRITEBYTECODE'] = '1'
    colcon(['build', '--base-paths', 'src', '--executor', 'sequential'], ws, env, 300)
    return env
