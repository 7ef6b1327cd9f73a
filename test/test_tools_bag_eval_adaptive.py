"""vos_bag_eval with target_confidence through --node-args (issue 15)."""

import json

import pytest

from test_tools_bag_eval import clip  # noqa: F401 (fixture)
from test_tools_bag_eval import FRAMES
from test_tools_bag_eval import ros_env  # noqa: F401 (fixture)
from test_tools_bag_eval import write_bag
from vos_ros.tools import bag_eval

pytest.importorskip('torch')


def test_target_confidence_through_node_args(tmp_path, clip, ros_env):  # noqa: F811
    bag = write_bag(tmp_path / 'bag', clip)
    out = tmp_path / 'out'
    code = bag_eval.main([str(bag), '--out', str(out), '--quiet', '--lockstep', '--no-video',
                          '--node-args=-p backend:=embedding -p device:=cpu '
                          '-p target_confidence:=0'])
    log = (out / 'node.log').read_text() if (out / 'node.log').exists() else ''
    assert code == 0, log
    report = json.loads((out / 'report.json').read_text())
    assert report['answered'] == FRAMES and report['J'] > 30.0
    assert 'with backend adaptive: embedding + flow' in log
