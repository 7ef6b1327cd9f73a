"""vos_eval end to end on synthetic DAVIS folders: outputs, scores and errors."""

import csv
import json
import os
import shutil
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest

from vos_ros.core.labels import read_labels
from vos_ros.core.synthetic import make_clip
from vos_ros.core.synthetic import write_davis
from vos_ros.tools import evaluate

COLUMNS = ['sequence', 'J', 'F', 'JF', 'J_recall', 'J_decay', 'F_recall', 'F_decay', 'frames',
           'fps']
SIZE = dict(width=96, height=72)


@pytest.fixture(scope='module')
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp('davis')
    clips = {'aa': make_clip(num_frames=7, num_objects=2, seed=21, **SIZE),
             'bb': make_clip(num_frames=6, num_objects=3, seed=22, object_ids=[2, 5, 9],
                             **SIZE),
             'cc': make_clip(num_frames=5, num_objects=1, seed=23, **SIZE)}
    for name, clip in clips.items():
        write_davis(root, name, clip, masks='first' if name == 'cc' else 'all')
    return root, clips


def _copy(dataset, tmp_path):
    root = tmp_path / 'data'
    shutil.copytree(dataset[0], root)
    return root


def _read_csv(path):
    with open(path, newline='') as handle:
        reader = csv.DictReader(handle)
        return reader.fieldnames, list(reader)


def _run(args, capsys):
    code = evaluate.main([str(a) for a in args] + ['--no-progress'])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _reference_scores(gt_dir, pred_dir):
    """Per-object (J, F) in percent from vos-benchmark, an independent implementation."""
    benchmark = pytest.importorskip('vos_benchmark.benchmark')
    name = os.path.basename(gt_dir)
    _, iou, boundary = benchmark.VideoEvaluator(os.path.dirname(gt_dir),
                                                os.path.dirname(pred_dir))(name)
    return [(iou[k], boundary[k]) for k in sorted(iou)]


def test_end_to_end(dataset, tmp_path, capsys):
    root, clips = dataset
    out = tmp_path / 'out'
    code, stdout, stderr = _run([root, '--out', out], capsys)
    assert code == 0, stderr
    assert 'J&F' in stdout and 'results.csv' in stdout
    fields, rows = _read_csv(out / 'results.csv')
    assert fields == COLUMNS
    assert [r['sequence'] for r in rows] == ['aa', 'bb', 'cc', 'mean']
    assert not (out / 'results.partial.csv').exists()
    # the pipeline is named on stderr even without the progress bar, and recorded
    assert 'vos_eval: backend adaptive (full memory, target_confidence 50' in stderr, stderr
    record = json.loads((out / 'run.json').read_text())
    assert record['finished'] is True and record['backend']['backend'] == 'adaptive'
    assert record['sequences'] == ['aa', 'bb', 'cc']
    assert record['arguments']['out'] == str(out)
    frames = sum(len(clip) for clip in clips.values())
    assert record['frames'] == frames
    assert record['path_percent']['given'] == pytest.approx(100.0 * len(clips) / frames,
                                                            abs=0.01)
    assert record['scores']['JF'] == float(rows[-1]['JF'])
    for name, clip in clips.items():
        written = sorted(os.listdir(out / name))
        assert written == [f'{i:05d}.png' for i in range(len(clip))]
        for index, file_name in enumerate(written):
            with Image.open(out / name / file_name) as image:
                assert image.mode == 'P'
                assert image.size == clip.size
            labels = read_labels(out / name / file_name)
            assert set(np.unique(labels).tolist()) <= {0, *clip.object_ids}
            if index == 0:
                np.testing.assert_array_equal(labels, clip.first_mask)
    by_name = {r['sequence']: r for r in rows}
    for name in ('aa', 'bb'):
        assert by_name[name]['frames'] == str(len(clips[name]))
        assert 0.0 <= float(by_name[name]['J']) <= 100.0
        assert float(by_name[name]['fps']) > 0
    # Ground truth only on the first frame: masks written, scores empty, left out of the mean.
    assert all(by_name['cc'][c] == '' for c in COLUMNS[1:8])
    assert by_name['cc']['frames'] == '5' and by_name['cc']['fps'] != ''
    assert by_name['mean']['frames'] == str(7 + 6 + 5)

    # Independent recomputation from the written masks (vos-benchmark, per object).
    objects = []
    for name in ('aa', 'bb'):
        # vos-benchmark scores an object from the first scored frame showing it: all do.
        assert set(np.unique(clips[name].masks[1]).tolist()) == {0, *clips[name].object_ids}
        scores = _reference_scores(str(root / 'Annotations' / '480p' / name), str(out / name))
        assert len(scores) == len(clips[name].object_ids)
        j_seq = np.mean([j for j, _ in scores])
        f_seq = np.mean([f for _, f in scores])
        assert float(by_name[name]['J']) == pytest.approx(j_seq, abs=1e-3)
        assert float(by_name[name]['F']) == pytest.approx(f_seq, abs=1e-3)
        assert float(by_name[name]['JF']) == pytest.approx((j_seq + f_seq) / 2, abs=1e-3)
        objects.extend(scores)
    mean_j = np.mean([j for j, _ in objects])
    mean_f = np.mean([f for _, f in objects])
    assert float(by_name['mean']['J']) == pytest.approx(mean_j, abs=1e-3)
    assert float(by_name['mean']['JF']) == pytest.approx((mean_j + mean_f) / 2, abs=1e-3)


def test_selected_sequences_and_file(dataset, tmp_path, capsys):
    root, _ = dataset
    code, _, stderr = _run([root, '--sequences', 'bb', '--out', tmp_path / 'one'], capsys)
    assert code == 0, stderr
    _, rows = _read_csv(tmp_path / 'one' / 'results.csv')
    assert [r['sequence'] for r in rows] == ['bb', 'mean']
    assert rows[0]['J'] != '' and rows[0]['J'] == rows[1]['J']
    listing = tmp_path / 'val.txt'
    listing.write_text('# two of them\ncc\naa\n')
    code, _, stderr = _run([root, '--sequences-file', listing, '--resolution', '36',
                            '--out', tmp_path / 'two'], capsys)
    assert code == 0, stderr
    _, rows = _read_csv(tmp_path / 'two' / 'results.csv')
    assert [r['sequence'] for r in rows] == ['cc', 'aa', 'mean']
    # The mean only counts scored sequences: here it is aa's alone.
    for column in COLUMNS[1:8]:
        assert float(rows[2][column]) == pytest.approx(float(rows[1][column]), abs=1e-3)
    # Worked at a smaller size, written at the original size.
    with Image.open(tmp_path / 'two' / 'aa' / '00003.png') as image:
        assert image.size == (SIZE['width'], SIZE['height'])


def test_video_and_chart(dataset, tmp_path, capsys):
    import cv2

    root, clips = dataset
    out = tmp_path / 'v'
    code, _, stderr = _run([root, '--sequences', 'aa', 'cc', '--video', '--out', out], capsys)
    assert code == 0, stderr
    for name in ('aa', 'cc'):
        capture = cv2.VideoCapture(str(out / f'{name}.mp4'))
        frames = []
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            frames.append(frame)
        capture.release()
        assert len(frames) == len(clips[name])
        # image | prediction | ground truth, side by side at the frame's height
        height, width = frames[0].shape[:2]
        assert height == SIZE['height'] and width >= 3 * SIZE['width']
        if name == 'cc':
            # no ground truth after the first frame: the third panel is blank
            third = frames[-1][:, -SIZE['width'] + 2:]
            assert third.mean() < 20
    with Image.open(out / 'results.png') as chart:
        assert chart.size[0] > 300 and chart.size[1] > 200
    # Nothing scored: no chart, and a chart left from an earlier run in OUT is kept aside.
    code, _, stderr = _run([root, '--sequences', 'cc', '--out', out], capsys)
    assert code == 0, stderr
    assert not (out / 'results.png').exists()
    assert (out / 'results.previous.png').exists()
    assert 'results.previous.csv' in stderr and 'results.previous.png' in stderr


def test_only_unscored_sequences(dataset, tmp_path, capsys):
    root, _ = dataset
    code, stdout, stderr = _run([root, '--sequences', 'cc', '--out', tmp_path / 'o'], capsys)
    assert code == 0, stderr
    _, rows = _read_csv(tmp_path / 'o' / 'results.csv')
    assert rows[-1]['sequence'] == 'mean' and rows[-1]['JF'] == ''
    assert 'no ground truth' in stdout


def _assert_error(args, capsys, *needles):
    code, _, stderr = _run(args, capsys)
    assert code != 0
    # one error line, no traceback (before it, at most the pipeline and kept-aside notes)
    errors = [line for line in stderr.splitlines() if line.startswith('vos_eval: error: ')]
    assert len(errors) == 1 and stderr.splitlines()[-1] == errors[0], stderr
    assert 'Traceback' not in stderr, stderr
    for needle in needles:
        assert needle in errors[0], stderr
    return stderr


def test_missing_dataset_and_sequence(tmp_path, dataset, capsys):
    _assert_error([tmp_path / 'absent', '--out', tmp_path / 'o'], capsys, 'absent')
    _assert_error([dataset[0], '--sequences', 'zz', '--out', tmp_path / 'o'], capsys, 'zz')
    _assert_error([dataset[0], '--sequences-file', tmp_path / 'nofile.txt', '--out',
                   tmp_path / 'o'], capsys, 'nofile.txt')
    assert not (tmp_path / 'o' / 'results.csv').exists()


def test_missing_first_frame_mask(tmp_path, dataset, capsys):
    root = _copy(dataset, tmp_path)
    mask = root / 'Annotations' / '480p' / 'bb' / '00000.png'
    mask.unlink()
    _assert_error([root, '--out', tmp_path / 'o'], capsys, str(mask))
    assert not (tmp_path / 'o' / 'results.csv').exists()


def test_unreadable_image_leaves_partial_results(tmp_path, dataset, capsys):
    root = _copy(dataset, tmp_path)
    out = tmp_path / 'o'
    code, _, _ = _run([root, '--out', out], capsys)
    assert code == 0 and (out / 'results.csv').exists()
    broken = root / 'JPEGImages' / '480p' / 'bb' / '00003.jpg'
    broken.write_bytes(b'\xff\xd8 not really a jpeg')
    _assert_error([root, '--out', out], capsys, str(broken))
    # The old complete-looking results are not left as this run's, but kept aside, whole;
    # finished sequences are kept as partial.
    assert not (out / 'results.csv').exists()
    _, old_rows = _read_csv(out / 'results.previous.csv')
    assert [r['sequence'] for r in old_rows] == ['aa', 'bb', 'cc', 'mean']
    assert json.loads((out / 'run.previous.json').read_text())['finished'] is True
    _, rows = _read_csv(out / 'results.partial.csv')
    assert [r['sequence'] for r in rows] == ['aa']
    assert (out / 'aa' / '00006.png').exists()
    # this run's record says what ran and that it did not finish
    record = json.loads((out / 'run.json').read_text())
    assert record['finished'] is False and record['sequences'] == ['aa', 'bb', 'cc']
    # failing again keeps the complete run's files together (not the stopped run's record)
    _assert_error([root, '--out', out], capsys, str(broken))
    assert json.loads((out / 'run.previous.json').read_text())['finished'] is True
    _, again = _read_csv(out / 'results.previous.csv')
    assert again == old_rows


def test_size_mismatches(tmp_path, dataset, capsys):
    root = _copy(dataset, tmp_path)
    gt = root / 'Annotations' / '480p' / 'aa' / '00002.png'
    labels = read_labels(gt)
    Image.fromarray(np.pad(labels, ((0, 4), (0, 0)))).save(gt)
    _assert_error([root, '--sequences', 'aa', '--out', tmp_path / 'o'], capsys, str(gt),
                  'size')
    assert not (tmp_path / 'o' / 'results.csv').exists()

    first = root / 'Annotations' / '480p' / 'bb' / '00000.png'
    Image.fromarray(read_labels(first)[:, :50]).save(first)
    _assert_error([root, '--sequences', 'bb', '--out', tmp_path / 'o'], capsys, str(first))

    frame = root / 'JPEGImages' / '480p' / 'cc' / '00002.jpg'
    Image.new('RGB', (40, 30)).save(frame)
    _assert_error([root, '--sequences', 'cc', '--out', tmp_path / 'o'], capsys, str(frame))


def test_bad_arguments(tmp_path, dataset, capsys):
    root = dataset[0]
    _assert_error([root, '--backend', 'nope', '--out', tmp_path / 'o'], capsys, 'nope')
    model = tmp_path / 'm.pt'
    model.write_bytes(b'x')
    _assert_error([root, '--backend', 'flow', '--model', model, '--out', tmp_path / 'o'],
                  capsys, '--model')
    _assert_error([root, '--model', tmp_path / 'none.pt', '--out', tmp_path / 'o'], capsys,
                  'none.pt')
    _assert_error([root, '--resolution', '-3', '--out', tmp_path / 'o'], capsys, 'resolution')
    (tmp_path / 'afile').write_text('keep me')
    _assert_error([root, '--out', tmp_path / 'afile'], capsys, 'is a file, expected a folder')
    assert (tmp_path / 'afile').read_text() == 'keep me'
    with pytest.raises(SystemExit) as info:
        evaluate.main([str(root)])  # --out is required
    assert info.value.code != 0
    capsys.readouterr()


def test_evaluate_dataset_function(dataset, tmp_path):
    root, clips = dataset
    results, mean = evaluate.evaluate_dataset(root, tmp_path / 'f', sequences=['aa'],
                                              progress=False)
    assert [r.name for r in results] == ['aa']
    assert results[0].frames == len(clips['aa'])
    assert [o['id'] for o in results[0].objects] == clips['aa'].object_ids
    assert float(mean['JF']) == pytest.approx(results[0].scores['JF'], abs=1e-3)


def test_console_script_help():
    script = shutil.which('vos_eval', path=os.path.dirname(sys.executable))
    command = [script] if script else [sys.executable, '-m', 'vos_ros.tools.evaluate']
    done = subprocess.run(command + ['--help'], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0
    assert '--sequences-file' in done.stdout and 'default' in done.stdout


def test_model_and_device_passed_only_when_given(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(evaluate, 'create_backend_for',
                        lambda *args, **options: calls.append(args) or ('backend', 'cpu'))
    model = tmp_path / 'model.pt'
    model.write_bytes(b'x')
    assert evaluate.make_backend(None) == 'backend'
    evaluate.make_backend('embedding', model=str(model), device='cpu')
    evaluate.make_backend('embedding', device='cuda:1', target_confidence=70)
    assert calls == [(None, None, None, None), ('embedding', str(model), 'cpu', None),
                     ('embedding', None, 'cuda:1', 70)]


def test_flow_runs_on_the_cpu_whatever_device_says(dataset, tmp_path, capsys, caplog):
    root = dataset[0]
    code, _, stderr = _run([root, '--sequences', 'cc', '--backend', 'flow', '--device', 'cpu',
                            '--out', tmp_path / 'cpu'], capsys)
    assert code == 0, stderr
    code, _, stderr = _run([root, '--sequences', 'cc', '--backend', 'flow', '--device',
                            'cuda:0', '--out', tmp_path / 'cuda'], capsys)
    assert code == 0, stderr
    assert 'backend flow takes no device; it runs on the CPU (--device cuda:0 unused)' \
        in caplog.text


# -- label files as people have them; objects entering later (issue 17) -----------------------


@pytest.fixture(scope='module')
def messy_dataset(tmp_path_factory):
    import label_cases

    root = tmp_path_factory.mktemp('messy')
    # A 0/255 file holds one object: its sequences have no late square.
    for name, kind, late in (('clean', 'clean', 4), ('rgb_aa', 'rgb_aa', 4),
                             ('clean_one', 'clean', None),
                             ('gray_resized', 'gray_resized', None)):
        frames, labels = label_cases.make_sequence(late_square_at=late)
        label_cases.write_sequence(root, name, frames, labels, kind)
    return root


def test_messy_ground_truth_scores_like_the_clean_files(messy_dataset, tmp_path, caplog,
                                                        capsys):
    results, _ = evaluate.evaluate_dataset(messy_dataset, tmp_path / 'out', backend='flow',
                                           progress=False)
    # flow names its working size and device like the model backends
    stderr = capsys.readouterr().err
    assert 'vos_eval: backend flow (resolution 200, device cpu)\n' in stderr, stderr
    by_name = {r.name: r for r in results}
    for name, clean in (('rgb_aa', 'clean'), ('gray_resized', 'clean_one')):
        assert by_name[clean].scores['JF'] > 75
        assert by_name[name].scores['JF'] == pytest.approx(by_name[clean].scores['JF'],
                                                           abs=3), name
        assert [o['id'] for o in by_name[name].objects] == [1]
        for file_name in os.listdir(tmp_path / 'out' / name):
            assert set(np.unique(read_labels(tmp_path / 'out' / name / file_name))) <= {0, 1}
    # One line per sequence says what the reader changed, one names the late object.
    notes = [r.getMessage() for r in caplog.records if 'fill no region' in r.getMessage()
             or 'threshold 128' in r.getMessage()]
    assert len(notes) == 2
    late = [r.getMessage() for r in caplog.records if 'after the first frame' in r.getMessage()]
    assert len(late) == 2 and all('object(s) 2' in line for line in late)
    # a working size asked for is named (and recorded) beside the backend's own
    evaluate.evaluate_dataset(messy_dataset, tmp_path / 'sized', backend='flow',
                              progress=False, resolution=64, sequences=['clean'])
    stderr = capsys.readouterr().err
    # flow has no network size of its own: the asked working size is the only one named
    assert 'vos_eval: backend flow (device cpu), working size 64 px' in stderr
    record = json.loads((tmp_path / 'sized' / 'run.json').read_text())
    assert record['backend']['working_resolution'] == 64


def _rows_without_fps(path):
    _, rows = _read_csv(path)
    return [{key: value for key, value in row.items() if key != 'fps'} for row in rows]


def test_jobs_run_sequences_in_processes_with_the_same_results(dataset, tmp_path, capsys):
    root, clips = dataset
    alone, together = tmp_path / 'one', tmp_path / 'two'
    code, _, stderr = _run([root, '--out', alone], capsys)
    assert code == 0, stderr
    code, stdout, stderr = _run([root, '--out', together, '--jobs', '2'], capsys)
    assert code == 0, stderr
    assert 'J&F' in stdout and ' s in all with --jobs 2)' in stdout, stdout
    # the same scores, in the order asked for (not the order the processes finished in)
    assert _rows_without_fps(together / 'results.csv') == _rows_without_fps(
        alone / 'results.csv')
    for name, clip in clips.items():
        for index in range(len(clip)):
            file_name = f'{index:05d}.png'
            np.testing.assert_array_equal(read_labels(together / name / file_name),
                                          read_labels(alone / name / file_name))
    record = json.loads((together / 'run.json').read_text())
    assert record['finished'] is True and record['jobs'] == 2
    assert record['wall_seconds'] > 0
    assert json.loads((alone / 'run.json').read_text())['jobs'] == 1


def test_jobs_error_in_a_process_stops_the_run(tmp_path, dataset, capsys):
    root = _copy(dataset, tmp_path)
    out = tmp_path / 'o'
    broken = root / 'JPEGImages' / '480p' / 'bb' / '00003.jpg'
    broken.write_bytes(b'\xff\xd8 not really a jpeg')
    _assert_error([root, '--out', out, '--backend', 'flow', '--jobs', '2'], capsys,
                  str(broken))
    assert not (out / 'results.csv').exists()
    assert json.loads((out / 'run.json').read_text())['finished'] is False
    if (out / 'results.partial.csv').exists():
        _, rows = _read_csv(out / 'results.partial.csv')
        assert {r['sequence'] for r in rows} <= {'aa', 'cc'}


def test_jobs_arguments(tmp_path, dataset, capsys):
    root = dataset[0]
    _assert_error([root, '--jobs', '-1', '--out', tmp_path / 'o'], capsys, 'jobs')
    backend = evaluate.make_backend('flow')
    with pytest.raises(ValueError, match='backend name'):
        evaluate.evaluate_dataset(root, tmp_path / 'b', backend=backend, jobs=2,
                                  progress=False)
    # one sequence: no process is started, whatever --jobs says
    results, _ = evaluate.evaluate_dataset(root, tmp_path / 'c', sequences=['aa'],
                                           backend='flow', jobs=0, progress=False)
    assert [r.name for r in results] == ['aa']
    assert json.loads((tmp_path / 'c' / 'run.json').read_text())['jobs'] == 1


def test_progress_in_a_log_stays_quiet_for_a_short_run(dataset, tmp_path, capsys):
    # stderr is not a terminal here, as in a log: work under the 30 s interval writes no
    # progress line at all (not one per sequence)
    root = dataset[0]
    for extra in ([], ['--jobs', '2', '--backend', 'flow']):
        code = evaluate.main([str(root), '--out', str(tmp_path / 'o'), *extra])
        stderr = capsys.readouterr().err
        assert code == 0, stderr
        assert 'vos_eval: backend' in stderr
        assert '%|' not in stderr and 'frame/s' not in stderr, stderr


def test_sigterm_stops_the_processes_and_keeps_what_finished(dataset, tmp_path):
    import signal
    import time as clock

    root = _copy(dataset, tmp_path)
    # a long sequence, still running when the signal comes (flow: about 300 frames a second)
    long_clip = make_clip(num_frames=3000, num_objects=1, seed=24, **SIZE)
    write_davis(root, 'zz', long_clip, masks='first')
    out = tmp_path / 'o'
    script = shutil.which('vos_eval', path=os.path.dirname(sys.executable))
    command = [script] if script else [sys.executable, '-m', 'vos_ros.tools.evaluate']
    process = subprocess.Popen(
        command + [str(root), '--out', str(out), '--backend', 'flow', '--jobs', '2',
                   '--sequences', 'zz', 'aa', 'bb', 'cc', '--no-progress'],
        stderr=subprocess.PIPE, text=True)
    try:
        # the short ones written (the scoring that follows takes milliseconds at 96x72)
        last = [out / 'aa' / '00006.png', out / 'bb' / '00005.png', out / 'cc' / '00004.png']
        deadline = clock.monotonic() + 120
        while not all(path.exists() for path in last) and clock.monotonic() < deadline:
            clock.sleep(0.1)
        clock.sleep(0.5)
        children = _children(process.pid)
        assert children  # the worker processes (and multiprocessing's resource tracker)
        assert not (out / 'zz' / '02999.png').exists(), 'zz finished before the signal'
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 143, stderr
    assert 'vos_eval: terminated' in stderr
    assert not (out / 'results.csv').exists()
    if 'finished sequences are in' in stderr:
        _, rows = _read_csv(out / 'results.partial.csv')
        assert rows and {r['sequence'] for r in rows} <= {'aa', 'bb', 'cc'}
    else:
        assert 'no sequence had finished' in stderr
    # no worker is left behind
    deadline = clock.monotonic() + 10
    while clock.monotonic() < deadline and any(_alive(pid) for pid in children):
        clock.sleep(0.2)
    assert not [pid for pid in children if _alive(pid)]


def _children(pid):
    """Child process ids of ``pid`` (from /proc: no procps needed)."""
    with open(f'/proc/{pid}/task/{pid}/children') as handle:
        return handle.read().split()


def _alive(pid):
    try:
        with open(f'/proc/{pid}/stat') as handle:
            return handle.read().split(')')[-1].split()[0] != 'Z'
    except FileNotFoundError:
        return False


def test_masks_off_by_a_pixel_are_fitted_another_aspect_refused(dataset, tmp_path, capsys,
                                                                caplog):
    root = _copy(dataset, tmp_path)
    reference = tmp_path / 'reference'
    assert _run([root, '--sequences', 'aa', '--backend', 'flow', '--out', reference],
                capsys)[0] == 0
    masks = sorted((root / 'Annotations').rglob('aa/*.png'))
    for path in (masks[0], masks[3]):  # the first mask and a ground-truth mask, a column less
        image = Image.open(path)
        image.crop((0, 0, image.width - 1, image.height)).save(path)
    out = tmp_path / 'fitted'
    code, _, stderr = _run([root, '--sequences', 'aa', '--backend', 'flow', '--out', out],
                           capsys)
    assert code == 0, stderr
    assert 'aa: mask 95x72 resized to the frame size 96x72 (and 1 more' in caplog.text
    (_, ref_rows), (_, rows) = _read_csv(reference / 'results.csv'), _read_csv(out / 'results.csv')
    # a column lost and stretched back moves edges by up to a pixel on a 96 px clip
    assert abs(float(rows[0]['JF']) - float(ref_rows[0]['JF'])) < 5.0
    image = Image.open(masks[3])
    image.resize((image.width, image.height * 2)).save(masks[3])
    code, _, stderr = _run([root, '--sequences', 'aa', '--backend', 'flow', '--out',
                            tmp_path / 'refused'], capsys)
    assert code == 1 and 'another aspect ratio' in stderr, stderr
