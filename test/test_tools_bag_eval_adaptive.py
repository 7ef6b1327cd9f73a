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
    # the node's own word on the run reaches the report: backend, requested target
    diagnostics = report['node_diagnostics']
    assert diagnostics['messages'] >= 1, diagnostics
    assert diagnostics['last']['backend'].startswith('adaptive: embedding')
    assert diagnostics['last']['target_confidence'] == 0
    # lock-step never leaves a frame waiting: the node never lowers its effort
    assert diagnostics['lowered_messages'] == 0


class _FakeNode:
    def create_subscription(self, *args):
        return None


def _diagnostics_message(name, requested, effective):
    from diagnostic_msgs.msg import DiagnosticArray
    from diagnostic_msgs.msg import DiagnosticStatus
    from diagnostic_msgs.msg import KeyValue

    values = {'backend': 'adaptive: memory + roi/flow', 'target_confidence': f'{requested:g}',
              'effective_target': f'{effective:g}', 'path_full_share': '0.250',
              'path_cheap_share': '0.700', 'latency_p95_ms': '92.8'}
    status = DiagnosticStatus(name=f'{name}: segmentation',
                              values=[KeyValue(key=k, value=v) for k, v in values.items()])
    return DiagnosticArray(status=[status])


def test_a_node_that_lowered_its_target_is_reported(capsys):
    pytest.importorskip('diagnostic_msgs')
    from vos_ros.ros.client import NodeDiagnostics

    diagnostics = NodeDiagnostics(_FakeNode(), 'vos_node')
    diagnostics._on_message(_diagnostics_message('vos_node', 70, 70))
    diagnostics._on_message(_diagnostics_message('vos_node', 70, 50))
    diagnostics._on_message(_diagnostics_message('other_node', 70, 10))  # not ours
    diagnostics._on_message(_diagnostics_message('vos_node', 70, 60))
    summary = diagnostics.summary()
    assert summary['messages'] == 3 and summary['lowered_messages'] == 2
    assert summary['lowest_effective_target'] == 50.0
    assert summary['last']['effective_target'] == 60
    assert summary['last']['latency_p95_ms'] == pytest.approx(92.8)
    report = {'answered': 10, 'frames': 10, 'dropped': 0, 'fps': 9.5,
              'latency_ms': {'p50': 80.0, 'p95': 120.0, 'max': 130.0}, 'JF': None,
              'unmatched_replies': 0, 'ambiguous_replies': 0, 'unscored_objects': [],
              'node_diagnostics': summary}
    bag_eval.print_summary(report, '/tmp/out')
    captured = capsys.readouterr()
    assert 'node: backend adaptive: memory + roi/flow, target_confidence 70' in captured.out
    assert ('(lowered to keep up: 60 at the end, 50 at the lowest): full model on 25 %, '
            'cheap path on 70 % of its last 300 results') in captured.out
    assert 'lowered target_confidence (to 50 at the lowest) in 2 of its 3' in captured.err


def test_node_report_names_paths_only_for_the_adaptive_backend():
    from vos_ros.ros.client import describe_node_report

    shares = {'path_full_share': 0.8, 'path_cheap_share': 0.0, 'path_given_share': 0.2,
              'device': 'cpu'}
    flow = describe_node_report({'last': dict(shares, backend='flow')})
    assert flow == 'node: backend flow on cpu'  # flow has no full model to share frames with
    adaptive = describe_node_report({'last': dict(shares, backend='adaptive: memory',
                                                  target_confidence=100)})
    assert adaptive.endswith('target_confidence 100: full model on 80 %, cheap path on 0 %, '
                             'given masks on 20 % of its last 300 results')
    assert describe_node_report({'last': {}}) is None
