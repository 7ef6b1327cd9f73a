"""J&F and FPS of segmentation backends on a DAVIS-layout folder, side by side.

Every backend runs through ``Session`` exactly as ``vos_eval`` runs it (first-frame mask,
results at input size), and two baselines are measured in the same run so that the figures
can be read as ratios on whatever machine (and load) this runs on:

- ``repeat``: the first mask repeated on every frame (the floor any tracker must beat);
- ``warp``: plain DIS warping of the previous mask (``flow`` with consistency and appearance
  off), the naive propagation the ``flow`` backend improves on.

FPS is wall clock per frame *including reading and decoding the JPEG* (frames are read inside
the timed loop) and the session's resizing; scoring is outside the timed loop. ``CPU ms`` is
the process CPU time per frame (all threads), a figure that a loaded machine distorts less.

Example::

    .venv/bin/python bench/backends.py ../shared/data/davis2016/train \\
        --sequences-file bench/flow_holdout.txt --backends flow,flow:quality=fast
"""

import argparse
import os
import sys
import time

import numpy as np


def _parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('root', help='DAVIS-layout dataset root (JPEGImages/, Annotations/)')
    parser.add_argument('--sequences-file', default=None,
                        help='file with one sequence name per line (default: all sequences)')
    parser.add_argument('--sequences', nargs='+', default=None, help='sequence names')
    parser.add_argument('--backends', default='flow',
                        help='comma-separated backends; NAME:key=value:key=value passes '
                             'options (e.g. flow:quality=fast)')
    parser.add_argument('--resolution', type=int, default=None,
                        help='working resolution for every backend (None = each default)')
    parser.add_argument('--no-baselines', action='store_true',
                        help='skip the repeat and naive-warp baselines')
    parser.add_argument('--threads', type=int, default=None,
                        help='OpenCV threads (None = OpenCV default)')
    return parser.parse_args(argv)


def _parse_value(text):
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    if text.lower() in ('true', 'false'):
        return text.lower() == 'true'
    if text.lower() == 'none':
        return None  # an option's "off" (e.g. flow:anchor_reach=None)
    return text


def _backend_spec(spec):
    name, *pairs = spec.split(':')
    options = {}
    for pair in pairs:
        if '=' not in pair:
            raise ValueError(f'backend option {pair!r} in {spec!r} is not key=value')
        key, value = pair.split('=', 1)
        options[key] = _parse_value(value)
    return name, options


class _Repeat:
    """Baseline: the given mask on every frame (a Backend in all but inheritance)."""

    name = 'repeat'
    default_resolution = 240

    def reset(self):
        self._probs = None

    def memorize(self, image, probs):
        self._probs = np.asarray(probs, np.float32)

    def propagate(self, image):
        return self._probs


def _make(name, options):
    from vos_ros.core.backends import create_backend
    from vos_ros.core.backends.base import Backend

    if name == 'repeat':
        backend = _Repeat()
        Backend.register(_Repeat)
        return backend
    if name == 'warp':
        # Plain DIS (the medium preset as OpenCV ships it) warping the previous soft mask at
        # the default working size: nothing of what the flow backend adds.
        return create_backend('flow', consistency=False, appearance=False, temperature=1.0,
                              lost_fraction=0.0, variational=-1, refine=0)
    return create_backend(name, **options)


def _run(label, name, options, sequences, resolution):
    from vos_ros.core.davis import read_image
    from vos_ros.core.metrics import evaluate_sequence
    from vos_ros.core.session import Session
    from vos_ros.core.session import SessionConfig
    from vos_ros.tools.cli import progress_bar

    backend = _make(name, options)
    session = Session(backend, SessionConfig(resolution=resolution))
    scores, frames, seconds, cpu = [], 0, 0.0, 0.0
    for sequence in progress_bar(sequences, desc=label, leave=False):
        gts = [sequence.read_mask(i) for i in range(len(sequence))]
        session.reset()
        preds = []
        tic = time.perf_counter()
        cpu_tic = time.process_time()
        for index, path in enumerate(sequence.frame_paths):
            image = read_image(path)
            preds.append(session.step(image, gts[0] if index == 0 else None).labels)
        seconds += time.perf_counter() - tic
        cpu += time.process_time() - cpu_tic
        frames += len(sequence)
        scores.append(evaluate_sequence(gts, preds))
    mean = {key: 100.0 * float(np.mean([s[key] for s in scores])) for key in ('J', 'F', 'JF')}
    mean['fps'] = frames / max(seconds, 1e-9)
    # CPU seconds of this process (all its threads): on a machine shared with other work
    # wall clock FPS drops with the load, CPU time much less so.
    mean['cpu_ms'] = 1000.0 * cpu / max(frames, 1)
    mean['per_sequence'] = [100.0 * s['JF'] for s in scores]
    return mean


def main(argv=None):
    args = _parse(argv)
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import cv2

    from vos_ros.core.davis import Dataset
    from vos_ros.core.davis import read_sequences_file
    from vos_ros.core.errors import VosError

    if args.threads is not None:
        cv2.setNumThreads(args.threads)
    try:
        dataset = Dataset(args.root)
        names = args.sequences or (read_sequences_file(args.sequences_file)
                                   if args.sequences_file else dataset.sequence_names())
        sequences = [dataset.sequence(n) for n in names]
        specs = [_backend_spec(s) for s in args.backends.split(',') if s.strip()]
    except (VosError, ValueError) as error:
        print(f'error: {error}', file=sys.stderr)
        return 1
    runs = [] if args.no_baselines else [('repeat', 'repeat', {}), ('warp', 'warp', {})]
    runs += [(spec, name, options) for spec, (name, options)
             in zip(args.backends.split(','), specs)]
    results = {}
    for label, name, options in runs:
        try:
            results[label] = _run(label, name, options, sequences, args.resolution)
        except (VosError, ValueError) as error:
            print(f'error: {label}: {error}', file=sys.stderr)
            return 1
    print(f'{len(sequences)} sequences, {sum(len(s) for s in sequences)} frames, '
          f'resolution {args.resolution if args.resolution is not None else "default"}')
    header = f'{"backend":28s} {"J&F":>6s} {"J":>6s} {"F":>6s} {"FPS":>7s} {"CPU ms":>7s}'
    if 'warp' in results:
        header += f' {"J&F/warp":>9s} {"FPS/warp":>9s}'
    print(header)
    for label, row in results.items():
        line = (f'{label:28s} {row["JF"]:6.1f} {row["J"]:6.1f} {row["F"]:6.1f} '
                f'{row["fps"]:7.1f} {row["cpu_ms"]:7.1f}')
        if 'warp' in results:
            base = results['warp']
            line += f' {row["JF"] / base["JF"]:9.2f} {row["fps"] / base["fps"]:9.2f}'
        print(line)
    print('\nper sequence J&F:')
    print(f'{"sequence":20s} ' + ' '.join(f'{label[:12]:>12s}' for label in results))
    for index, sequence in enumerate(sequences):
        print(f'{sequence.name:20s} ' + ' '.join(
            f'{row["per_sequence"][index]:12.1f}' for row in results.values()))
    return 0


if __name__ == '__main__':
    sys.exit(main())
