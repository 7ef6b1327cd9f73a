"""vos_ros.core (and the offline evaluation tool) never import rclpy or ROS message packages."""

import json
import subprocess
import sys

PROBE = r"""
import importlib
import json
import pkgutil
import sys

import vos_ros.core

names = ['vos_ros.core', 'vos_ros.tools.evaluate']
names += [info.name for info in pkgutil.walk_packages(vos_ros.core.__path__, 'vos_ros.core.')]
for name in names:
    importlib.import_module(name)
ros = sorted(m for m in sys.modules
             if m.split('.')[0] in ('rclpy', 'rosidl_runtime_py', 'cv_bridge')
             or m.split('.')[0].endswith('_msgs') or m.split('.')[0].endswith('_srvs'))
print(json.dumps({'imported': names, 'ros': ros}))
"""


def test_core_imports_no_ros():
    done = subprocess.run([sys.executable, '-c', PROBE], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    # The walk must have found the modules, or the check would pass on nothing.
    for expected in ('vos_ros.core.session', 'vos_ros.core.labels', 'vos_ros.core.metrics',
                     'vos_ros.core.synthetic', 'vos_ros.core.backends.flow'):
        assert expected in report['imported']
    assert report['ros'] == [], f'vos_ros.core pulled in ROS modules: {report["ros"]}'
