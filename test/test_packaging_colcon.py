"""colcon builds a clean copy of the repository into the layout `ros2 run` and `ros2 launch` use.

A workspace whose src/ holds a copy of the repository (git's tracked and untracked-not-ignored
files, or the tree minus build products where there is no git, as inside the Docker image) is
built with the colcon that runs under this interpreter, so the installed scripts' interpreter is
known. Then `colcon test` runs a small subset of the suite in that workspace: the Docker image's
test stage runs the whole suite through `colcon test`, which would be far too slow here.
"""

import configparser
import os
from pathlib import Path
import subprocess
import sys
import xml.etree.ElementTree as ElementTree

import pytest

from colcon_support import colcon as _colcon
from colcon_support import PACKAGE
from colcon_support import REPO
from colcon_support import sourced_env as _sourced_env

# The `ros2 run vos_ros X` names the issues and README promise.
EXECUTABLES = ('vos_node', 'annotate', 'vos_train', 'vos_eval', 'vos_export', 'vos_make_bag',
               'vos_bag_eval', 'vos_demo')
SHARE_FILES = ('package.xml', 'launch/vos.launch.py', 'config/vos.yaml')
# Set for the nested `colcon test`, so a full-suite run inside it cannot recurse into this file.
NESTED = 'VOS_ROS_NESTED_COLCON'
# The subset the nested `colcon test` runs: quick, and it imports every entry point.
NESTED_TESTS = 'test/test_packaging_entry_points.py'

pytestmark = pytest.mark.skipif(
    bool(os.environ.get(NESTED)), reason='already inside a colcon test started by this file')


@pytest.fixture(scope='module')
def workspace(colcon_workspace):
    """A workspace with src/vos_ros copied from the repository and built by colcon."""
    return colcon_workspace


def _install(ws):
    return ws / 'install' / PACKAGE


def test_build_installs_every_executable_under_lib(workspace):
    ws, _ = workspace
    lib = _install(ws) / 'lib' / PACKAGE
    for name in EXECUTABLES:
        exe = lib / name
        assert exe.is_file(), f'{exe} missing: ros2 run {PACKAGE} {name} would fail'
        assert os.access(exe, os.X_OK), f'{exe} is not executable'
        shebang = exe.read_text().splitlines()[0]
        interpreter = Path(shebang[2:].split()[0])
        # The scripts must run under the interpreter whose colcon built them (the venv's here).
        assert interpreter.parent == Path(sys.executable).parent, shebang
    # Scripts in bin/ are invisible to `ros2 run` (setup.cfg's install_scripts is what fixes it).
    assert not (_install(ws) / 'bin').exists()


def test_every_entry_point_is_installed_as_a_script(workspace):
    ws, _ = workspace
    site = list((_install(ws) / 'lib').glob('python3*/site-packages'))
    assert len(site) == 1, site
    infos = list(site[0].glob('vos_ros-*-info'))
    assert len(infos) == 1, infos
    parser = configparser.ConfigParser()
    parser.read(infos[0] / 'entry_points.txt')
    scripts = set(parser['console_scripts'])
    assert set(EXECUTABLES) <= scripts
    for name in scripts:
        assert (_install(ws) / 'lib' / PACKAGE / name).is_file(), name


def test_build_installs_share_files_and_ament_index(workspace):
    ws, _ = workspace
    share = _install(ws) / 'share' / PACKAGE
    for rel in SHARE_FILES:
        assert (share / rel).is_file(), f'{share / rel} missing'
        assert (share / rel).read_bytes() == (REPO / rel).read_bytes(), rel
    marker = _install(ws) / 'share' / 'ament_index' / 'resource_index' / 'packages' / PACKAGE
    assert marker.is_file(), f'{marker} missing: ros2 cannot find the package'


def test_build_installs_every_module_and_data_file(workspace):
    ws, _ = workspace
    site = next((_install(ws) / 'lib').glob('python3*/site-packages'))
    source = [p.relative_to(REPO) for p in (REPO / PACKAGE).rglob('*')
              if p.is_file() and p.suffix in ('.py', '.pt', '.json')
              and '__pycache__' not in p.parts]
    assert source, 'no package files found'
    missing = [str(rel) for rel in source if not (site / rel).is_file()]
    # A sub-package without __init__.py is silently left out by find_packages().
    assert not missing, f'not installed: {missing}'


def test_installed_package_resolves_and_tools_answer_help(workspace):
    ws, env = workspace
    sourced = _sourced_env(ws, env)
    probe = (
        'from ament_index_python.packages import get_package_prefix\n'
        'from ament_index_python.packages import get_package_share_directory\n'
        'import vos_ros\n'
        "print(get_package_prefix('vos_ros'))\n"
        "print(get_package_share_directory('vos_ros'))\n"
        'print(vos_ros.__file__)\n')
    proc = subprocess.run([sys.executable, '-c', probe], cwd=ws, env=sourced,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    prefix, share, module = proc.stdout.split('\n')[:3]
    assert Path(prefix) == _install(ws)
    assert Path(share) == _install(ws) / 'share' / PACKAGE
    # The installed copy must win over the repository's editable install.
    assert Path(module).is_relative_to(_install(ws)), module
    # `ros2 run` = <prefix>/lib/<package>/<name>; start every tool at once to save wall time.
    procs = {}
    for name in EXECUTABLES:
        procs[name] = subprocess.Popen(
            [str(Path(prefix) / 'lib' / PACKAGE / name), '--help'], cwd=ws, env=sourced,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    failures = []
    for name, child in procs.items():
        out, err = child.communicate(timeout=180)
        if child.returncode != 0 or 'usage' not in out.lower():
            failures.append(f'{name} --help -> {child.returncode}: {err.strip()[-600:]}')
    assert not failures, '\n'.join(failures)


def test_colcon_test_runs_and_passes(workspace):
    ws, env = workspace
    env = dict(env, **{NESTED: '1'})
    # console_direct+ puts pytest's own report in the failure message.
    _colcon(['test', '--base-paths', 'src', '--executor', 'sequential',
             '--event-handlers', 'console_direct+', '--return-code-on-test-failure',
             '--pytest-args', NESTED_TESTS], ws, env, 600)
    result = ws / 'build' / PACKAGE / 'pytest.xml'
    assert result.is_file(), 'colcon test wrote no pytest result'
    root = ElementTree.parse(result).getroot()
    suite = root if root.tag == 'testsuite' else root.find('testsuite')
    counts = {key: int(suite.get(key, 0)) for key in ('tests', 'failures', 'errors')}
    assert counts['tests'] > 0 and counts['failures'] == 0 and counts['errors'] == 0, counts
    summary = _colcon(['test-result', '--test-result-base', 'build'], ws, env, 60)
    assert '0 errors, 0 failures' in summary.stdout, summary.stdout
