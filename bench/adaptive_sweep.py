"""Sweep ``target_confidence`` on DAVIS-layout sequences: J&F against FPS, in one run (issue 15).

Each configuration runs exactly as ``vos_eval`` runs it (``evaluate_dataset``: first-frame
mask, every frame read and segmented, results at input size, the official J&F): the full model
alone (``--full``, default ``memory``: the target-100 end), the adaptive backend at each
``--targets`` value, and ``flow`` alone (the cheap end). FPS is frames over the wall time of
reading and segmenting (as ``vos_eval``); ``startup s`` is the time to create the backend
(model loading), and ``wall FPS`` counts it too. ``CPU ms`` is the process CPU time per frame
of the whole evaluation (writing and scoring the masks included, alike for every
configuration): less distorted than FPS when other work shares the CPU. Each ``--cheap`` path
(``auto``: the shipped pipeline, the default: the memory model's region-of-interest pass at
targets 50-99 and flow under 50; ``roi``: the region-of-interest pass at every target;
``light``: the memory model's light pass; ``flow``) is swept over the targets.
``--interleave`` runs all configurations frame by frame in turn instead, for machines whose
speed drifts during a run (shared or throttled VMs): each configuration's FPS then comes from
the same minutes as the others'. ``full %`` / ``cheap %`` are the shares of frames each path
produced (the first frame of each sequence is the given mask).

Writes ``OUT/sweep.csv`` and ``OUT/sweep.png`` (J&F against FPS) and prints the table. Pick the
default target on sequences other than the hold-out (``bench/memory_dev.txt``), then report
the hold-out (``bench/memory_holdout.txt``).

Example (the shipped pipeline at its default target 50 and below, against the two ends)::

    nice -n 5 .venv/bin/python bench/adaptive_sweep.py ../shared/data/davis2016/train \\
        --sequences-file bench/memory_holdout.txt --targets 90,70,50,30 \\
        --out out/adaptive_sweep/holdout
"""

import argparse
import csv
import os
import sys
import tempfile
import time

from vos_ros.core.backends import create_backend
from vos_ros.core.backends import create_backend_with_target
from vos_ros.core.davis import Dataset
from vos_ros.core.davis import read_sequences_file
from vos_ros.core.errors import DataError
from vos_ros.core.errors import VosError
from vos_ros.tools.evaluate import check_sequences
from vos_ros.tools.evaluate import evaluate_dataset
from vos_ros.tools.evaluate import path_counts

#: Names ``--cheap`` takes (``auto`` is the shipped pipeline's own choice by target).
CHEAP_PATHS = ('auto', 'roi', 'light', 'flow')
COLUMNS = ('config', 'target', 'JF', 'J', 'F', 'fps', 'wall_fps', 'startup_s', 'speedup',
           'cpu_ms', 'full_pct', 'cheap_pct', 'frames')


def _parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('root', help='DAVIS-layout dataset root')
    which = parser.add_mutually_exclusive_group()
    which.add_argument('--sequences-file', default=None, help='one sequence name per line')
    which.add_argument('--sequences', nargs='+', default=None, help='sequence names')
    parser.add_argument('--targets', default='90,80,70,60,50,30,0',
                        help='comma-separated targets below 100 (100 = the full model alone, '
                             'always run)')
    parser.add_argument('--full', default='memory', help='full-model backend')
    parser.add_argument('--cheap', default='auto',
                        help='comma-separated cheap paths swept at every target: auto (the '
                             'shipped pipeline: roi at 50-99, flow under 50), roi (the memory '
                             'model on a crop around the last result), light (the memory '
                             'model on a smaller query), flow')
    parser.add_argument('--flow-targets', default=None,
                        help='targets for the flow cheap path when it is in --cheap (None = '
                             '--targets)')
    parser.add_argument('--model', default=None, help='its model file (None = shipped)')
    parser.add_argument('--max-cheap-frames', type=int, default=None,
                        help='adaptive max_cheap_frames (None = the backend default)')
    parser.add_argument('--confidence-model', default=None,
                        help='confidence estimate JSON (None = the shipped one)')
    parser.add_argument('--no-flow', action='store_true', help='skip flow alone')
    parser.add_argument('--out', default='out/adaptive_sweep', help='folder for csv and png')
    parser.add_argument('--interleave', action='store_true',
                        help='run every configuration on each frame in turn (one process, one '
                             'frame read shared): a machine whose speed drifts during the run '
                             'then slows all of them alike, so the FPS ratios hold; no masks '
                             'are written and CPU ms is not measured')
    parser.add_argument('--keep-masks', action='store_true',
                        help='keep the masks of every configuration under OUT/masks')
    args = parser.parse_args(argv)
    # checked before any model loads: a typo should not cost a run
    cheap = [c.strip() for c in args.cheap.split(',') if c.strip()]
    unknown = sorted(set(cheap) - set(CHEAP_PATHS))
    if unknown or not cheap:
        # one line, as the other bad inputs (parser.error would print the usage first)
        parser.exit(2, f'adaptive_sweep: error: --cheap: unknown cheap path(s) '
                       f'{", ".join(unknown) or "(none given)"}; choose from '
                       f'{", ".join(CHEAP_PATHS)}\n')
    for option in ('targets', 'flow_targets'):
        for text in (getattr(args, option) or '').split(','):
            try:
                ok = not text.strip() or 0.0 <= float(text) < 100.0
            except ValueError:
                ok = False
            if not ok:
                parser.exit(2, f'adaptive_sweep: error: --{option.replace("_", "-")}: '
                               f'{text.strip()!r} is not a target in [0, 100) (100, the full '
                               'model alone, always runs)\n')
    return args


def _configs(args):
    options = {'model_path': args.model} if args.model else {}
    adaptive = dict(options)
    if args.max_cheap_frames is not None:
        adaptive['max_cheap_frames'] = args.max_cheap_frames
    if args.confidence_model:
        adaptive['confidence_model'] = args.confidence_model
    configs = [(f'{args.full} (target 100)', 100.0,
                lambda: create_backend(args.full, **options))]
    for cheap in [c.strip() for c in args.cheap.split(',') if c.strip()]:
        targets = args.flow_targets if cheap == 'flow' and args.flow_targets else args.targets
        for text in targets.split(','):
            if not text.strip():
                continue
            target = float(text)
            if not 0.0 <= target < 100.0:
                raise ValueError(f'targets must lie in [0, 100), got {text}')
            configs.append((f'{cheap} {target:g}', target,
                            lambda t=target, c=cheap: create_backend_with_target(
                                'adaptive', t, full=args.full, cheap=c, **adaptive)))
    if not args.no_flow:
        configs.append(('flow', None, lambda: create_backend('flow')))
    return configs


def _plot(path, rows, title):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6.5, 4.5))
    for cheap in sorted({r['config'].split()[0] for r in rows
                         if r['target'] not in ('', '100')}):
        adaptive = [r for r in rows if r['target'] not in ('', '100')
                    and r['config'].split()[0] == cheap]
        adaptive.sort(key=lambda r: float(r['target']))
        what = {'light': 'light pass', 'roi': 'ROI pass',
                'auto': 'ROI pass (50-99) / flow (< 50): shipped'}.get(cheap, cheap)
        axis.plot([float(r['fps']) for r in adaptive], [float(r['JF']) for r in adaptive],
                  'o-', label=f'adaptive: full model + {what}')
        for index, row in enumerate(adaptive):
            # alternate above and below the line: neighbouring targets often lie close
            axis.annotate(f'{float(row["target"]):g}', (float(row['fps']), float(row['JF'])),
                          textcoords='offset points', xytext=(4, 5 if index % 2 else -11),
                          fontsize=8)
    for row in rows:
        if row['target'] == '':
            axis.plot(float(row['fps']), float(row['JF']), 's', label=row['config'])
    full = [r for r in rows if r['target'] == '100']
    if full:
        axis.plot(float(full[0]['fps']), float(full[0]['JF']), 'D', color='black',
                  label=full[0]['config'])
    axis.set_xlabel('FPS (reading + segmenting, as vos_eval)')
    axis.set_ylabel('J&F (%)')
    axis.set_title(title, fontsize=9)
    axis.grid(alpha=0.3)
    axis.legend(fontsize='small', loc='lower left')
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def _interleaved(args, names):
    """Rows of every configuration, run frame by frame in turn on the same frames.

    Each configuration has its own session (working size and size multiple as
    ``evaluate_dataset`` sets them) and is scored by the same rule as ``vos_eval``
    (``evaluate._score``); FPS counts the shared frame read plus the configuration's own
    ``Session.step``.
    """
    from vos_ros.core.davis import Dataset
    from vos_ros.core.session import Session
    from vos_ros.core.session import SessionConfig
    from vos_ros.tools.evaluate import _score
    from vos_ros.tools.evaluate import check_sequences
    from vos_ros.tools.evaluate import mean_scores
    from vos_ros.tools.evaluate import SequenceResult

    dataset = Dataset(args.root)
    sequences = check_sequences(dataset, list(dict.fromkeys(names)) if names
                                else dataset.sequence_names())
    runs = []
    for label, target, make in _configs(args):
        tic = time.perf_counter()
        backend = make()
        config = SessionConfig(size_multiple=int(getattr(backend, 'size_multiple', 1) or 1))
        runs.append({'label': label, 'target': target, 'session': Session(backend, config),
                     'startup': time.perf_counter() - tic, 'seconds': 0.0, 'paths': {},
                     'results': []})
    for sequence in sequences:
        first = sequence.read_mask(0, log=lambda line: None)
        predictions = {id(run): [] for run in runs}
        for run in runs:
            run['session'].reset()
        for index in range(len(sequence)):
            tic = time.perf_counter()
            image = sequence.read_frame(index)
            read = time.perf_counter() - tic
            for run in runs:
                tic = time.perf_counter()
                result = run['session'].step(image, first if index == 0 else None)
                run['seconds'] += read + time.perf_counter() - tic
                run['paths'][result.path] = run['paths'].get(result.path, 0) + 1
                predictions[id(run)].append(result.labels)
        for run in runs:
            scores, objects, _ = _score(sequence, predictions[id(run)], first)
            run['results'].append(SequenceResult(name=sequence.name, frames=len(sequence),
                                                 seconds=0.0, scores=scores, objects=objects))
        print(f'{sequence.name}: ' + ', '.join(
            f'{run["label"]} {run["results"][-1].scores["JF"]:.1f}' for run in runs),
            flush=True)
    rows = []
    for run in runs:
        mean = {key: f'{value:.3f}' for key, value in mean_scores(run['results']).items()}
        rows.append(_row(run['label'], run['target'], mean,
                         sum(r.frames for r in run['results']), run['seconds'],
                         run['startup'], run['paths'], ''))
    return rows


def _row(label, target, mean, frames, seconds, startup, paths, cpu_ms):
    """One CSV row: ``mean`` holds the 'JF', 'J', 'F' strings, ``paths`` frames per path."""
    row = {'config': label, 'target': '' if target is None else f'{target:g}',
           'JF': mean['JF'], 'J': mean['J'], 'F': mean['F'],
           'fps': f'{frames / seconds:.2f}',
           'wall_fps': f'{frames / (seconds + startup):.2f}',
           'startup_s': f'{startup:.2f}', 'frames': frames, 'cpu_ms': cpu_ms,
           'full_pct': f'{100.0 * paths.get("full", 0) / frames:.1f}',
           'cheap_pct': f'{100.0 * paths.get("cheap", 0) / frames:.1f}'}
    if target is None:  # flow alone: the cheap path on every frame but the given ones
        row['full_pct'], row['cheap_pct'] = '0.0', row['full_pct']
    return row


def main(argv=None):
    """Run the sweep; return the exit code (1 with one line on stderr for bad input)."""
    args = _parse(argv)
    try:
        names = args.sequences
        if args.sequences_file:
            names = read_sequences_file(args.sequences_file)
            if not names:
                raise DataError(f'sequences file {args.sequences_file} lists no sequence')
        # every name checked before any model loads (as vos_eval does)
        dataset = Dataset(args.root)
        check_sequences(dataset, list(dict.fromkeys(names)) if names
                        else dataset.sequence_names())
        return _sweep(args, names)
    except (VosError, ValueError, OSError) as error:
        print(f'adaptive_sweep: error: {error}', file=sys.stderr)
        return 1


def _sweep(args, names):
    os.makedirs(args.out, exist_ok=True)
    rows = _interleaved(args, names) if args.interleave else []
    masks_root = os.path.join(args.out, 'masks') if args.keep_masks else tempfile.mkdtemp()
    for label, target, make in [] if args.interleave else _configs(args):
        tic = time.perf_counter()
        backend = make()
        startup = time.perf_counter() - tic
        out = os.path.join(masks_root, label.replace(' ', '_').replace('(', '').replace(')', ''))
        cpu = time.process_time()
        results, mean = evaluate_dataset(args.root, out, sequences=names, backend=backend,
                                         progress=False, announce=False)
        cpu = time.process_time() - cpu
        frames = sum(r.frames for r in results)
        row = _row(label, target, mean, frames, sum(r.seconds for r in results), startup,
                   path_counts(results), f'{1000.0 * cpu / frames:.1f}')
        rows.append(row)
        print(f'{label:22s} J&F {float(row["JF"]):5.1f}  FPS {row["fps"]:>6s}  '
              f'CPU ms {row["cpu_ms"]:>6s}  '
              f'full {row["full_pct"]:>5s} %  cheap {row["cheap_pct"]:>5s} %', flush=True)
    base = next(float(r['fps']) for r in rows if r['target'] == '100')
    for row in rows:
        row['speedup'] = f'{float(row["fps"]) / base:.2f}'
    with open(os.path.join(args.out, 'sweep.csv'), 'w', newline='', encoding='utf-8') as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    what = (os.path.basename(args.sequences_file) if args.sequences_file
            else f'{len(names)} sequence{"s" if len(names) > 1 else ""}' if names
            else 'all sequences')
    _plot(os.path.join(args.out, 'sweep.png'), rows,
          f'target_confidence sweep on {what} ({os.path.basename(os.path.abspath(args.root))})')
    print()
    print(f'{"config":22s} {"J&F":>6s} {"J":>6s} {"F":>6s} {"FPS":>7s} {"wallFPS":>7s} '
          f'{"start s":>7s} {"x full":>6s} {"CPU ms":>7s} {"full %":>6s} {"cheap %":>7s}')
    for row in rows:
        print(f'{row["config"]:22s} {float(row["JF"]):6.1f} {float(row["J"]):6.1f} '
              f'{float(row["F"]):6.1f} {row["fps"]:>7s} {row["wall_fps"]:>7s} '
              f'{row["startup_s"]:>7s} {row["speedup"]:>6s} {row["cpu_ms"]:>7s} '
              f'{row["full_pct"]:>6s} '
              f'{row["cheap_pct"]:>7s}')
    print(f'-> {os.path.join(args.out, "sweep.csv")}, {os.path.join(args.out, "sweep.png")}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
