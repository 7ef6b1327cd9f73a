"""Launch vos_node with a parameter file and topic remappings.

Example:
  ros2 launch vos_ros vos.launch.py image_topic:=/camera/image_raw \
      annotation_path:=/data/first_mask.png device:=cuda target_confidence:=80

Arguments given on the command line override the parameter file; arguments left empty keep the
file's values. With namespace:=robot1 the default topics are /robot1/image and
/robot1/segmentation; absolute topic names stay as given.
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.actions import OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

PACKAGE = 'vos_ros'
EXECUTABLE = 'vos_node'
PARAMS_FILE = 'vos.yaml'

#: Launch arguments that, when non-empty, override the node parameter of the same name.
PARAMETER_ARGUMENTS = {
    'annotation_path': 'First-frame label map (PNG); empty: keep the parameter file value.',
    'model_path': 'Model file for backends that load one; empty: keep the file value.',
    'device': 'auto, cpu, cuda or cuda:N; empty: keep the file value.',
    'backend': 'Segmentation backend; empty: keep the file value.',
    'target_confidence': 'Effort 0-100 (100 = full model every frame, -1 = backend default); '
                         'empty: keep the file value.',
}

#: Launch arguments whose text becomes a number, an integer where it is one (the node refuses
#: a string for them).
NUMBER_ARGUMENTS = ('target_confidence',)


def _node(context):
    overrides = {}
    for name in PARAMETER_ARGUMENTS:
        value = LaunchConfiguration(name).perform(context)
        if value:
            if name in NUMBER_ARGUMENTS:
                try:
                    value = int(value)
                except ValueError:
                    try:
                        value = float(value)
                    except ValueError:
                        raise ValueError(f'launch argument {name}: expected a number, got '
                                         f'{value!r}') from None
            overrides[name] = value
    parameters = [LaunchConfiguration('params_file').perform(context)]
    if overrides:
        parameters.append(overrides)
    segmentation = LaunchConfiguration('segmentation_topic').perform(context)
    return [Node(
        package=PACKAGE,
        executable=EXECUTABLE,
        name=EXECUTABLE,
        namespace=LaunchConfiguration('namespace'),
        output='screen',
        emulate_tty=True,
        parameters=parameters,
        remappings=[
            ('image', LaunchConfiguration('image_topic').perform(context)),
            ('segmentation', segmentation),
            ('segmentation/overlay', segmentation + '/overlay'),
        ],
    )]


def generate_launch_description():
    """Declare the arguments and the node."""
    default_params = os.path.join(get_package_share_directory(PACKAGE), 'config', PARAMS_FILE)
    arguments = [
        DeclareLaunchArgument('params_file', default_value=default_params,
                              description='YAML file of vos_node parameters.'),
        # Relative defaults: /image and /segmentation, or <namespace>/image ... in a namespace
        # (given here or pushed by an including launch file).
        DeclareLaunchArgument('image_topic', default_value='image',
                              description='Camera image topic (sensor_msgs/Image); relative '
                              'names resolve in the namespace.'),
        DeclareLaunchArgument('segmentation_topic', default_value='segmentation',
                              description='Output label-map topic (mono8); relative names '
                              'resolve in the namespace.'),
        DeclareLaunchArgument('namespace', default_value='',
                              description='Namespace of the node (and of relative topics).'),
    ]
    arguments += [DeclareLaunchArgument(name, default_value='', description=text)
                  for name, text in PARAMETER_ARGUMENTS.items()]
    return LaunchDescription(arguments + [OpaqueFunction(function=_node)])
