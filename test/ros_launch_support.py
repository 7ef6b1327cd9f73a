"""ROS 2 launch for the tests, and the launcher they run ``vos.launch.py`` with.

``launch``, ``launch_ros`` and ``launch_testing`` are not on PyPI. A ROS install has them; in
the pip venv the wheels in ``../shared/ros_launch`` (its README) are installed with
``pip install --no-deps --target`` into a folder of the test session, so the venv stays what
``make setup`` makes. ``launch_ros`` imports ``composition_interfaces``, whose C libraries must
be on ``LD_LIBRARY_PATH`` before Python starts: everything that imports launch runs in a child
process with the environment :func:`launch_environment` returns.

Run as a script, this module does what ``ros2 launch PACKAGE FILE name:=value ...`` does
(ros2cli is not installed here either): it includes the package's launch file with those
arguments in a ``launch.LaunchService`` and returns its exit code.
"""

import importlib.util
import os
from pathlib import Path
import signal
import subprocess
import sys

REPO = Path(__file__).resolve().parents[1]
#: Wheels of the ROS 2 Jazzy launch packages, beside the clone (README there).
SHARED_LAUNCH = REPO.parent / 'shared' / 'ros_launch'
COMPOSITION = SHARED_LAUNCH / 'composition_interfaces' / 'lib'
#: launch's own dependencies from PyPI (a ROS install has them from apt).
PYPI_REQUIREMENTS = ('osrf-pycommon==2.0.2',)
LARK_REQUIREMENT = 'lark==1.1.9'


def native_launch():
    """True when this interpreter imports launch_ros by itself (a ROS install)."""
    return importlib.util.find_spec('launch_ros') is not None


def skip_reason():
    """Why the launch tests cannot run here, or None when they can."""
    if native_launch():
        return None
    if not (SHARED_LAUNCH / 'wheels').is_dir():
        return (f'launch/launch_ros are not installed (not on PyPI) and {SHARED_LAUNCH} with '
                'their wheels does not exist; a ROS 2 install has them')
    return None


def _prepend(env, name, *entries):
    old = [entry for entry in env.get(name, '').split(os.pathsep) if entry]
    env[name] = os.pathsep.join([str(entry) for entry in entries] + old)


def install_launch(target):
    """Install the shared wheels (and their PyPI dependencies) into ``target``; return it.

    ``pip --target`` writes the packages' data files (launch's grammar, the ament index
    markers) under ``target/share``, so ``target`` is an ament prefix too.
    """
    requirements = sorted(str(path) for path in (SHARED_LAUNCH / 'wheels').glob('*.whl'))
    requirements += PYPI_REQUIREMENTS
    if importlib.util.find_spec('lark') is None:  # the venv has lark-parser (same module)
        requirements.append(LARK_REQUIREMENT)
    proc = subprocess.run(
        [sys.executable, '-m', 'pip', 'install', '--quiet', '--disable-pip-version-check',
         '--no-deps', '--target', str(target)] + requirements,
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f'pip could not install the launch wheels:\n{proc.stderr}'
    return target


def launch_environment(env, target=None):
    """Return ``env`` extended so a child Python imports launch, launch_ros, launch_testing.

    ``target``: the folder :func:`install_launch` filled; None in a ROS install (nothing to
    add).
    """
    env = dict(env)
    if target is not None:
        site = COMPOSITION / f'python{sys.version_info.major}.{sys.version_info.minor}' / \
            'site-packages'
        _prepend(env, 'PYTHONPATH', target, site)
        _prepend(env, 'LD_LIBRARY_PATH', COMPOSITION)
        # After the workspace: ament finds vos_ros there, launch's grammar here.
        env['AMENT_PREFIX_PATH'] = os.pathsep.join(
            [entry for entry in env.get('AMENT_PREFIX_PATH', '').split(os.pathsep) if entry]
            + [str(target)])
    env['PYTHONUNBUFFERED'] = '1'
    return env


def launch_command(package, launch_file, arguments=()):
    """Return the argv that runs this module as the launcher (see the module docstring)."""
    return [sys.executable, str(Path(__file__).resolve()), package, launch_file,
            *[f'{name}:={value}' for name, value in dict(arguments).items()]]


def main(argv=None):
    """Launch ``PACKAGE FILE [name:=value ...]`` the way ``ros2 launch`` does."""
    from ament_index_python.packages import get_package_share_directory
    from launch import LaunchDescription
    from launch import LaunchService
    from launch.actions import IncludeLaunchDescription
    from launch.launch_description_sources import AnyLaunchDescriptionSource

    argv = sys.argv[1:] if argv is None else list(argv)
    if len(argv) < 2 or any(':=' not in arg for arg in argv[2:]):
        print('usage: ros_launch_support.py PACKAGE LAUNCH_FILE [name:=value ...]',
              file=sys.stderr)
        return 2
    package, name, arguments = argv[0], argv[1], argv[2:]
    # Started from a shell's background job (nohup ... &, a CI runner), this process inherits
    # SIGINT ignored, and launch leaves an ignored SIGINT alone: it would never stop on Ctrl-C.
    # ros2 launch runs in a terminal; so should this stand-in.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    path = os.path.join(get_package_share_directory(package), 'launch', name)
    service = LaunchService(argv=arguments)
    service.include_launch_description(LaunchDescription([IncludeLaunchDescription(
        AnyLaunchDescriptionSource(path),
        launch_arguments=[tuple(arg.split(':=', 1)) for arg in arguments])]))
    return service.run()


if __name__ == '__main__':
    sys.exit(main())
