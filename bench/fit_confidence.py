"""Fit the adaptive backend's confidence estimate and plot its calibration (issue 15).

The estimate (``vos_ros/core/confidence.py``, after seed system 003's decision network) is a
logistic regression from features of the cheap path to the IoU that path actually achieves.
Samples come from the deployed code path itself: for every start frame ``s`` (every
``--stride``-th frame) an ``AdaptiveBackend`` at target 0 is given the full model's result on
``s`` (``--seed full``: the memory model run on every frame, as after a real full run;
``gt``: the ground truth, for a quick look without a model) and propagates ``--horizon``
frames with the cheap path; each cheap frame gives one sample per object: its features and its
IoU against the ground truth (at input size, as ``vos_eval`` scores).

With ``--cheap light`` (the default: the memory model's light pass) the cheap path reads the
full model's own memory, so nothing can be replayed: each sequence runs the deployed adaptive
backend at target 0 with ``max_cheap_frames`` = ``--horizon`` (the full model on every
``horizon + 1``-th frame, the light pass between), once per phase in ``--phases`` (how many
frames of the first cycle are cut short, so that every frame is seen at several distances
from a full run); every light frame gives one sample per object. ``--cheap roi`` does the same
with the region-of-interest pass (``MemoryBackend.propagate_roi``; frames its guards refuse,
a result cut by its crop or an object lost, run the full model and give no sample, as when
deployed). ``--cheap flow`` samples as
described above.

Fitting uses the sequences of DATASET_ROOT minus every ``--exclude`` file (the memory model's
hold-out and dev lists: the hold-out is never fitted or tuned on). The reliability plot bins
the predicted confidence of ``--calibrate`` sequences (the hold-out: measuring there is
allowed) against the IoU measured there, next to the fitting sequences' own curve.

Example (writes vos_ros/data/confidence.json and out/confidence/reliability.png)::

    nice -n 5 .venv/bin/python bench/fit_confidence.py ../shared/data/davis2016/train \\
        --exclude bench/memory_holdout.txt bench/memory_dev.txt \\
        --calibrate bench/memory_holdout.txt --out vos_ros/data/confidence.json
"""

import argparse
import json
import os
import sys
import time

import numpy as np

from vos_ros.core.backends import create_backend
from vos_ros.core.backends.adaptive import AdaptiveBackend
from vos_ros.core.backends.adaptive import DEFAULT_ROI_BUDGET
from vos_ros.core.backends.base import Backend
from vos_ros.core.confidence import ConfidenceModel
from vos_ros.core.confidence import FEATURES
from vos_ros.core.confidence import fit_logistic
from vos_ros.core.confidence import FLOWLESS_FEATURES
from vos_ros.core.davis import Dataset
from vos_ros.core.davis import read_sequences_file
from vos_ros.core.metrics import db_eval_iou
from vos_ros.core.session import resize_probs
from vos_ros.core.session import Session


#: Cheap paths that read the full model's own memory (sampled by ``_sample_light``; no flow
#: features).
MEMORY_PASSES = ('light', 'roi')


class _Replay(Backend):
    """A 'full model' that hands back precomputed results (never asked: target is 0)."""

    name = 'replay'

    def __init__(self, resolution):
        self.default_resolution = resolution

    def reset(self):
        pass

    def memorize(self, image, probs):
        pass

    def propagate(self, image):
        raise RuntimeError('replay backend: the full path must not run while sampling')


def _parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('root', help='DAVIS-layout dataset root')
    parser.add_argument('--exclude', nargs='*', default=[], metavar='FILE',
                        help='sequence files whose sequences are never fitted on')
    parser.add_argument('--calibrate', default=None, metavar='FILE',
                        help='sequence file measured for the reliability plot (not fitted)')
    parser.add_argument('--model', default=None,
                        help='memory model for --seed full (None = the shipped one)')
    parser.add_argument('--cheap', choices=('light', 'roi', 'flow'), default='light',
                        help='the cheap path whose confidence is fitted')
    parser.add_argument('--seed', choices=('full', 'gt'), default='full',
                        help='what each flow run starts from (flow only)')
    parser.add_argument('--phases', default='0,3',
                        help='light, roi: frames of the first cycle cut short, comma-separated')
    parser.add_argument('--threads', type=int, default=2, help='torch CPU threads')
    parser.add_argument('--stride', type=int, default=2, help='frames between start frames')
    parser.add_argument('--horizon', type=int, default=12,
                        help='cheap frames followed from each start frame')
    parser.add_argument('--l2', type=float, default=1e-3, help='L2 penalty of the fit')
    parser.add_argument('--cache', default='out/confidence/samples', metavar='DIR',
                        help='per-sequence sample cache (keyed by seed, model, stride, horizon)')
    parser.add_argument('--out', default=None,
                        help='where to write the fitted model (JSON; None = the shipped file '
                             'of the cheap path, vos_ros/data/confidence_light.json, '
                             'confidence_roi.json or confidence.json)')
    parser.add_argument('--plot', default='out/confidence/reliability.png',
                        help='reliability plot (PNG)')
    parser.add_argument('--limit', type=int, default=None,
                        help='use only the first N fitting sequences (quick checks)')
    return parser.parse_args(argv)


def _full_results(sequence, frames, first, model):
    """The memory model's probabilities (working size) on every frame, from the first mask."""
    options = {'model_path': model} if model else {}
    session = Session(create_backend('memory', **options))
    return [session.step(frame, first if i == 0 else None).probs
            for i, frame in enumerate(frames)], session.backend.default_resolution


def _sample_light(sequence, args):
    """Light pass: (features N×F, ious N) from the deployed adaptive backend at target 0."""
    options = {'model_path': args.model} if args.model else {}
    full = create_backend('memory', threads=args.threads, **options)
    # a neutral estimate: at target 0 it is never consulted, only its features are kept
    neutral = ConfidenceModel(np.zeros(len(FLOWLESS_FEATURES)), 0.0,
                              features=FLOWLESS_FEATURES)
    frames = [sequence.read_frame(i) for i in range(len(sequence))]
    truth = [sequence.read_mask(i, log=lambda line: None) for i in range(len(sequence))]
    rows, ious = [], []
    for phase in (int(p) for p in args.phases.split(',') if p.strip()):
        adaptive = AdaptiveBackend(full=full, cheap=args.cheap, target_confidence=0,
                                   max_cheap_frames=args.horizon, confidence_model=neutral)
        session = Session(adaptive)
        for index, frame in enumerate(frames):
            if index == 1 and phase:
                adaptive._since_full = min(phase, args.horizon)  # a shorter first cycle
            result = session.step(frame, truth[0] if index == 0 else None)
            if result.path != 'cheap':
                continue
            for channel, object_id in enumerate(result.object_ids):
                rows.append([adaptive.last_features[channel][name]
                             for name in FLOWLESS_FEATURES])
                ious.append(db_eval_iou(truth[index] == object_id,
                                        result.labels == object_id))
    return np.array(rows, np.float64).reshape(-1, len(FLOWLESS_FEATURES)), np.array(ious)


def _sample_sequence(sequence, args):
    """Return (features N×F, ious N, starts N, steps N) of one sequence."""
    frames = [sequence.read_frame(i) for i in range(len(sequence))]
    truth = [sequence.read_mask(i, log=lambda line: None) for i in range(len(sequence))]
    ids = [int(i) for i in np.unique(truth[0]) if i]
    seeds, resolution = None, 240  # the memory model's working size
    if args.seed == 'full':
        seeds, resolution = _full_results(sequence, frames, truth[0], args.model)
    adaptive = AdaptiveBackend(full=_Replay(resolution), target_confidence=0,
                               max_cheap_frames=args.horizon + 1)
    session = Session(adaptive)
    height, width = frames[0].shape[:2]
    rows, ious, starts, steps = [], [], [], []
    for start in range(0, len(frames) - 1, args.stride):
        session.reset()
        # The start frame is given: the full model's result on it (or the ground truth).
        if seeds is None:
            session.step(frames[start], truth[start])
        else:
            # the labels set the objects; the soft result itself is what a full run leaves
            # (the session's working image is the one the backend saw)
            session.step(frames[start], _labels(seeds[start], ids, width, height))
            adaptive.memorize(session._last_image, seeds[start])
        for step in range(1, args.horizon + 1):
            index = start + step
            if index >= len(frames):
                break
            result = session.step(frames[index])
            assert result.path == 'cheap', result.path
            for channel, object_id in enumerate(result.object_ids):
                rows.append([adaptive.last_features[channel][name] for name in FEATURES])
                ious.append(db_eval_iou(truth[index] == object_id,
                                        result.labels == object_id))
                starts.append(start)
                steps.append(step)
    return (np.array(rows, np.float64).reshape(-1, len(FEATURES)), np.array(ious),
            np.array(starts), np.array(steps))


def _labels(probs, ids, width, height):
    full = resize_probs(probs, width, height)
    lut = np.array([0] + ids, np.uint8)
    return lut[np.argmax(full, axis=0)]


def _samples(dataset, names, args, what):
    model_tag = 'gt' if args.seed == 'gt' else os.path.basename(args.model or 'shipped')
    if args.cheap in MEMORY_PASSES:
        model_tag = f'{args.cheap}-p{args.phases.replace(",", "_")}-' + model_tag
    if args.cheap == 'roi':  # the crop's pixel budget changes what the ROI pass gives
        model_tag += f'-b{DEFAULT_ROI_BUDGET:g}'
    if args.seed == 'full' or args.cheap in MEMORY_PASSES:
        path = args.model or os.path.join(os.path.dirname(__file__), '..', 'vos_ros', 'data',
                                          'memory.pt')
        model_tag += f'-{int(os.path.getmtime(path))}'
    features, ious, groups = [], [], []
    for name in names:
        cache = os.path.join(args.cache, f'{name}-{model_tag}-s{args.stride}-h{args.horizon}'
                             '.npz')
        tic = time.perf_counter()
        names_used = FLOWLESS_FEATURES if args.cheap in MEMORY_PASSES else FEATURES
        if os.path.isfile(cache):
            data = np.load(cache)
            x, y = data['features'], data['ious']
        elif args.cheap in MEMORY_PASSES:
            x, y = _sample_light(dataset.sequence(name), args)
        else:
            x, y, _, _ = _sample_sequence(dataset.sequence(name), args)
        if not os.path.isfile(cache):
            os.makedirs(args.cache, exist_ok=True)
            np.savez(cache, features=x, ious=y, features_names=np.array(names_used))
        print(f'{what} {name}: {len(y)} samples, mean IoU {100 * y.mean():.1f} '
              f'({time.perf_counter() - tic:.0f} s)', flush=True)
        features.append(x)
        ious.append(y)
        groups += [name] * len(y)
    return np.vstack(features), np.concatenate(ious), np.array(groups)


def reliability(predicted, measured, bins=10):
    """Per bin of predicted confidence (percent): (centre, mean predicted, mean IoU %, count)."""
    edges = np.linspace(0.0, 100.0, bins + 1)
    table = []
    for low, high in zip(edges[:-1], edges[1:]):
        inside = (predicted >= low) & ((predicted < high) | (high == 100.0))
        if inside.any():
            table.append(((low + high) / 2, float(predicted[inside].mean()),
                          float(100.0 * measured[inside].mean()), int(inside.sum())))
    return table


def _summary(model, x, y):
    predicted = model.predict(x)
    error = predicted - 100.0 * y
    table = reliability(predicted, y)
    # expected calibration error: bin gaps weighted by their share of samples
    ece = sum(abs(mean - iou) * count for _, mean, iou, count in table) / max(len(y), 1)
    correlation = float(np.corrcoef(predicted, y)[0, 1]) if len(y) > 1 else float('nan')
    return {'samples': int(len(y)), 'mae': float(np.abs(error).mean()),
            'bias': float(error.mean()), 'ece': float(ece), 'pearson': correlation,
            'mean_iou': float(100.0 * y.mean())}, table


def _plot(path, curves):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(5.5, 5.0))
    axis.plot([0, 100], [0, 100], color='grey', linestyle='--', linewidth=1,
              label='perfect calibration')
    for label, table, style in curves:
        if not table:
            continue
        _, means, ious, counts = zip(*table)
        axis.plot(means, ious, style, label=label)
        for mean, iou, count in zip(means, ious, counts):
            axis.annotate(str(count), (mean, iou), fontsize=6, textcoords='offset points',
                          xytext=(3, -8))
    axis.set_xlim(0, 100)
    axis.set_ylim(0, 100)
    axis.set_xlabel('predicted confidence (binned mean, %)')
    axis.set_ylabel('measured IoU of the cheap path (%)')
    axis.set_title('Cheap-path confidence: reliability')
    axis.legend(loc='upper left', fontsize='small')
    figure.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main(argv=None):
    """Sample, fit, write the model JSON and the reliability plot; return the exit code."""
    args = _parse(argv)
    dataset = Dataset(args.root)
    excluded = set()
    for path in args.exclude:
        excluded.update(read_sequences_file(path))
    calibrate = read_sequences_file(args.calibrate) if args.calibrate else []
    excluded.update(calibrate)
    names = [name for name in dataset.sequence_names() if name not in excluded]
    if args.limit:
        names = names[:args.limit]
    if not names:
        print('fit_confidence: no sequence left to fit on', file=sys.stderr)
        return 1
    if args.out is None:
        from vos_ros.core.confidence import DEFAULT_MODEL_PATHS
        args.out = DEFAULT_MODEL_PATHS[args.cheap]
    names_used = FLOWLESS_FEATURES if args.cheap in MEMORY_PASSES else FEATURES
    x, y, groups = _samples(dataset, names, args, 'fit')
    model = fit_logistic(x, y, l2=args.l2, names=names_used)
    fit_stats, fit_table = _summary(model, x, y)
    curves = [(f'fitting sequences ({len(names)})', fit_table, 'o-')]
    info = {'fitted_on': sorted(names), 'dataset': os.path.basename(os.path.abspath(args.root)),
            'cheap': args.cheap,
            'phases': args.phases if args.cheap in MEMORY_PASSES else None,
            'seed': args.seed, 'full_model': args.model or 'vos_ros/data/memory.pt',
            'stride': args.stride, 'horizon': args.horizon, 'l2': args.l2,
            'fit': fit_stats, 'script': 'bench/fit_confidence.py'}
    if calibrate:
        cx, cy, _ = _samples(dataset, calibrate, args, 'hold-out')
        held_stats, held_table = _summary(model, cx, cy)
        info['hold_out'] = dict(held_stats, sequences=sorted(calibrate))
        curves.append((f'hold-out ({len(calibrate)}, never fitted)', held_table, 's-'))
        print('hold-out reliability (bin, mean predicted, measured IoU, samples):')
        for centre, mean, iou, count in held_table:
            print(f'  {centre:5.1f}  {mean:5.1f}  {iou:5.1f}  {count}')
    model.info = info
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    model.save(args.out)
    _plot(args.plot, curves)
    print(json.dumps({'weights': dict(zip(names_used, np.round(model.weights, 3).tolist())),
                      'fit': fit_stats, 'hold_out': info.get('hold_out')}, indent=1))
    print(f'wrote {args.out} and {args.plot}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
