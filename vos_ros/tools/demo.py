"""``vos_demo``: play a clip on /image through a live vos_node and score what comes back.

The demo starts ``vos_node`` as a child process (same installation), publishes the clip's frames
over DDS on loopback at a camera rate, collects ``/segmentation``, and writes to ``--out``: the
annotation it gave the node (``AnnotatedFrame.png``), every answered mask (``masks/``), an overlay
video and ``summary.json`` (with the model file that ran and its version). It prints throughput,
latency and, with ground truth, J&F.
"""

import argparse
import json
import os
import sys
import time

import numpy as np

from vos_ros.core.backends.adaptive import check_target
from vos_ros.core.errors import DataError
from vos_ros.core.errors import VosError
from vos_ros.core.labels import overlay
from vos_ros.core.labels import read_labels
from vos_ros.core.labels import write_labels
from vos_ros.tools.cli import check_out_folder
from vos_ros.tools.cli import finite_float
from vos_ros.tools.cli import int_in
from vos_ros.tools.cli import progress_bar
from vos_ros.tools.cli import ToolParser

DEFAULT_OUT = os.path.join('out', 'demo')
#: Largest ROS domain id (vos_ros.ros.client.check_ros_environment's range is 0..232).
MAX_DOMAIN_ID = 232
#: Object ids a synthetic clip can hold (label values 1..255).
MAX_OBJECTS = 255


def _target_number(text):
    """``--target-confidence``: an int where the text is one (the node's parameter keeps the
    type it is given), else a float; argparse reports anything else."""
    try:
        return int(text)
    except ValueError:
        return finite_float(text)  # refuses nan, inf and 1e400 as every numeric option


def build_parser():
    """Return the argument parser of vos_demo."""
    parser = ToolParser(
        prog='vos_demo', description=__doc__.split('\n\n')[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    source = parser.add_mutually_exclusive_group()
    source.add_argument('--sequence', metavar='DIR',
                        help='DAVIS-layout sequence: a folder with JPEGImages/ and Annotations/, '
                        'a DAVIS root (with --name), or a JPEGImages/480p/<seq> folder; '
                        'default: a synthetic clip')
    source.add_argument('--video', metavar='FILE', help='video file to play (needs --annotation)')
    parser.add_argument('--name', help='sequence name inside a DAVIS root (default: the first)')
    parser.add_argument('--annotation', metavar='PNG',
                        help='first-frame label map (default: the first mask of the clip)')
    parser.add_argument('--out', default=DEFAULT_OUT, help='output folder')
    parser.add_argument('--rate', type=float, default=10.0, help='camera rate in Hz')
    parser.add_argument('--frames', type=int_in(0, meaning=' (0 = all)'), default=0,
                        help='play at most this many frames (0 = all; synthetic: 60)')
    parser.add_argument('--width', type=int, default=854, help='synthetic clip width')
    parser.add_argument('--height', type=int, default=480, help='synthetic clip height')
    parser.add_argument('--objects', type=int_in(1, MAX_OBJECTS), default=2,
                        help='synthetic clip objects')
    parser.add_argument('--seed', type=int, default=0, help='synthetic clip seed')
    parser.add_argument('--backend', default='default',
                        help='vos_node backend parameter: default (the package default '
                             'pipeline, adaptive), adaptive, memory, embedding or flow')
    parser.add_argument('--target-confidence', type=_target_number, default=-1, metavar='T',
                        help='vos_node target_confidence parameter, 0-100, an integer or a '
                             'decimal: the effort (100 = full model every frame; -1 = the '
                             'backend default)')
    parser.add_argument('--model', default='', help='vos_node model_path parameter')
    parser.add_argument('--device', default='auto', help='vos_node device parameter')
    parser.add_argument('--resolution', type=int, default=-1,
                        help='vos_node working resolution (-1 = backend default)')
    parser.add_argument('--startup-timeout', type=float, default=60.0,
                        help='seconds to wait for the node to come up')
    parser.add_argument('--domain-id', type=int_in(0, MAX_DOMAIN_ID), default=None,
                        help='ROS domain id for the demo and its node (default: random)')
    parser.add_argument('--no-video', action='store_true', help='skip the overlay video')
    return parser


class Clip:
    """Frames to play, the first-frame annotation, and per-frame ground truth when known.

    ``ground_truth``: None, or per frame a label map or None (a frame without a mask).
    """

    def __init__(self, name, frames, annotation, ground_truth=None, names=None):
        self.name = name
        self.frames = frames
        self.annotation = annotation
        self.ground_truth = ground_truth
        self.names = names or [f'{i:05d}' for i in range(len(frames))]


def load_clip(args):
    """Return the Clip the arguments ask for; DataError/ValueError on bad input."""
    limit = args.frames if args.frames > 0 else None
    if args.video:
        clip = _video_clip(args.video, limit)
    elif args.sequence:
        clip = _sequence_clip(args.sequence, args.name, limit)
    else:
        from vos_ros.core.synthetic import make_clip

        synthetic = make_clip(num_frames=limit or 60, width=args.width, height=args.height,
                              num_objects=args.objects, seed=args.seed)
        clip = Clip(f'synthetic-{args.seed}', synthetic.frames, synthetic.first_mask,
                    synthetic.masks)
    if args.annotation:
        from vos_ros.core.davis import fit_labels

        # the node would refuse a mask of another aspect ratio on every frame: say it now
        clip.annotation = fit_labels(
            read_labels(args.annotation), clip.frames[0].shape[:2], args.annotation,
            lambda line: print(f'vos_demo: note: {args.annotation}: {line}', file=sys.stderr))
    if clip.annotation is None:
        raise ValueError('--video needs --annotation FIRST_MASK.png (a label map of frame 0)')
    if not clip.annotation.any():
        raise DataError('the first-frame annotation holds no object (all background)')
    return clip


def _sequence_clip(directory, name, limit):
    from vos_ros.core.davis import Dataset
    from vos_ros.core.davis import fit_labels
    from vos_ros.core.davis import list_images
    from vos_ros.core.davis import read_image
    from vos_ros.core.davis import Sequence

    directory = os.path.normpath(directory)
    if not os.path.isdir(directory):
        raise DataError(f'sequence folder not found: {directory}')
    if os.path.isdir(os.path.join(directory, 'JPEGImages')):
        dataset = Dataset(directory)
        names = dataset.sequence_names()
        if not names:
            raise DataError(f'no sequences in {directory}')
        sequence = dataset.sequence(name or names[0])
    else:  # a JPEGImages[/480p]/<seq> folder: masks live in the parallel Annotations folder
        frames = list_images(directory)
        if not frames:
            raise DataError(f'no images in {directory}')
        parts = directory.split(os.sep)
        if 'JPEGImages' not in parts:
            raise DataError(f'{directory}: expected a DAVIS JPEGImages/<seq> folder or a folder '
                            'holding JPEGImages/ and Annotations/')
        parts[len(parts) - 1 - parts[::-1].index('JPEGImages')] = 'Annotations'
        sequence = Sequence(os.path.basename(directory), frames, os.sep.join(parts))
    count = len(sequence) if limit is None else min(limit, len(sequence))
    frames = [read_image(path)
              for path in progress_bar(sequence.frame_paths[:count], desc='reading',
                                       leave=False)]
    annotation = sequence.read_mask(0) if sequence.has_mask(0) else None
    # Every frame with a mask is ground truth, as in vos_eval (DAVIS-2017 annotates a few
    # frames only); frame 0 is the annotation, never scored, so its mask is not read twice.
    notes = []
    truth = [fit_labels(sequence.read_mask(i, log=notes.append), frames[i].shape[:2],
                        sequence.mask_path(i), notes.append)
             if i and sequence.has_mask(i) else None for i in range(count)]
    if notes:
        more = f' (and {len(notes) - 1} more masks alike)' if len(notes) > 1 else ''
        print(f'vos_demo: note: {sequence.name}: {notes[0]}{more}', file=sys.stderr)
    return Clip(sequence.name, frames, annotation, truth, sequence.frame_names[:count])


def _video_clip(path, limit):
    import cv2

    if not os.path.isfile(path):
        raise DataError(f'video file not found: {path}')
    capture = cv2.VideoCapture(path)
    frames = []
    try:
        while limit is None or len(frames) < limit:
            ok, frame = capture.read()
            if not ok:
                break
            frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    finally:
        capture.release()
    if not frames:
        raise DataError(f'cannot read any frame from {path}')
    return Clip(os.path.splitext(os.path.basename(path))[0], frames, None)


def play(clip, args, out):
    """Run the node on the clip; return (predictions, latencies_ms, timings dict)."""
    from vos_ros.ros.client import check_ros_environment
    from vos_ros.ros.client import start_node
    from vos_ros.ros.client import use_local_dds

    # The demo and its node share a loopback-only domain of their own.
    use_local_dds(args.domain_id)
    check_ros_environment()  # a bad --domain-id: one line, not a Fast DDS exit
    annotation_path = os.path.join(out, 'AnnotatedFrame.png')
    write_labels(annotation_path, clip.annotation)
    parameters = {'annotation_path': os.path.abspath(annotation_path), 'device': args.device,
                  'backend': args.backend, 'resolution': args.resolution,
                  'target_confidence': args.target_confidence, 'publish_overlay': False,
                  # a report soon after the last frame, for the summary
                  'diagnostics_period': 0.5}
    if args.model:
        parameters['model_path'] = os.path.abspath(args.model)
    log_path = os.path.join(out, 'node.log')
    started = time.monotonic()
    process = start_node(parameters, log_path=log_path)
    from vos_ros.ros.client import NodeDiagnostics
    from vos_ros.ros.client import SegmentationClient
    from vos_ros.ros.client import stamp_key

    client = None
    try:
        client = SegmentationClient(name='vos_demo_player')
        diagnostics = NodeDiagnostics(client.node)
        if not client.wait_for_node(args.startup_timeout, process):
            raise VosError(f'vos_node did not start (see {log_path}): {_last_line(process)}')
        startup = time.monotonic() - started
        period = 1.0 / args.rate
        keys = []
        base = time.time()
        begin = time.monotonic()
        for index, frame in enumerate(progress_bar(clip.frames, desc='playing',
                                                   unit='frame')):
            wake = begin + index * period
            delay = wake - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            msg = client.publish(frame, base + index * period)
            keys.append(stamp_key(msg.header.stamp))
        # The last frames need one inference time to come back; stop when nothing more comes.
        client.wait_for_answers(keys, timeout=15.0, idle=2.0)
        wall = time.monotonic() - begin
        latencies = client.latencies_ms()
        predictions = [client.answers[key][1] if key in client.answers else None
                       for key in keys]
        answer_times = sorted(client.answers[key][0] for key in keys if key in client.answers)
        diagnostics.fresh(timeout=1.5)  # the node's own word: backend, target, path shares
    finally:
        if client is not None:
            client.close()
        code = process.stop()
    if code != 0:
        raise VosError(f'vos_node exited with code {code} (see {log_path}): '
                       f'{_last_line(process)}')
    span = answer_times[-1] - answer_times[0] if len(answer_times) > 1 else 0.0
    timings = {
        'startup_s': startup,
        'wall_s': wall,
        'output_fps': (len(answer_times) - 1) / span if span > 0 else 0.0,
        'latency_ms': [latencies[key] for key in keys if key in latencies],
        'node': diagnostics.summary(),
    }
    return predictions, timings


def _model_version(path):
    """The ``version`` a model file's metadata gives (None without a readable model)."""
    if not path:
        return None
    from vos_ros.core.model_io import read_metadata

    try:
        return read_metadata(path).get('version')
    except VosError:  # the node ran it: a file changed since is no reason to fail the run
        return None


def _last_line(process):
    return process.tail(1).strip() or '(no output)'


def write_outputs(clip, predictions, out, with_video=True, fps=10.0):
    """Write masks (missing answers hold the last mask) and the overlay video; return masks."""
    held, filled = np.zeros_like(clip.annotation), []
    for index, labels in enumerate(predictions):
        if labels is not None:
            held = labels
            write_labels(os.path.join(out, 'masks', clip.names[index] + '.png'), labels)
        filled.append(held if held.shape == clip.frames[index].shape[:2] else
                      np.zeros(clip.frames[index].shape[:2], np.uint8))
    video_path = None
    if with_video:
        from vos_ros.core.video import put_caption
        from vos_ros.core.video import VideoWriter

        with VideoWriter(os.path.join(out, 'overlay.mp4'), fps=fps) as writer:
            for index, (frame, labels) in enumerate(zip(clip.frames, filled)):
                shown = overlay(frame, labels)
                if predictions[index] is None:
                    shown = put_caption(shown, f'frame {index}: dropped (holding last mask)')
                writer.write(shown)
        video_path = writer.path
    return filled, video_path


def main(argv=None):
    """Run the demo; return the exit code."""
    args = build_parser().parse_args(argv)
    try:
        check_out_folder(args.out)
        if args.rate <= 0:
            raise ValueError(f'--rate must be > 0, got {args.rate}')
        if args.target_confidence != -1:  # -1: the backend default, as on the node
            check_target(args.target_confidence, '--target-confidence')
        if args.target_confidence != -1 and args.backend == 'flow':
            raise ValueError('--target-confidence needs a backend with a full model (default, '
                             'adaptive, memory, embedding); flow is the cheap path itself')
        clip = load_clip(args)
        os.makedirs(args.out, exist_ok=True)
        print(f'clip {clip.name}: {len(clip.frames)} frames '
              f'{clip.frames[0].shape[1]}x{clip.frames[0].shape[0]}, objects '
              f'{[int(i) for i in np.unique(clip.annotation) if i]}, played at {args.rate:g} Hz')
        predictions, timings = play(clip, args, args.out)
        filled, video_path = write_outputs(clip, predictions, args.out, not args.no_video,
                                           fps=args.rate)
    except (VosError, ValueError, OSError) as error:
        print(f'vos_demo: error: {error}', file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print('vos_demo: interrupted', file=sys.stderr)
        return 130
    answered = sum(p is not None for p in predictions)
    latency = np.array(timings['latency_ms'])
    summary = {
        'clip': clip.name,
        'frames_sent': len(clip.frames),
        'frames_answered': answered,
        'frames_dropped': len(clip.frames) - answered,
        'rate_hz': args.rate,
        'output_fps': round(timings['output_fps'], 2),
        'latency_ms_p50': round(float(np.percentile(latency, 50)), 1) if latency.size else None,
        'latency_ms_p95': round(float(np.percentile(latency, 95)), 1) if latency.size else None,
        'node_startup_s': round(timings['startup_s'], 1),
    }
    # what the node said of itself on /diagnostics after the run
    node = timings['node']['last']
    for key in ('backend', 'device', 'target_confidence', 'effective_target',
                'path_full_share', 'path_cheap_share'):
        if key in node:
            summary[f'node_{key}'] = node[key]
    summary['node_lowered_target_reports'] = timings['node']['lowered_messages']
    # which model ran, as vos_eval's run.json says: the node's word (its default when no
    # --model); the version from the file's metadata, as the node's report would come back
    # parsed as a number where it looks like one (1.10 -> 1.1)
    summary['model'] = node.get('model') or (os.path.abspath(args.model) if args.model
                                             else None)
    summary['model_version'] = _model_version(summary['model'])
    scores = None
    if clip.ground_truth is not None:
        from vos_ros.core.metrics import evaluate_video

        # the rule vos_eval and vos_bag_eval share: the frames with ground truth, first and
        # last excluded, on the objects of the annotation
        scores = evaluate_video(clip.ground_truth, filled, clip.annotation)
    summary['scored_frames'] = len(scores['frames']) if scores is not None else 0
    summary['unscored_objects'] = scores['unscored_objects'] if scores is not None else []
    if scores is not None:
        summary.update({'J': round(100 * scores['J'], 1), 'F': round(100 * scores['F'], 1),
                        'JF': round(100 * scores['JF'], 1)})
    summary['outputs'] = {'annotation': os.path.join(args.out, 'AnnotatedFrame.png'),
                          'masks': os.path.join(args.out, 'masks'), 'video': video_path,
                          'node_log': os.path.join(args.out, 'node.log')}
    with open(os.path.join(args.out, 'summary.json'), 'w', encoding='utf-8') as handle:
        json.dump(summary, handle, indent=2)
    from vos_ros.ros.client import describe_node_report

    line = describe_node_report(timings['node'])
    if line:
        print(line)
    if summary['model']:
        print(f'model {summary["model"]}' + (f' version {summary["model_version"]}'
                                             if summary['model_version'] else ''))
    print(f'answered {answered}/{len(clip.frames)} frames ({summary["frames_dropped"]} dropped '
          f'by the node\'s frame queue), output {summary["output_fps"]:.1f} FPS')
    if summary['frames_dropped']:
        print('  (inference was slower than the camera here; a lower --resolution or --rate, or '
              'a GPU, answers every frame)')
    if latency.size:
        print(f'latency publish->mask: p50 {summary["latency_ms_p50"]:.1f} ms, '
              f'p95 {summary["latency_ms_p95"]:.1f} ms (node start-up '
              f'{summary["node_startup_s"]:.1f} s)')
    if 'JF' in summary:
        print(f'J&F {summary["JF"]:.1f} (J {summary["J"]:.1f}, F {summary["F"]:.1f}) on '
              f'{summary["scored_frames"]} of {len(clip.frames)} frames (those with a '
              'ground-truth mask, first and last excluded; dropped frames hold the last mask)')
    else:
        print('not scored: no frame has a ground-truth mask but the first and the last')
    if summary['unscored_objects']:
        print(f'note: object(s) {summary["unscored_objects"]} appear only after the first '
              'frame: not scored (the node is given the first-frame mask only)',
              file=sys.stderr)
    print(f'wrote {args.out}/: AnnotatedFrame.png, masks/, '
          f'{os.path.basename(video_path) if video_path else "(no video)"}, summary.json'
          + (', node.log' if os.path.exists(os.path.join(args.out, 'node.log')) else ''))
    return 0


if __name__ == '__main__':
    sys.exit(main())
