"""launch/vos.launch.py and config/vos.yaml: what can be checked without launch_ros.

Without launch itself: the launch file parses, names the right package, executable and files,
and every key of config/vos.yaml is a parameter the node really declares, with a valid value.
test_launch_run.py runs the launch file for real (launch and launch_ros are not on PyPI: it
uses ../shared/ros_launch or a ROS install).
"""

import ast
import os

import pytest
import rclpy
import yaml

from vos_ros.ros.node import NODE_NAME
from vos_ros.ros.node import PARAMETERS
from vos_ros.ros.node import VosNode

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAUNCH = os.path.join(ROOT, 'launch', 'vos.launch.py')
CONFIG = os.path.join(ROOT, 'config', 'vos.yaml')


def _launch_tree():
    with open(LAUNCH, encoding='utf-8') as handle:
        return ast.parse(handle.read(), filename=LAUNCH)


def _constants(tree):
    """Return {module-level NAME: literal value} of the launch file."""
    values = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 \
                and isinstance(node.targets[0], ast.Name):
            try:
                values[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                pass
    return values


def _config_parameters():
    with open(CONFIG, encoding='utf-8') as handle:
        data = yaml.safe_load(handle)
    assert len(data) == 1
    key = next(iter(data))
    assert key in ('/**', NODE_NAME)
    return data[key]['ros__parameters']


def test_launch_file_names_package_executable_and_config():
    tree = _launch_tree()
    constants = _constants(tree)
    assert constants['PACKAGE'] == 'vos_ros'
    assert constants['EXECUTABLE'] == NODE_NAME
    assert os.path.isfile(os.path.join(ROOT, 'config', constants['PARAMS_FILE']))
    functions = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    assert 'generate_launch_description' in functions
    # Every parameter the launch file can override is a parameter of the node.
    assert set(constants['PARAMETER_ARGUMENTS']) <= set(PARAMETERS)


def test_launch_file_declares_the_promised_arguments_and_remaps():
    tree = _launch_tree()
    declared = set(_constants(tree)['PARAMETER_ARGUMENTS'])
    remapped = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, 'id', '') == 'DeclareLaunchArgument' \
                and isinstance(node.args[0], ast.Constant):
            declared.add(node.args[0].value)
        if isinstance(node, ast.keyword) and node.arg == 'remappings':
            remapped.update(ast.literal_eval(element.elts[0]) for element in node.value.elts)
    for argument in ('params_file', 'image_topic', 'device', 'annotation_path', 'model_path'):
        assert argument in declared
    assert {'image', 'segmentation'} <= remapped


def test_launch_and_config_are_installed_by_setup():
    with open(os.path.join(ROOT, 'setup.py'), encoding='utf-8') as handle:
        text = handle.read()
    assert "glob('launch/*.launch.py')" in text and "glob('config/*.yaml')" in text


def test_config_keys_are_declared_parameters_with_code_defaults():
    parameters = _config_parameters()
    assert set(parameters) <= set(PARAMETERS), set(parameters) - set(PARAMETERS)
    for name, value in parameters.items():
        default = PARAMETERS[name][0]
        assert type(value) is type(default), name  # a type mismatch fails at start-up
        assert value == default, name


@pytest.fixture
def context():
    context = rclpy.Context()
    rclpy.init(args=['vos_node', '--ros-args', '--params-file', CONFIG], context=context)
    yield context
    rclpy.try_shutdown(context=context)


def test_node_starts_from_config_file_with_every_key_declared(context):
    node = VosNode(context=context)
    try:
        for name, value in _config_parameters().items():
            assert node.has_parameter(name), name
            assert node.get_parameter(name).value == value, name
            assert node.describe_parameter(name).description
    finally:
        node.stop()
        node.destroy_node()


def test_a_misspelt_parameter_is_named_not_silently_ignored(capfd):
    context = rclpy.Context()
    rclpy.init(args=['vos_node', '--ros-args', '-p', 'targt_confidence:=70', '-p',
                     'backend:=flow'], context=context)
    try:
        node = VosNode(context=context)
        try:
            # rclpy drops the override; the node keeps its default and says why
            assert node.get_parameter('target_confidence').value == -1
        finally:
            node.stop()
            node.destroy_node()
    finally:
        rclpy.try_shutdown(context=context)
    err = capfd.readouterr().err
    assert "parameter 'targt_confidence' is not one of this node's: ignored" in err
    assert "(did you mean 'target_confidence'?)" in err
