"""Every executable the launch files, README, Makefile and Docker files name is a real entry point.

setup.py's console_scripts are read statically (ast), so a typo in a launch file or a README
command fails here instead of on a user's robot; every entry point must import and be callable,
and every one (the node too) must answer `--help` through `main(argv)`.
"""

import ast
import importlib
import inspect
from pathlib import Path
import re

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = 'vos_ros'
# Names that are ours when they appear as a command: vos_* and the annotation tool.
OURS = re.compile(r'^(vos_[A-Za-z0-9_]+|annotate)$')
# Documents and scripts whose commands a user copies.
DOC_FILES = ('README.md', 'docs/memory_model.md', 'docs/adaptive_compute.md', 'docs/training.md',
             'Makefile', 'docker/compose.yaml', 'docker/entrypoint.sh',
             'docker/Dockerfile', '.ci/run', 'launch/vos.launch.py', 'config/vos.yaml')
LAUNCH_FILE = REPO / 'launch' / 'vos.launch.py'


def _setup_call():
    tree = ast.parse((REPO / 'setup.py').read_text(), 'setup.py')
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, 'id', None) == 'setup':
            return node
    raise AssertionError('setup.py has no setup(...) call')


def console_scripts():
    """{name: 'module:function'} from setup.py's entry_points, read without running setup.py."""
    for keyword in _setup_call().keywords:
        if keyword.arg == 'entry_points':
            entry_points = ast.literal_eval(keyword.value)
            break
    else:
        raise AssertionError('setup.py declares no entry_points')
    scripts = {}
    for line in entry_points['console_scripts']:
        name, _, target = (part.strip() for part in line.partition('='))
        assert name not in scripts, f'duplicate console script {name}'
        scripts[name] = target
    return scripts


SCRIPTS = console_scripts()


def _call_name(node):
    func = node.func
    return func.attr if isinstance(func, ast.Attribute) else getattr(func, 'id', None)


def _keyword(node, name):
    for keyword in node.keywords:
        if keyword.arg == name:
            return keyword.value
    return None


def _constants(tree):
    """Module-level NAME = <literal> assignments of a launch file."""
    constants = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and \
                isinstance(node.targets[0], ast.Name):
            try:
                constants[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                pass
    return constants


def _value(node, constants):
    """A literal, or a module constant's value; None when it is computed at launch time."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        return constants.get(node.id)
    return None


def launch_nodes(path):
    """(package, executable) of every launch_ros Node(...) in a launch file."""
    tree = ast.parse(path.read_text(), str(path))
    constants = _constants(tree)
    nodes = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and _call_name(node) in ('Node', 'LifecycleNode'):
            nodes.append((_value(_keyword(node, 'package'), constants),
                          _value(_keyword(node, 'executable'), constants)))
    return nodes


def launch_arguments(path):
    """Names given to DeclareLaunchArgument, also in loops over a module constant's keys."""
    tree = ast.parse(path.read_text(), str(path))
    constants = _constants(tree)
    loops = {}
    for node in ast.walk(tree):
        generators = node.generators if isinstance(
            node, (ast.ListComp, ast.GeneratorExp, ast.SetComp)) else []
        if isinstance(node, ast.For):
            generators = [node]
        for loop in generators:
            source = loop.iter
            if isinstance(source, ast.Call) and isinstance(source.func, ast.Attribute):
                source = source.func.value  # X.items() / X.keys()
            values = _value(source, constants)
            target = loop.target.elts[0] if isinstance(loop.target, ast.Tuple) else loop.target
            if isinstance(target, ast.Name) and isinstance(values, (dict, list, tuple)):
                loops[target.id] = list(values)
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and _call_name(node) == 'DeclareLaunchArgument':
            first = node.args[0] if node.args else _keyword(node, 'name')
            value = _value(first, constants)
            if isinstance(value, str):
                names.add(value)
            elif isinstance(first, ast.Name) and first.id in loops:
                names.update(loops[first.id])
    return names


def _doc_text():
    return {rel: (REPO / rel).read_text() for rel in DOC_FILES if (REPO / rel).is_file()}


def _code_blocks(markdown):
    return re.findall(r'^```[^\n]*\n(.*?)^```', markdown, flags=re.S | re.M)


def documented_executables():
    """(file, name) for every executable of ours that a document tells a user to run."""
    found = set()
    for rel, text in _doc_text().items():
        text = text.replace('\\\n', ' ')
        # Lower case only: `ros2 run vos_ros NAME` is a placeholder, not a command.
        for name in re.findall(r'ros2\s+run\s+' + PACKAGE + r'\s+([a-z][a-z0-9_]*)', text):
            found.add((rel, name))
        # `docker run ... vos_ros[:tag] TOOL ...` and compose's `command: TOOL ...`.
        for name in re.findall(r'(?:\b' + PACKAGE + r'(?::[\w.-]+)?|command:)\s+'
                               r'([A-Za-z0-9_]+)', text):
            if OURS.match(name):
                found.add((rel, name))
        # .venv/bin/X (README, Makefile's $(BIN)/X) and lib/vos_ros/X paths.
        for name in re.findall(r'(?:\.venv/bin/|\$\(BIN\)/|lib/' + PACKAGE + r'/)'
                               r'([A-Za-z0-9_.-]+)', text):
            if OURS.match(name):
                found.add((rel, name))
        blocks = _code_blocks(text) if rel.endswith('.md') else [text]
        for block in blocks:
            for line in block.splitlines():
                words = line.strip().lstrip('$ ').split()
                if words and OURS.match(words[0]):
                    found.add((rel, words[0]))
    return sorted(found)


def documented_launches():
    """(file, launch file name, [arg names]) for every `ros2 launch vos_ros X a:=b ...`."""
    found = []
    for rel, text in _doc_text().items():
        text = text.replace('\\\n', ' ')
        pattern = r'ros2\s+launch\s+' + PACKAGE + r'\s+([A-Za-z0-9_.-]+)([^\n`"\]]*)'
        for name, rest in re.findall(pattern, text):
            found.append((rel, name, re.findall(r'([A-Za-z0-9_]+):=', rest)))
        # `docker run ... vos_ros[:tag] a:=b ...`: the image's entry point hands them to
        # vos.launch.py.
        for rest in re.findall(r'\b' + PACKAGE + r'(?::[\w.-]+)?((?:\s+[A-Za-z0-9_]+:=\S+)+)',
                               text):
            found.append((rel, 'vos.launch.py', re.findall(r'([A-Za-z0-9_]+):=', rest)))
    return found


def test_setup_declares_the_promised_executables():
    for name in ('vos_node', 'annotate', 'vos_train', 'vos_eval', 'vos_export', 'vos_make_bag',
                 'vos_bag_eval', 'vos_demo'):
        assert name in SCRIPTS, f'setup.py lacks console script {name}'
    for name, target in SCRIPTS.items():
        assert re.fullmatch(r'[A-Za-z_][\w.]*:[A-Za-z_]\w*', target), f'{name} = {target}'


def test_launch_file_runs_declared_executables():
    assert LAUNCH_FILE.is_file(), f'{LAUNCH_FILE} missing (issue 5 asks for it)'
    assert (REPO / 'config' / 'vos.yaml').is_file(), 'config/vos.yaml missing'
    nodes = []
    for path in sorted((REPO / 'launch').glob('*.launch.py')):
        nodes.extend((path.name, package, executable)
                     for package, executable in launch_nodes(path))
    assert any(executable == 'vos_node' for _, _, executable in nodes), nodes
    for name, package, executable in nodes:
        assert isinstance(package, str) and isinstance(executable, str), (
            f'{name}: Node package/executable must be literals or module constants')
        if package == PACKAGE:
            assert executable in SCRIPTS, f'{name} runs {executable}, not an entry point'


def test_documented_executables_exist():
    found = documented_executables()
    assert any(name == 'vos_node' for _, name in found), 'README never says how to run the node'
    missing = [f'{rel}: {name}' for rel, name in found if name not in SCRIPTS]
    assert not missing, f'named but not in setup.py console_scripts: {missing}'


def test_documented_launch_commands_match_launch_files():
    launches = documented_launches()
    assert launches, 'no document shows `ros2 launch vos_ros ...`'
    for rel, name, args in launches:
        path = REPO / 'launch' / name
        assert path.is_file(), f'{rel} launches {name}, which launch/ does not have'
        unknown = set(args) - launch_arguments(path)
        assert not unknown, f'{rel}: {name} declares no launch argument(s) {sorted(unknown)}'


@pytest.mark.parametrize('name', sorted(SCRIPTS))
def test_entry_point_imports_and_is_callable(name):
    module_name, _, function_name = SCRIPTS[name].partition(':')
    module = importlib.import_module(module_name)
    function = getattr(module, function_name, None)
    assert callable(function), f'{SCRIPTS[name]} is not callable'


@pytest.mark.parametrize('name', sorted(SCRIPTS))
def test_main_takes_argv_and_answers_help(name, capsys):
    module_name, _, function_name = SCRIPTS[name].partition(':')
    main = getattr(importlib.import_module(module_name), function_name)
    parameters = inspect.signature(main).parameters
    assert 'argv' in parameters and parameters['argv'].default is None, (
        f'{name}: main must be main(argv=None) so tests and wrappers can call it')
    with pytest.raises(SystemExit) as exit_info:
        main(['--help'])
    assert exit_info.value.code in (0, None)
    assert 'usage' in capsys.readouterr().out.lower()
