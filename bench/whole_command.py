"""Time whole ``vos_eval`` commands as an outside check does: wall clock, start-up included.

Issue 15's speed target is a ratio of two whole commands on the same sequences: ``vos_eval``
with ``--target-confidence 100`` (the full model on every frame) against ``vos_eval`` with no
flag (the shipped default pipeline), wall clock including start-up (Python and torch import,
model loading), JPEG reading, mask writing and scoring. This runs those commands (and
``--backend flow``, the cheap end) as subprocesses, alternating their order in every round
(A B, then B A, ...) so that a machine whose speed drifts slows both alike, and prints each
round's wall times, the ratio of each configuration against the first (the baseline) measured
in the same round, and the J&F each command reported (deterministic: the same every round).

Writes ``OUT/whole_command.csv`` (one row per command run) and ``OUT/whole_command.png``
(wall time per round and configuration; the mean ratio in the title), and prints the table.
Exit code 1 when a command fails (its stderr's last line is printed).

Example (the issue's check on the hold-out, three rounds)::

    .venv/bin/python bench/whole_command.py ../shared/data/davis2016/train \\
        --sequences-file bench/memory_holdout.txt --rounds 3 --out out/whole_command
"""

import argparse
import csv
import json
import os
import shlex
import statistics
import subprocess
import sys
import textwrap
import time

#: The issue's three commands: (label, vos_eval arguments). The first is the baseline.
DEFAULT_CONFIGS = ('target100=--target-confidence 100', 'default=', 'flow=--backend flow')
COLUMNS = ('round', 'config', 'arguments', 'wall_s', 'ratio', 'JF', 'J', 'F', 'frames')


def parse_config(text):
    """``LABEL=ARGS`` -> (label, [args]); ValueError when the label is missing."""
    label, _, arguments = text.partition('=')
    if not label.strip() or '=' not in text:
        raise ValueError(f'a configuration is LABEL=VOS_EVAL_ARGS (args may be empty), got '
                         f'{text!r}')
    return label.strip(), shlex.split(arguments)


def round_order(configs, index):
    """The configurations in round ``index``: as given in even rounds, reversed in odd ones."""
    return list(configs) if index % 2 == 0 else list(reversed(configs))


def ratios(rows, baseline):
    """Per round, each configuration's speed-up: baseline wall time / its wall time."""
    base = {row['round']: row['wall_s'] for row in rows if row['config'] == baseline}
    for row in rows:
        row['ratio'] = base[row['round']] / row['wall_s'] if row['round'] in base else None
    return rows


def _scores(out_dir):
    with open(os.path.join(out_dir, 'run.json'), encoding='utf-8') as handle:
        record = json.load(handle)
    scores = record.get('scores') or {}
    return {key: scores.get(key) for key in ('JF', 'J', 'F')}, record.get('frames')


def vos_eval_command(executable=None):
    """The argv prefix that runs vos_eval: ``executable``, else the console script beside
    this Python (a venv), else ``python -m vos_ros.tools.evaluate`` (a colcon install keeps
    its scripts elsewhere)."""
    if executable:
        return [executable]
    beside = os.path.join(os.path.dirname(sys.executable), 'vos_eval')
    if os.access(beside, os.X_OK):
        return [beside]
    return [sys.executable, '-m', 'vos_ros.tools.evaluate']


def run_command(prefix, dataset, selection, arguments, out_dir):
    """Run one vos_eval command; return (wall seconds, scores dict, frames)."""
    command = [*prefix, dataset, *selection, *arguments, '--out', out_dir, '--no-progress']
    tic = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - tic
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ['(no output)'])[-1]
        raise RuntimeError(f'{shlex.join(command)} exited with {done.returncode}: {last}')
    scores, frames = _scores(out_dir)
    return wall, scores, frames


def _plot(path, rows, labels, title):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    import numpy as np

    rounds = sorted({row['round'] for row in rows})
    figure, axis = plt.subplots(figsize=(8, 4.5))
    width = 0.8 / len(labels)
    for offset, label in enumerate(labels):
        walls = [next((r['wall_s'] for r in rows if r['round'] == n and r['config'] == label),
                      0.0) for n in rounds]
        axis.bar(np.arange(len(rounds)) + offset * width, walls, width, label=label)
    axis.set_xticks(np.arange(len(rounds)) + 0.4 - width / 2)
    axis.set_xticklabels([f'round {n + 1}' for n in rounds])
    axis.set_ylabel('wall clock of the whole command (s)')
    # wrapped: with five commands the ratios ran past the figure's edge
    axis.set_title('\n'.join(textwrap.wrap(title, 90)), fontsize=9)
    # beside the axes: inside, the legend hid the tallest bars
    axis.legend(loc='upper left', bbox_to_anchor=(1.01, 1.0), fontsize='small')
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def _parser():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog='\n\n'.join(__doc__.split('\n\n')[1:]))
    parser.add_argument('dataset', help='DAVIS-layout dataset root')
    which = parser.add_mutually_exclusive_group()
    which.add_argument('--sequences-file', default=None, help='one sequence name per line')
    which.add_argument('--sequences', nargs='+', default=None, help='sequence names')
    parser.add_argument('--configs', nargs='+', default=list(DEFAULT_CONFIGS),
                        metavar='LABEL=ARGS',
                        help='commands to compare, the first the baseline (default: '
                             + ' '.join(repr(c) for c in DEFAULT_CONFIGS) + ')')
    parser.add_argument('--rounds', type=int, default=2, help='rounds (default: 2)')
    parser.add_argument('--vos-eval', default=None,
                        help='vos_eval executable (default: the one beside this Python, '
                             'else python -m vos_ros.tools.evaluate)')
    parser.add_argument('--out', default='out/whole_command', help='output folder')
    return parser


def main(argv=None):
    """Run the rounds; return the exit code."""
    args = _parser().parse_args(argv)
    try:
        if args.rounds < 1:
            raise ValueError(f'--rounds must be >= 1, got {args.rounds}')
        configs = [parse_config(text) for text in args.configs]
        labels = [label for label, _ in configs]
        if len(set(labels)) != len(labels):
            raise ValueError(f'configuration labels must differ, got {labels}')
        if not os.path.isdir(args.dataset):
            raise ValueError(f'dataset folder not found: {args.dataset}')
    except ValueError as error:
        print(f'whole_command: error: {error}', file=sys.stderr)
        return 1
    prefix = vos_eval_command(args.vos_eval)
    selection = []
    if args.sequences_file:
        selection = ['--sequences-file', args.sequences_file]
    elif args.sequences:
        selection = ['--sequences', *args.sequences]
    os.makedirs(args.out, exist_ok=True)
    arguments = dict(configs)
    rows = []
    try:
        for index in range(args.rounds):
            for label, _ in round_order(configs, index):
                wall, scores, frames = run_command(
                    prefix, args.dataset, selection, arguments[label],
                    os.path.join(args.out, f'{label}_run'))
                rows.append({'round': index, 'config': label,
                             'arguments': shlex.join(arguments[label]), 'wall_s': wall,
                             'frames': frames, **scores})
                print(f'round {index + 1}: {label:<10} {wall:7.1f} s  J&F '
                      f'{scores["JF"] if scores["JF"] is not None else float("nan"):.2f}',
                      flush=True)
    except (RuntimeError, OSError) as error:
        print(f'whole_command: error: {error}', file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print('whole_command: interrupted; rounds finished so far are written', file=sys.stderr)
    if not rows:
        return 1
    ratios(rows, labels[0])
    with open(os.path.join(args.out, 'whole_command.csv'), 'w', newline='',
              encoding='utf-8') as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({key: row.get(key) for key in COLUMNS})
    print(f'\n{"config":<10} {"mean wall s":>11} {"x " + labels[0]:>16} {"per round":>24} '
          f'{"J&F":>7}')
    summary = []
    for label in labels:
        mine = [row for row in rows if row['config'] == label]
        if not mine:
            continue
        per_round = [row['ratio'] for row in mine if row['ratio'] is not None]
        mean_ratio = statistics.mean(per_round) if per_round else float('nan')
        jf = mine[0]['JF']
        summary.append(f'{label} {mean_ratio:.2f}x')
        print(f'{label:<10} {statistics.mean(r["wall_s"] for r in mine):11.1f} '
              f'{mean_ratio:16.2f} {" ".join(f"{r:.2f}" for r in per_round):>24} '
              f'{jf if jf is not None else float("nan"):7.2f}')
    title = (f'{os.path.basename(os.path.normpath(args.dataset))}'
             f'{" " + os.path.basename(args.sequences_file) if args.sequences_file else ""}: '
             + ', '.join(summary) + f' (against {labels[0]}, same rounds)')
    _plot(os.path.join(args.out, 'whole_command.png'), rows, labels, title)
    print(f'wrote {args.out}/whole_command.csv, whole_command.png')
    return 0


if __name__ == '__main__':
    sys.exit(main())
