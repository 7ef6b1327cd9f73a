"""Packaging for vos_ros (ament_python; also installable with plain pip)."""

from glob import glob
import os

from setuptools import find_packages
from setuptools import setup

package_name = 'vos_ros'

ROS_REQUIRES = [
    'ros-jazzy-rclpy[fastrtps]',
    'ros-jazzy-sensor-msgs',
    'ros-jazzy-std-msgs',
    'ros-jazzy-std-srvs',
    'ros-jazzy-diagnostic-msgs',
]

setup(
    name=package_name,
    version='0.1.0',
    packages=find_packages(exclude=['test', 'test.*', 'bench']),
    package_data={package_name: ['data/*.pt', 'data/*.json']},
    data_files=[
        ('share/ament_index/resource_index/packages', ['resource/' + package_name]),
        ('share/' + package_name, ['package.xml']),
        (os.path.join('share', package_name, 'launch'), glob('launch/*.launch.py')),
        (os.path.join('share', package_name, 'config'), glob('config/*.yaml')),
    ],
    python_requires='>=3.10',
    # numpy/opencv come from apt in the ROS image (numpy 1.26, OpenCV 4.6); keep ranges wide.
    install_requires=[
        'setuptools',
        'numpy>=1.24',
        'opencv-python-headless>=4.6',
        'pillow>=9',
        'pyyaml',
        'tqdm',
        'matplotlib',
    ],
    extras_require={
        'torch': ['torch>=2.1'],
        'ros': ROS_REQUIRES,
        'bag': ['rosbags>=0.10'],
        'test': ['pytest', 'hypothesis', 'flake8', 'vos-benchmark', 'rosbags>=0.10'],
    },
    zip_safe=True,
    maintainer='vos_ros developers',
    maintainer_email='vos-ros@example.com',
    description='Video object segmentation for ROS 2 (first-frame annotation, live tracking).',
    license='Apache-2.0',
    entry_points={
        'console_scripts': [
            'vos_node = vos_ros.ros.node:main',
            'annotate = vos_ros.tools.annotate:main',
            'vos_train = vos_ros.tools.train:main',
            'vos_train_box = vos_ros.tools.train_box:main',
            'vos_eval = vos_ros.tools.evaluate:main',
            'vos_export = vos_ros.tools.export:main',
            'vos_make_bag = vos_ros.tools.make_bag:main',
            'vos_bag_eval = vos_ros.tools.bag_eval:main',
            'vos_demo = vos_ros.tools.demo:main',
        ],
    },
)
