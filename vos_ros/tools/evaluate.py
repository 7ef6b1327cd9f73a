"""vos_eval: run a backend on DAVIS-layout sequences from their first-frame masks and score it.

Writes ``OUT/<seq>/<frame>.png`` (palette label maps at original size, every frame, the first
included) and ``OUT/results.csv`` with one row per sequence and a last row ``mean``::

    sequence,J,F,JF,J_recall,J_decay,F_recall,F_decay,frames,fps

Scores are percent, computed as davis2017-evaluation does (first and last frames excluded);
the ``mean`` row averages over objects across sequences, like the official evaluation. ``fps``
is frames over the wall time of reading the images and segmenting them (writing the masks and
scoring are not counted); the mean row's fps is total frames over total time. With ``--jobs
N`` (N sequences at once, each in its own process) these times are each process's own: the
fps fall while the run ends sooner; ``run.json`` records the run's ``wall_seconds``.

Only the first frame's mask is given to the session, even where more masks exist. Scoring is
``vos_ros.core.metrics.evaluate_video``, the rule every tool shares: the objects of the first
mask are scored (objects entering later are named in a warning, not scored), on the frames with
ground truth but the first and last. A sequence without masks beyond its first frame is still
segmented; its score columns are empty and it is left out of the mean.

Also ``OUT/results.png`` (J&F, J and F per sequence, for a look rather than a read) and, with
``--video``, ``OUT/<seq>.mp4`` per sequence: image | prediction | ground truth, frame by frame
(neither is counted in ``fps``).

``OUT/run.json`` says what ran: the pipeline as the backend describes itself (name, full model,
target, cheap path, model version, resolution, device), the arguments, the sequences, and once
the run has finished the share of frames each path produced, frames, fps and the mean scores;
the same pipeline line goes to stderr when the run starts.

``results.csv`` is written (via a temporary file) only when every sequence has finished. The
results of an earlier complete run in OUT (``results.csv``, ``results.png``, ``run.json``) are
kept together as ``results.previous.csv``, ``results.previous.png`` and ``run.previous.json``
when a run starts, so a failed re-run loses nothing complete (what a stopped run left is
replaced; masks are overwritten as the run goes). A
run stopped by an error or Ctrl-C leaves the masks written so far and ``results.partial.csv``
(finished sequences only, no mean row), and exits non-zero.
"""

import argparse
import concurrent.futures
import csv
import dataclasses
import json
import logging
import os
import signal
import sys
import threading
import time

import numpy as np

from vos_ros import __version__
from vos_ros.core.backends.adaptive import DEFAULT_MAX_CHEAP
from vos_ros.core.backends.adaptive import DEFAULT_TARGET
from vos_ros.core.backends.adaptive import FLOW_BELOW
from vos_ros.core.backends import available_backends
from vos_ros.core.backends import create_backend_for
from vos_ros.core.backends import DEFAULT_BACKEND
from vos_ros.core.davis import Dataset
from vos_ros.core.davis import fit_labels
from vos_ros.core.davis import read_sequences_file
from vos_ros.core.errors import DataError
from vos_ros.core.errors import VosError
from vos_ros.core.labels import object_ids as ids_in
from vos_ros.core.labels import overlay
from vos_ros.core.labels import write_labels
from vos_ros.core.metrics import db_statistics
from vos_ros.core.metrics import evaluate_video
from vos_ros.core.session import Session
from vos_ros.core.session import SessionConfig
from vos_ros.tools.cli import check_out_folder
from vos_ros.tools.cli import progress_bar
from vos_ros.tools.cli import sigterm_raises
from vos_ros.tools.cli import ToolParser

logger = logging.getLogger(__name__)

COLUMNS = ('sequence', 'J', 'F', 'JF', 'J_recall', 'J_decay', 'F_recall', 'F_decay', 'frames',
           'fps')
SCORE_COLUMNS = COLUMNS[1:8]
RESULTS_NAME = 'results.csv'
PARTIAL_NAME = 'results.partial.csv'
PLOT_NAME = 'results.png'
RUN_NAME = 'run.json'
#: Where an earlier run's outputs in OUT are kept when a new run starts (name -> kept as).
PREVIOUS_NAMES = {RESULTS_NAME: 'results.previous.csv', PLOT_NAME: 'results.previous.png',
                  RUN_NAME: 'run.previous.json'}


@dataclasses.dataclass
class SequenceResult:
    """Scores of one sequence (percent; None when it has no ground truth to score)."""

    name: str
    frames: int
    seconds: float
    scores: dict = None
    #: Per object: {'id', 'J', 'J_recall', 'J_decay', 'F', 'F_recall', 'F_decay'} (fractions).
    objects: list = dataclasses.field(default_factory=list)
    #: Frames per ``Result.path`` ('given', 'full', 'cheap').
    paths: dict = dataclasses.field(default_factory=dict)

    @property
    def fps(self):
        return self.frames / self.seconds if self.seconds > 0 else float('nan')

    def row(self):
        """Return the CSV row as a dict (strings for scores, '' when unscored)."""
        row = {'sequence': self.name, 'frames': str(self.frames), 'fps': f'{self.fps:.2f}'}
        for column in SCORE_COLUMNS:
            value = None if self.scores is None else self.scores[column]
            row[column] = '' if value is None else f'{value:.3f}'
        return row


def mean_scores(results):
    """Return the mean row's scores (percent) over all objects of the scored sequences."""
    objects = [obj for result in results if result.scores is not None for obj in result.objects]
    if not objects:
        return None
    scores = {}
    for name in ('J', 'J_recall', 'J_decay', 'F', 'F_recall', 'F_decay'):
        scores[name] = 100.0 * float(np.mean([obj[name] for obj in objects]))
    scores['JF'] = (scores['J'] + scores['F']) / 2.0
    return scores


def mean_row(results):
    """Return the ``mean`` CSV row for a list of SequenceResult."""
    scores = mean_scores(results)
    frames = sum(result.frames for result in results)
    seconds = sum(result.seconds for result in results)
    row = {'sequence': 'mean', 'frames': str(frames),
           'fps': f'{frames / seconds:.2f}' if seconds > 0 else ''}
    for column in SCORE_COLUMNS:
        row[column] = '' if scores is None else f'{scores[column]:.3f}'
    return row


def write_csv(path, rows):
    """Write rows atomically: a temporary file renamed into place."""
    temporary = path + '.tmp'
    with open(temporary, 'w', newline='', encoding='utf-8') as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(temporary, path)


def make_backend(name=None, model=None, device=None, target_confidence=None):
    """Create a backend as the node does (``backends.create_backend_for``).

    ``target_confidence`` (0-100, None = the backend's own way): the adaptive backend with that
    target (``create_backend_with_target``). A ``device`` for a backend that takes none (flow
    runs on the CPU) is noted on the log, as the node does; a ``model`` for one that loads
    none is a ModelError.
    """
    if model is not None and not os.path.isfile(model):
        raise DataError(f'model file not found: {model}')
    backend, used = create_backend_for(name, model, device, target_confidence,
                                       model_option='--model')
    if device is not None and used != device and device not in ('auto', 'cpu'):
        logger.warning('backend %s takes no device; it runs on the CPU (--device %s unused)',
                       getattr(backend, 'name', name), device)
    return backend


def check_sequences(dataset, names):
    """Return the Sequence objects; DataError (naming the path) for any unusable one."""
    if not names:
        raise DataError(f'no sequences to evaluate in {dataset.root}')
    sequences = []
    for name in names:
        sequence = dataset.sequence(name)
        if not sequence.has_mask(0):
            raise DataError(f'sequence {name!r} has no first-frame mask: '
                            f'{sequence.mask_path(0)} not found')
        sequences.append(sequence)
    return sequences


def _read_truth(sequence, index, shape, log=None):
    """Read the mask of frame ``index`` at the frame's size (``davis.fit_labels``)."""
    return fit_labels(sequence.read_mask(index, log=log), shape, sequence.mask_path(index), log)


def _score(sequence, predictions, annotation, log=None):
    """Score one sequence by ``metrics.evaluate_video``; ``(None, [], [])`` when unscorable.

    Returns ``(scores, objects, unscored_ids)``.
    """
    shape = predictions[0].shape
    truth = [_read_truth(sequence, i, shape, log) if i and sequence.has_mask(i) else None
             for i in range(len(sequence))]
    summary = evaluate_video(truth, predictions, annotation)
    if summary is None:
        return None, [], []
    objects = []
    for row, object_id in enumerate(summary['object_ids']):
        j_mean, j_recall, j_decay = db_statistics(summary['J_frames'][row])
        f_mean, f_recall, f_decay = db_statistics(summary['F_frames'][row])
        objects.append({'id': object_id, 'J': j_mean, 'J_recall': j_recall, 'J_decay': j_decay,
                        'F': f_mean, 'F_recall': f_recall, 'F_decay': f_decay})
    scores = {name: 100.0 * summary[name] for name in SCORE_COLUMNS}
    return scores, objects, summary['unscored_objects']


class _MaskNotes:
    """Collect the label reader's lines of one sequence, to say them once."""

    def __init__(self):
        self.lines = []

    def __call__(self, line):
        self.lines.append(line)

    def report(self, name):
        if self.lines:
            more = f' (and {len(self.lines) - 1} more masks alike)' if len(self.lines) > 1 else ''
            logger.warning('%s: %s%s', name, self.lines[0], more)


def run_sequence(session, sequence, out_dir, progress=None, video=False, background=None):
    """Segment one sequence from its first-frame mask, write its masks, return the result.

    ``video``: also write ``out_dir/<seq>.mp4`` (image | prediction | ground truth).
    ``background``: a one-thread ``concurrent.futures`` executor; when given, mask writing and
    scoring run on it while the caller goes on with the next frames, and a Future of the
    result is returned (writing and scoring are a fifth of a CPU run and release the GIL, so
    they fill the cores the network leaves idle).
    """
    notes = _MaskNotes()
    first_mask = sequence.read_mask(0, log=notes)
    given_ids = ids_in(first_mask)
    if not given_ids:
        raise DataError(f'first-frame mask {sequence.mask_path(0)} holds no object '
                        '(all background)')
    session.reset()
    seq_dir = os.path.join(out_dir, sequence.name)
    os.makedirs(seq_dir, exist_ok=True)
    predictions = []
    writes = []
    paths = {}
    seconds = 0.0
    first_size = None
    writer = None
    if video:
        from vos_ros.core.video import VideoWriter

        writer = VideoWriter(os.path.join(out_dir, sequence.name + '.mp4'), fps=VIDEO_FPS)
    try:
        for index, name in enumerate(sequence.frame_names):
            tic = time.perf_counter()
            image = sequence.read_frame(index)
            if first_size is None:
                first_size = image.shape[:2]
                first_mask = fit_labels(first_mask, first_size, sequence.mask_path(0), notes)
            elif image.shape[:2] != first_size:
                raise DataError(f'{sequence.frame_paths[index]}: image size '
                                f'{image.shape[1]}x{image.shape[0]} differs from the first '
                                f'frame ({first_size[1]}x{first_size[0]})')
            result = session.step(image, first_mask if index == 0 else None)
            seconds += time.perf_counter() - tic
            paths[result.path] = paths.get(result.path, 0) + 1
            mask_path = os.path.join(seq_dir, name + '.png')
            if background is None:
                write_labels(mask_path, result.labels)
            else:
                writes.append(background.submit(write_labels, mask_path, result.labels))
            predictions.append(result.labels)
            if writer is not None:
                writer.write(_video_frame(sequence, index, image, result.labels))
            if progress is not None:
                progress.update(1)
    finally:
        if writer is not None:
            writer.close()

    def finish():
        for write in writes:
            write.result()  # a failed write (disk full, permissions) raises here
        scores, objects, unscored = _score(sequence, predictions, first_mask, notes)
        notes.report(sequence.name)
        if unscored:
            logger.warning('%s: object(s) %s appear only after the first frame: not scored '
                           '(the tracker is given the first-frame mask only)', sequence.name,
                           ', '.join(str(i) for i in unscored))
        return SequenceResult(name=sequence.name, frames=len(predictions), seconds=seconds,
                              scores=scores, objects=objects, paths=paths)

    return finish() if background is None else background.submit(finish)


#: Frame rate of the ``--video`` files (DAVIS was shot at 24 fps; slower reads better).
VIDEO_FPS = 12.0


def _video_frame(sequence, index, image, labels):
    """One ``--video`` frame: image | prediction overlay | ground-truth overlay (or blank)."""
    from vos_ros.core.video import side_by_side

    # Read again for the picture only: the reader's note was already said once.
    truth = (_read_truth(sequence, index, labels.shape, log=lambda line: None)
             if sequence.has_mask(index) else None)
    return side_by_side(
        [image, overlay(image, labels),
         overlay(image, truth) if truth is not None else np.zeros_like(image)],
        labels=[f'{sequence.name} {sequence.frame_names[index]}', 'prediction',
                'ground truth' if truth is not None else 'no ground truth'])


def plot_results(path, results):
    """Bar chart of J&F, J and F per scored sequence with the mean; False if none scored."""
    scored = [r for r in results if r.scores is not None]
    if not scored:
        return False
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    names = [r.name for r in scored]
    positions = np.arange(len(names))
    figure, axis = plt.subplots(figsize=(max(6.0, 0.5 * len(names) + 2.0) + 1.5, 4.0))
    for offset, key in ((-0.27, 'JF'), (0.0, 'J'), (0.27, 'F')):
        axis.bar(positions + offset, [r.scores[key] for r in scored], width=0.27,
                 label=key.replace('JF', 'J&F'))
    mean = mean_scores(scored)
    if mean is not None:
        axis.axhline(mean['JF'], color='black', linewidth=1, linestyle='--',
                     label=f'mean J&F {mean["JF"]:.1f}')
    axis.set_xticks(positions)
    axis.set_xticklabels(names, rotation=45, ha='right')
    axis.set_ylim(0, 100)
    axis.set_ylabel('percent')
    # beside the axes, not over the bars (inside, it hid the lowest sequences' bars)
    axis.legend(loc='upper left', bbox_to_anchor=(1.01, 1.0), fontsize='small')
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return True


def path_counts(results):
    """Frames of ``results`` (SequenceResults) each path produced, summed over sequences.

    Paths as ``Result.path`` names them: ``given`` (the first-frame masks), ``full``,
    ``cheap``.
    """
    counts = {}
    for result in results:
        for path, count in result.paths.items():
            counts[path] = counts.get(path, 0) + count
    return counts


def path_shares(results):
    """Percent of the frames of ``results`` each path produced (``path_counts``); an empty
    dict for no frames.
    """
    counts = path_counts(results)
    total = sum(counts.values())
    return {path: round(100.0 * count / total, 2) for path, count in counts.items()} \
        if total else {}


def describe_pipeline(backend, working_resolution=None):
    """``(line, details)``: one line naming the pipeline ``backend`` runs, and its describe().

    The adaptive backend at target 100 runs no cheap path, so none is named there.
    ``working_resolution``: the session's working size (shorter side, 0 = input size) when
    one was asked for; the backend's own ``resolution`` is what its network sees (a model
    backend scales the working-size frame to it), so both are named.
    """
    described = dict(backend.describe()) if hasattr(backend, 'describe') else {}
    described.setdefault('backend', getattr(backend, 'name', type(backend).__name__))
    shown = dict(described)
    if shown.get('target_confidence') == 100.0:
        shown.pop('cheap', None)  # the full model on every frame: no cheap path runs
    if 'resolution' not in shown and shown.get('default_resolution') is not None \
            and working_resolution is None:
        # a backend without a network size of its own (flow) works at the session's size:
        # its default unless one was asked for
        shown['resolution'] = shown['default_resolution']
    if isinstance(shown.get('target_confidence'), float):
        shown['target_confidence'] = f'{shown["target_confidence"]:g}'  # 50, as the node says
    details = ', '.join(f'{key} {shown[key]}' for key in
                        ('full', 'target_confidence', 'cheap', 'version', 'resolution',
                         'device') if shown.get(key) not in (None, ''))
    line = f'backend {shown["backend"]}' + (f' ({details})' if details else '')
    if working_resolution is not None:
        size = int(working_resolution)
        described['working_resolution'] = size
        line += ', working size ' + (f'{size} px' if size else 'input size')
    return line, described


def _keep_previous(out_dir):
    """Move an earlier complete run's results in ``out_dir`` aside (PREVIOUS_NAMES).

    Only a run that finished wrote ``results.csv``; its chart and record go with it. What a
    stopped run left (its unfinished ``run.json``, ``results.partial.csv``) is superseded by
    this run and removed, so the kept files always belong together. Returns what moved.
    """
    moved = []
    if os.path.exists(os.path.join(out_dir, RESULTS_NAME)):
        for name, kept in PREVIOUS_NAMES.items():
            path = os.path.join(out_dir, name)
            if os.path.exists(path):
                os.replace(path, os.path.join(out_dir, kept))
                moved.append(kept)
    for stale in (PARTIAL_NAME, PLOT_NAME, RUN_NAME):
        path = os.path.join(out_dir, stale)
        if os.path.exists(path):
            os.remove(path)
    return moved


def _write_json(path, record):
    temporary = path + '.tmp'
    with open(temporary, 'w') as handle:
        json.dump(record, handle, indent=2, default=str)
        handle.write('\n')
    os.replace(temporary, path)


class _Stopped(Exception):
    """A run stopped by an error or Ctrl-C (the ``__cause__``); ``done``: finished results."""

    def __init__(self, done):
        super().__init__('stopped')
        self.done = done


def _run_in_turn(session, seqs, out_dir, bar, video):
    """Segment ``seqs`` one after the other in this process; masks written on a thread."""
    pending = []
    background = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix='vos_eval_io')
    try:
        for sequence in seqs:
            # refresh=False: a log would get a line per sequence, not per interval
            bar.set_description(sequence.name, refresh=False)
            pending.append(run_sequence(session, sequence, out_dir, progress=bar, video=video,
                                        background=background))
        return [future.result() for future in pending]
    except BaseException as error:
        background.shutdown(wait=True, cancel_futures=True)
        done = [future.result() for future in pending
                if future.done() and not future.cancelled() and future.exception() is None]
        raise _Stopped(done) from error
    finally:
        background.shutdown(wait=True)


def _check_jobs(jobs):
    """``jobs`` as a count of processes: 0 = one per usable CPU core; ValueError below 0."""
    jobs = int(jobs)
    if jobs < 0:
        raise ValueError(f'jobs must be >= 0 (0 = one per CPU core), got {jobs}')
    return jobs or _usable_cpus()


def _usable_cpus():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _threads_per_job(workers):
    """CPU threads for each of ``workers`` processes: the cores shared out, at least one.

    Never more than this process's torch uses (the backend's own choice), so a process does
    not run more threads than a single run would.
    """
    threads = max(1, _usable_cpus() // workers)
    if 'torch' in sys.modules:
        threads = min(threads, sys.modules['torch'].get_num_threads())
    return threads


#: The state of a ``_run_parallel`` worker process: its session, dataset and output folder.
_WORKER = {}


class _QueueProgress:
    """A progress bar's ``update`` that sends the frames to the parent process's bar."""

    def __init__(self, queue):
        self.queue = queue

    def update(self, frames):
        self.queue.put(frames)


def _session(backend, resolution):
    """A Session on ``backend`` at working size ``resolution`` (None = the backend's); the
    same for this process and every ``--jobs`` worker."""
    config = SessionConfig(resolution=None if resolution is None else int(resolution),
                           size_multiple=int(getattr(backend, 'size_multiple', 1) or 1))
    return Session(backend, config)


def _worker_start(spec, resolution, threads, root, out_dir, video, queue):
    """Build a worker's session (its own backend) and set its CPU threads."""
    # Ctrl-C reaches the whole process group; the parent stops the workers and keeps what
    # finished, so they do not each print a traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # A parent killed outright (SIGKILL, a crash) cannot stop its workers, which would wait
    # for work forever holding a model each: they watch for it and leave.
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True,
                     name='vos_eval_parent').start()
    logging.basicConfig(level=logging.WARNING, format='%(levelname)s %(name)s: %(message)s')
    backend = make_backend(spec['name'], model=spec['model'], device=spec['device'],
                           target_confidence=spec['target_confidence'])
    # after the backend: model backends set their own torch threads when built
    if 'torch' in sys.modules:
        sys.modules['torch'].set_num_threads(threads)
    import cv2
    cv2.setNumThreads(threads)
    _WORKER.update(session=_session(backend, resolution), dataset=Dataset(root),
                   out_dir=out_dir, video=video, progress=_QueueProgress(queue))


def _exit_with_parent(parent_pid, period=1.0):
    """End this worker process once ``parent_pid`` is no longer its parent."""
    while os.getppid() == parent_pid:
        time.sleep(period)
    os._exit(1)


def _worker_sequence(name):
    """Segment and score one sequence in a worker process; return its SequenceResult."""
    sequence = _WORKER['dataset'].sequence(name)
    return run_sequence(_WORKER['session'], sequence, _WORKER['out_dir'],
                        progress=_WORKER['progress'], video=_WORKER['video'])


def _run_parallel(root, seqs, out_dir, bar, video, workers, spec, resolution, threads):
    """Segment ``seqs`` in ``workers`` processes at once; results in the order of ``seqs``.

    Each process builds its own backend from ``spec`` (the backend's name, model, device and
    target) and runs with ``threads`` CPU threads; sequences go out longest first, so the
    processes finish close together. Small networks use two cores poorly (a 224x160 crop
    ran 1.25x faster on two threads than on one), so whole sequences side by side keep the
    cores busier than one sequence on all of them (bench/README.md "vos_eval --jobs").
    Processes are started with ``spawn``: forking a process whose torch threads already ran
    can hang. The first error (or Ctrl-C) stops every process; raises ``_Stopped`` with the
    sequences that had finished (a process that died, e.g. killed for memory, is a VosError).
    """
    import multiprocessing
    import queue as queues
    from concurrent.futures.process import BrokenProcessPool

    context = multiprocessing.get_context('spawn')
    progress = context.Queue()
    stop = threading.Event()

    def follow():
        # Only the workers write to the queue: a worker stopped while it held the queue's
        # write lock would block a writer here for good.
        while not stop.is_set():
            try:
                bar.update(progress.get(timeout=0.2))
            except queues.Empty:
                pass

    follower = threading.Thread(target=follow, name='vos_eval_progress', daemon=True)
    follower.start()
    executor = None
    finished = {}
    try:
        executor = concurrent.futures.ProcessPoolExecutor(
            workers, mp_context=context, initializer=_worker_start,
            initargs=(spec, resolution, threads, os.fspath(root), out_dir, video, progress))
        bar.set_description(f'{workers} processes', refresh=False)
        order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i]))
        futures = {executor.submit(_worker_sequence, seqs[i].name): i for i in order}
        for future in concurrent.futures.as_completed(futures):
            finished[futures[future]] = future.result()  # a worker's error is raised here
    except BaseException as error:
        if executor is not None:
            _stop_workers(executor)
        done = [finished[i] for i in sorted(finished)]
        if isinstance(error, BrokenProcessPool):
            stopped = VosError(
                f'a vos_eval process stopped unexpectedly ({error}); if it ran out of memory, '
                'run again with fewer --jobs (each process holds its own model); from a '
                "Python script, call evaluate_dataset under if __name__ == '__main__': "
                '(the processes are spawned and import the script)')
            stopped.__cause__ = error
            error = stopped
        raise _Stopped(done) from error
    finally:
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)
        stop.set()
        follower.join()
        progress.close()
        progress.cancel_join_thread()
    return [finished[i] for i in range(len(seqs))]


def _stop_workers(executor):
    """Stop ``executor``'s processes now (their sequences are abandoned)."""
    terminate = getattr(executor, 'terminate_workers', None)  # Python >= 3.14
    if terminate is not None:
        terminate()
        return
    for process in list((getattr(executor, '_processes', None) or {}).values()):
        if process.is_alive():
            process.terminate()


def evaluate_dataset(root, out_dir, sequences=None, backend=None, model=None, device=None,
                     resolution=None, progress=True, video=False, target_confidence=None,
                     announce=True, arguments=None, jobs=1):
    """Run and score a DAVIS-layout dataset; return ``(results, mean_row_dict)``.

    ``jobs``: sequences segmented at once, each in its own process (``_run_parallel``) with
    its share of the CPU cores; 0 = one per core; at most one per sequence. Results do not
    depend on it. The processes are spawned and import the caller's main module, so a script
    calls this under ``if __name__ == '__main__':`` when ``jobs`` is not 1.

    ``backend`` is a name (None = the package default) or a Backend instance;
    ``target_confidence`` (0-100) runs a named backend adaptively (see ``make_backend``).
    ``sequences`` defaults to every sequence in ``root``. Writes masks, ``results.csv`` and
    ``run.json`` under ``out_dir`` as described in this module's docstring (``arguments``: a
    dict of the command's arguments recorded there); raises VosError/ValueError on bad input
    (after writing ``results.partial.csv`` if some sequences had finished).
    ``announce``: say on stderr which pipeline runs (backend, and for ``adaptive`` its full
    model, target and cheap path) and which earlier results were kept aside.
    """
    dataset = Dataset(root)
    # A name listed twice would be run twice and counted twice in the mean.
    names = list(dict.fromkeys(sequences)) if sequences else dataset.sequence_names()
    seqs = check_sequences(dataset, names)
    asked_jobs = int(jobs)
    jobs = _check_jobs(jobs)
    backend_name = backend
    if isinstance(backend, str) or backend is None:
        # built here too when processes run the sequences: it checks the arguments once and
        # describes the pipeline
        backend = make_backend(backend, model=model, device=device,
                               target_confidence=target_confidence)
    elif target_confidence is not None:
        raise ValueError('target_confidence needs a backend name, not a Backend instance')
    elif asked_jobs > 1 and len(seqs) > 1:
        raise ValueError(f'jobs {asked_jobs} needs a backend name (each process builds its '
                         'own), not a Backend instance')
    else:
        jobs = 1  # "as many as useful" (0): a Backend instance runs in this process
    session = _session(backend, resolution)
    line, described = describe_pipeline(backend, resolution)
    if announce:
        print(f'vos_eval: {line}', file=sys.stderr)
    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    results_path = os.path.join(out_dir, RESULTS_NAME)
    partial_path = os.path.join(out_dir, PARTIAL_NAME)
    plot_path = os.path.join(out_dir, PLOT_NAME)
    run_path = os.path.join(out_dir, RUN_NAME)
    # Outputs of an earlier run in OUT would mislead next to this one's: kept aside.
    moved = _keep_previous(out_dir)
    if moved and announce:
        print(f'vos_eval: {out_dir} held the results of an earlier run: kept as '
              f'{", ".join(moved)}', file=sys.stderr)
    record = {'tool': 'vos_eval', 'vos_ros': __version__, 'dataset': os.path.abspath(root),
              'sequences': [s.name for s in seqs], 'pipeline': line, 'backend': described,
              'arguments': dict(arguments or {}), 'finished': False}
    _write_json(run_path, record)
    bar = progress_bar(total=sum(len(s) for s in seqs), unit='frame', enabled=progress,
                       dynamic_ncols=True)
    workers = min(jobs, len(seqs))
    tic = time.perf_counter()
    try:
        if workers > 1:
            results = _run_parallel(
                root, seqs, out_dir, bar, video, workers,
                spec=dict(name=backend_name, model=model, device=device,
                          target_confidence=target_confidence),
                resolution=resolution, threads=_threads_per_job(workers))
        else:
            results = _run_in_turn(session, seqs, out_dir, bar, video)
    except _Stopped as stopped:
        if stopped.done:
            write_csv(partial_path, [r.row() for r in stopped.done])
        failure = stopped.__cause__
    else:
        failure = None
    finally:
        bar.close()
    if failure is not None:
        # raised here, outside the handler, it keeps its own cause (a worker's traceback)
        raise failure
    wall_seconds = time.perf_counter() - tic
    mean = mean_row(results)
    write_csv(results_path, [r.row() for r in results] + [mean])
    plot_results(plot_path, results)
    # numbers, not the CSV's formatted strings (None where nothing was scored)
    record.update(finished=True, path_percent=path_shares(results), jobs=workers,
                  wall_seconds=round(wall_seconds, 3),
                  frames=sum(r.frames for r in results),
                  fps=float(mean['fps']) if mean['fps'] else None,
                  scores={key: float(mean[key]) if mean[key] not in (None, '') else None
                          for key in SCORE_COLUMNS})
    _write_json(run_path, record)
    return results, mean


class _Terminated(BaseException):
    """SIGTERM arrived (BaseException: no ``except Exception`` on the way swallows it)."""


def _what_finished(out_dir):
    """Where a stopped run's finished sequences are, or that none had finished."""
    partial = os.path.join(out_dir, PARTIAL_NAME)
    if os.path.exists(partial):
        return f'finished sequences are in {partial}'
    return 'no sequence had finished'


def _parser():
    parser = ToolParser(
        prog='vos_eval', description=__doc__.split('\n\n')[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('dataset', metavar='DATASET_ROOT',
                        help='DAVIS-layout folder (JPEGImages/480p/<seq>, Annotations/480p/<seq>)')
    which = parser.add_mutually_exclusive_group()
    which.add_argument('--sequences-file', metavar='FILE',
                       help='text file with one sequence name per line (# comments allowed)')
    which.add_argument('--sequences', nargs='+', metavar='NAME',
                       help='sequence names; omitted: every sequence in DATASET_ROOT')
    parser.add_argument('--backend', default=None,
                        help=f'segmentation backend, one of {", ".join(available_backends())}; '
                             f'omitted: the package default ({DEFAULT_BACKEND})')
    parser.add_argument('--model', metavar='PATH', default=None,
                        help='model file, for backends that take one; omitted: their default. '
                             "With no --backend the model's kind picks the pipeline: a memory "
                             'model runs adaptively as the default does, an embedding model '
                             'alone on every frame')
    parser.add_argument('--device', default=None,
                        help='auto, cpu, cuda or cuda:N, for backends that take one; '
                             'omitted: their default')
    parser.add_argument('--resolution', type=int, default=None, metavar='N',
                        help='working size: shorter side in pixels; omitted: the backend default, '
                             '0 = input size')
    parser.add_argument('--target-confidence', type=float, default=None, metavar='T',
                        help='effort, 0-100. 100: the full model on every frame. Under 100: '
                             'a cheap path runs while its estimated confidence (a predicted '
                             'IoU, %%) stays >= T, the full model otherwise, and at the latest '
                             f'after {DEFAULT_MAX_CHEAP["roi"]} cheap frames in a row. The '
                             'cheap path: the memory model on a crop around its last result '
                             f'at {FLOW_BELOW:g}-99, flow under {FLOW_BELOW:g} and with other '
                             'models. Omitted: the default pipeline runs at its own target '
                             f'({DEFAULT_TARGET}); --backend memory/embedding run every frame. '
                             '-1: the same as omitted (the node\'s "backend default")')
    parser.add_argument('--out', required=True, metavar='DIR',
                        help='output folder for masks and results.csv')
    parser.add_argument('--video', action='store_true',
                        help='also write OUT/<seq>.mp4: image | prediction | ground truth')
    parser.add_argument('--jobs', type=int, default=1, metavar='N',
                        help='sequences segmented at once, each in its own process with its '
                             'share of the CPU cores (0 = one per core). The scores do not '
                             'change; the whole run ends sooner, while the fps of each '
                             'sequence (its own reading and segmenting) falls')
    parser.add_argument('--no-progress', action='store_true', help='hide the progress bar')
    return parser


def main(argv=None):
    """Entry point of ``vos_eval``; returns the exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format='%(levelname)s %(name)s: %(message)s')
    # kill, systemd and launch stop with SIGTERM: stop the worker processes and keep what
    # finished, as Ctrl-C does
    try:
        with sigterm_raises(_Terminated):
            return _run(args)
    except _Terminated:
        print(f'vos_eval: terminated; {_what_finished(args.out)}', file=sys.stderr)
        return 143


def _run(args):
    """Evaluate as ``args`` say and print the summary; return the exit code."""
    try:
        check_out_folder(args.out)
        if args.resolution is not None and args.resolution < 0:
            raise ValueError(f'--resolution must be >= 0, got {args.resolution}')
        if args.target_confidence == -1:
            args.target_confidence = None  # as vos_node's -1: the backend's own target
        if args.target_confidence is not None and not 0 <= args.target_confidence <= 100:
            raise ValueError(f'--target-confidence must lie in 0..100 (or -1), got '
                             f'{args.target_confidence:g}')
        names = args.sequences
        if args.sequences_file:
            names = read_sequences_file(args.sequences_file)
            if not names:
                raise DataError(f'sequences file {args.sequences_file} lists no sequence')
        started = time.perf_counter()
        results, mean = evaluate_dataset(
            args.dataset, args.out, sequences=names, backend=args.backend, model=args.model,
            device=args.device, resolution=args.resolution, progress=not args.no_progress,
            video=args.video, target_confidence=args.target_confidence,
            arguments=vars(args), jobs=args.jobs)
    except (VosError, ValueError, OSError) as error:
        print(f'vos_eval: error: {error}', file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f'vos_eval: interrupted; {_what_finished(args.out)}', file=sys.stderr)
        return 130
    scored = sum(1 for r in results if r.scores is not None)
    if mean['JF']:
        summary = (f'J&F {mean["JF"]}  J {mean["J"]}  F {mean["F"]}  '
                   f'({scored} of {len(results)} sequences scored')
    else:
        summary = f'no ground truth beyond first frames ({len(results)} sequences'
    shares = path_shares(results)
    if shares.get('cheap') or args.target_confidence is not None:
        summary += (f'; full model on {shares.get("full", 0):.0f} %, cheap path on '
                    f'{shares.get("cheap", 0):.0f} %, given masks on '
                    f'{shares.get("given", 0):.0f} % of frames')
    summary += f', {mean["frames"]} frames, {mean["fps"]} fps'
    if args.jobs != 1:
        # each process's fps look lower than one run's: the run's own time says what it gained
        summary += f'; {time.perf_counter() - started:.1f} s in all with --jobs {args.jobs}'
    print(f'{summary}) -> {os.path.join(args.out, RESULTS_NAME)}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
