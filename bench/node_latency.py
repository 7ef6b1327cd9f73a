"""Latency and throughput through vos_node vs the bare session on the same 480p frames.

Runs, on one clip (synthetic 854x480 by default, or ``--sequence DIR``):

1. the bare session (``Session.step`` in this process): per-frame time p50/p95, FPS;
2. the node in lock-step (next frame sent when the last answer is back): publish->answer
   p50/p95; minus (1) this is what ROS adds (serialisation, DDS, conversions, thread hand-off);
3. the node fed at each camera rate (default 10 and 30 Hz): p50/p95, output FPS and exactly
   how many frames were answered, dropped by the node's frame queue, or lost in transport
   (from the node's own counters on /diagnostics).

Example: ``.venv/bin/python bench/node_latency.py --frames 60 --rates 10 30``
(add ``--reliability best_effort`` to measure the input QoS choice).
"""

import argparse
import os
import sys
import tempfile
import time

import numpy as np


def _parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('--sequence', help='DAVIS-layout sequence folder (default: synthetic)')
    parser.add_argument('--frames', type=int, default=60, help='frames per run')
    parser.add_argument('--width', type=int, default=854, help='synthetic width')
    parser.add_argument('--height', type=int, default=480, help='synthetic height')
    parser.add_argument('--rates', type=float, nargs='+', default=[10.0, 30.0],
                        help='camera rates to feed the node at (Hz)')
    parser.add_argument('--backend', default='default', help='backend of both pipelines')
    parser.add_argument('--device', default='cpu', help='device of both pipelines')
    parser.add_argument('--resolution', type=int, default=-1,
                        help='working resolution (-1 = backend default)')
    parser.add_argument('--reliability', default='reliable', choices=['reliable', 'best_effort'],
                        help='QoS reliability of the image subscription of the node')
    parser.add_argument('--skip-lockstep', action='store_true', help='skip the lock-step run')
    return parser.parse_args(argv)


def _frames(args):
    if args.sequence:
        from types import SimpleNamespace

        from vos_ros.tools.demo import load_clip

        clip = load_clip(SimpleNamespace(video=None, sequence=args.sequence, name=None,
                                         annotation=None, frames=args.frames))
        return clip.frames, clip.annotation
    from vos_ros.core.synthetic import make_clip

    clip = make_clip(num_frames=args.frames, width=args.width, height=args.height)
    return clip.frames, clip.first_mask


def _percentiles(values):
    values = np.asarray(values, dtype=np.float64)
    if not values.size:
        return float('nan'), float('nan')
    return float(np.percentile(values, 50)), float(np.percentile(values, 95))


def bare_session(frames, mask, args):
    """Return per-frame step times (ms) and wall FPS of the session alone."""
    from vos_ros.core.backends import DEFAULT_BACKEND
    from vos_ros.core.device import resolve_device
    from vos_ros.core.session import Session
    from vos_ros.core.session import SessionConfig
    from vos_ros.ros.node import make_backend

    name = DEFAULT_BACKEND if args.backend in ('', 'default') else args.backend
    backend, _ = make_backend(name, '', resolve_device(args.device))
    config = SessionConfig()
    if args.resolution >= 0:
        config.resolution = args.resolution
    session = Session(backend, config)
    times = []
    start = time.perf_counter()
    for index, frame in enumerate(frames):
        tic = time.perf_counter()
        session.step(frame, mask if index == 0 else None)
        times.append((time.perf_counter() - tic) * 1000.0)
    return times, len(frames) / (time.perf_counter() - start)


def run_node(client, diagnostics, frames, rate, stamp_base, lockstep=False):
    """Feed frames (after a reset: frame 0 pairs with the annotation); return figures."""
    from vos_ros.ros.client import stamp_key

    response = client.reset()
    if response is None or not response.success:
        raise RuntimeError('vos_node ~/reset failed')
    before = diagnostics.fresh()
    keys = []
    period = 1.0 / rate if rate else 0.0
    begin = time.monotonic()
    for index, frame in enumerate(frames):
        if lockstep:
            msg = client.publish(frame, stamp_base + index * 0.001)
            keys.append(stamp_key(msg.header.stamp))
            client.wait_for_answer(keys[-1], timeout=30.0)
            continue
        delay = begin + index * period - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        msg = client.publish(frame, stamp_base + index * period)
        keys.append(stamp_key(msg.header.stamp))
    client.wait_for_answers(keys, timeout=20.0, idle=3.0)
    after = diagnostics.fresh()
    latencies = client.latencies_ms()
    answered = [key for key in keys if key in client.answers]
    times = sorted(client.answers[key][0] for key in answered)
    span = times[-1] - times[0] if len(times) > 1 else 0.0
    received = after.get('frames_received', 0) - before.get('frames_received', 0)
    # The node's figures cover the frames since the reset: this run only.
    node_step = (float(after.get('step_p50_ms', 'nan')), float(after.get('step_p95_ms', 'nan')))
    node_internal = (float(after.get('latency_p50_ms', 'nan')),
                     float(after.get('latency_p95_ms', 'nan')))
    return {
        'sent': len(keys),
        'answered': len(answered),
        'received_by_node': received,
        'lost_in_transport': len(keys) - received,
        'dropped_by_node': after.get('frames_dropped', 0) - before.get('frames_dropped', 0),
        'latency': _percentiles([latencies[key] for key in answered]),
        'fps': (len(times) - 1) / span if span > 0 else 0.0,
        'node_step': node_step,
        'node_internal': node_internal,
    }


def main(argv=None):
    """Run the benchmark and print its table; return the exit code."""
    args = _parse(argv)
    from vos_ros.ros.client import use_local_dds

    use_local_dds()
    from vos_ros.core.labels import write_labels
    from vos_ros.ros.client import NodeDiagnostics
    from vos_ros.ros.client import SegmentationClient
    from vos_ros.ros.client import start_node
    from vos_ros.ros.client import stop_node

    frames, mask = _frames(args)
    height, width = frames[0].shape[:2]
    print(f'{len(frames)} frames {width}x{height}, backend {args.backend}, device {args.device}, '
          f'input QoS {args.reliability}')
    times, fps = bare_session(frames, mask, args)
    step50, step95 = _percentiles(times[1:])
    print(f'bare session        : step p50 {step50:6.1f} ms  p95 {step95:6.1f} ms  '
          f'{fps:5.1f} FPS')

    folder = tempfile.mkdtemp(prefix='vos_bench_')
    annotation = os.path.join(folder, 'first.png')
    write_labels(annotation, mask)
    log = os.path.join(folder, 'node.log')
    process = start_node({'annotation_path': annotation, 'device': args.device,
                          'backend': args.backend, 'resolution': args.resolution,
                          'input_reliability': args.reliability, 'publish_overlay': False,
                          'diagnostics_period': 0.5}, log_path=log)
    client = SegmentationClient(name='vos_bench')
    diagnostics = NodeDiagnostics(client.node)
    code = 1
    try:
        if not client.wait_for_node(60.0, process):
            print(f'node did not start; log {log}', file=sys.stderr)
            return 1
        runs = []
        if not args.skip_lockstep:
            runs.append(('lock-step', None, True))
        runs += [(f'{rate:g} Hz', rate, False) for rate in args.rates]
        for number, (label, rate, lockstep) in enumerate(runs):
            result = run_node(client, diagnostics, frames, rate, 1000.0 * (number + 1),
                              lockstep)
            p50, p95 = result['latency']
            line = (f'node {label:<15}: p50 {p50:6.1f} ms  p95 {p95:6.1f} ms  '
                    f'{result["fps"]:5.1f} FPS  answered {result["answered"]}/{result["sent"]}'
                    f'  dropped by node {result["dropped_by_node"]}'
                    f'  lost in transport {result["lost_in_transport"]}')
            s50, s95 = result['node_step']
            i50, i95 = result['node_internal']
            line += (f'\n  inside the node: session.step p50 {s50:.1f} p95 {s95:.1f} ms; '
                     f'receive->publish p50 {i50:.1f} p95 {i95:.1f} ms')
            if lockstep:
                line += ('\n  ROS adds (lock-step latency minus the step time inside the node): '
                         f'p50 {p50 - s50:+.1f} ms, p95 {p95 - s95:+.1f} ms; vs the bare '
                         f'session here: p50 {p50 - step50:+.1f} ms, p95 {p95 - step95:+.1f} ms')
            print(line, flush=True)
        code = 0
    finally:
        client.close()
        if stop_node(process) != 0:
            print(f'node exited badly; log {log}', file=sys.stderr)
            code = 1
    return code


if __name__ == '__main__':
    sys.exit(main())
