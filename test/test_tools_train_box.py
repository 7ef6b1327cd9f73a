"""Tests of vos_train_box (box model training) and its export, on tiny synthetic data."""

import csv
import importlib.util
import os
import signal

import cv2
import numpy as np
import pytest

torch = pytest.importorskip('torch')

from vos_ros.core import model_io  # noqa: E402
from vos_ros.core.interactive import PromptSegmenter  # noqa: E402
from vos_ros.core.synthetic import make_clip  # noqa: E402
from vos_ros.core.synthetic import write_davis_dataset  # noqa: E402
from vos_ros.tools import export  # noqa: E402
from vos_ros.tools import train_box  # noqa: E402
from vos_ros.tools.train import listed_sequences  # noqa: E402

TINY = ['--crop', '64', '--batch-size', '2', '--width', '16', '--threads', '1',
        '--no-pretrained', '--no-progress', '--warmup', '1']


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    """An ECSSD-layout folder of 6 synthetic images and a DAVIS root of 2 short sequences."""
    root = tmp_path_factory.mktemp('data')
    ecssd = root / 'ecssd'
    (ecssd / 'images').mkdir(parents=True)
    (ecssd / 'masks').mkdir()
    clip = make_clip(num_frames=6, width=96, height=72, num_objects=1, seed=5)
    for index, (frame, labels) in enumerate(zip(clip.frames, clip.masks)):
        name = f'{index + 1:04d}'
        cv2.imwrite(str(ecssd / 'images' / f'{name}.jpg'), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
        cv2.imwrite(str(ecssd / 'masks' / f'{name}.png'), np.where(labels > 0, 255, 0)
                    .astype(np.uint8))
    davis = root / 'davis'
    write_davis_dataset(davis, num_sequences=2, seed=4, num_frames=3, width=80, height=64)
    return str(ecssd), str(davis)


def _rows(out):
    with open(os.path.join(out, 'metrics.csv'), newline='') as handle:
        return list(csv.DictReader(handle))


def test_holdouts_are_never_read(data, tmp_path):
    ecssd, davis = data
    names = [os.path.basename(p) for p, _ in train_box.ecssd_items(ecssd, holdout=2)]
    assert names == ['0001.jpg', '0002.jpg', '0003.jpg', '0004.jpg']
    held = [os.path.basename(p) for p, _ in train_box.ecssd_holdout_items(ecssd, 2)]
    assert held == ['0005.jpg', '0006.jpg']
    exclude = tmp_path / 'holdout.txt'
    exclude.write_text('# hold-out\nsynth00\n')
    include, excluded, _ = listed_sequences([davis], exclude_files=[str(exclude)])
    assert include is None and excluded == {'synth00'}
    frames = train_box.davis_items(davis, excluded)
    assert frames and all('synth01' in p for p, _ in frames)
    # --sequences-file: only the sequences it lists
    only = tmp_path / 'only.txt'
    only.write_text('synth00\n')
    include, _, _ = listed_sequences([davis], str(only))
    frames = train_box.davis_items(davis, include=include)
    assert frames and all('synth00' in p for p, _ in frames)


def test_box_jitter_is_tight_or_slightly_loose():
    rng = np.random.default_rng(0)
    boxes = [train_box.jitter_box((100, 100, 199, 299), rng) for _ in range(400)]
    tight = sum(b == (100, 100, 199, 299) for b in boxes)
    assert 60 < tight < 180
    for x0, y0, x1, y1 in boxes:
        assert 100 - 10.01 <= x0 <= 100 + 3.01 and 199 - 3.01 <= x1 <= 199 + 10.01
        assert 100 - 20.01 <= y0 <= 100 + 6.01 and 299 - 6.01 <= y1 <= 299 + 20.01


def test_samples_are_a_function_of_seed_and_iteration(data):
    ecssd, davis = data
    sampler = train_box.Sampler(train_box.ecssd_items(ecssd, 0), train_box.davis_items(davis),
                                64, 0.2, seed=3)
    crops, truths, boxes, _ = sampler.batch(7, 3)
    again, truths_again, _, _ = sampler.batch(7, 3)
    other, _, _, _ = sampler.batch(8, 3)
    assert crops.shape == (3, 64, 64, 3) and truths.shape == (3, 64, 64)
    assert np.array_equal(crops, again) and np.array_equal(truths, truths_again)
    assert not np.array_equal(crops, other)
    for truth, box in zip(truths, boxes):
        assert truth.any()
        if box is not None:
            # the object lies (almost) inside the drawn box
            assert (truth & (box > 0)).sum() > 0.8 * truth.sum()


def test_train_resume_equals_one_run_and_exports(data, tmp_path, capsys):
    ecssd, davis = data
    common = ['--ecssd', ecssd, '--davis', davis, '--ecssd-holdout', '2'] + TINY
    one = str(tmp_path / 'one')
    assert train_box.main(common + ['--iters', '4', '--out', one]) == 0
    two = str(tmp_path / 'two')
    capsys.readouterr()
    # stopped before the end: saved, says how to continue, exit code 75 (EX_TEMPFAIL)
    assert train_box.main(common + ['--iters', '4', '--out', two, '--max-minutes', '1e-9']) == 75
    assert torch.load(os.path.join(two, 'last.pt'), weights_only=False)['iteration'] == 0
    assert capsys.readouterr().err == (
        'vos_train_box: stopped at iteration 0 of 4 (--max-minutes): continue with --resume '
        f'last; checkpoint {os.path.join(two, "last.pt")}\n')
    assert train_box.main(common + ['--iters', '4', '--out', two, '--resume', 'last',
                                    '--export', str(tmp_path / 'box.pt')]) == 0
    rows = _rows(two)
    assert [int(r['iteration']) for r in rows] == [1, 2, 3, 4]
    assert all(float(r['loss']) > 0 for r in rows)
    first = torch.load(os.path.join(one, 'last.pt'), weights_only=False)['state_dict']
    second = torch.load(os.path.join(two, 'last.pt'), weights_only=False)['state_dict']
    for key in first:
        assert torch.allclose(first[key], second[key], atol=1e-6), key
    meta = model_io.read_metadata(tmp_path / 'box.pt')
    assert meta['kind'] == 'box' and meta['crop_size'] == 64
    assert meta['training_data']['ecssd_images'] == 4
    assert 'wrote' in capsys.readouterr().out
    # vos_export dispatches box checkpoints; the file works in the segmenter
    assert export.main([os.path.join(one, 'last.pt'), '--out', str(tmp_path / 'b2.pt')]) == 0
    assert 'kind box' in capsys.readouterr().out
    image = np.full((60, 80, 3), 100, np.uint8)
    segmenter = PromptSegmenter('model', str(tmp_path / 'b2.pt'))
    assert segmenter.method == 'model'
    assert segmenter.box(image, (20, 10, 59, 49)).shape == (60, 80)
    # the exported file holds the ONNX copy that annotate runs without torch
    if importlib.util.find_spec('onnx') is not None:
        assert model_io.read_extra_file(tmp_path / 'b2.pt', model_io.BOX_ONNX_FILE)
        assert segmenter.model.runtime == 'opencv'


def test_bad_arguments_fail_with_one_line(data, tmp_path, capsys):
    ecssd, _ = data
    assert train_box.main(['--ecssd', ecssd, '--crop', '70', '--out', str(tmp_path)]
                          + TINY[2:]) == 1
    assert 'multiple of 16' in capsys.readouterr().err
    assert train_box.main(['--out', str(tmp_path)] + TINY) == 1
    assert 'no training data' in capsys.readouterr().err


def _signal_in_first_iteration(monkeypatch, number):
    """Send signal ``number`` to this process while the first iteration computes its loss."""
    original = train_box._loss
    sent = []

    def signalling(*args):
        if not sent:
            sent.append(number)
            os.kill(os.getpid(), number)
        return original(*args)

    monkeypatch.setattr(train_box, '_loss', signalling)


@pytest.mark.parametrize('number, reason, code', [(signal.SIGTERM, 'SIGTERM', 75),
                                                  (signal.SIGINT, 'Ctrl-C', 130)])
def test_sigterm_and_ctrl_c_save_the_iteration_and_say_how_to_continue(
        data, tmp_path, capsys, monkeypatch, number, reason, code):
    ecssd, _ = data
    out = str(tmp_path / 'run')
    common = ['--ecssd', ecssd, '--ecssd-holdout', '2', '--iters', '3', '--out', out] + TINY
    handlers = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    _signal_in_first_iteration(monkeypatch, number)
    # --resume last without OUT/last.pt starts a new run: the same command loops until done
    assert train_box.main(common + ['--resume', 'last']) == code
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == handlers
    last = os.path.join(out, 'last.pt')
    assert torch.load(last, weights_only=False)['iteration'] == 1
    assert capsys.readouterr().err == (
        f'vos_train_box: stopped at iteration 1 of 3 ({reason}): continue with --resume last; '
        f'checkpoint {last}\n')
    monkeypatch.undo()
    assert train_box.main(common + ['--resume', 'last']) == 0
    assert torch.load(last, weights_only=False)['iteration'] == 3
    assert [int(r['iteration']) for r in _rows(out)] == [1, 2, 3]


def test_sequences_file_and_unknown_names(data, tmp_path, capsys):
    ecssd, davis = data
    only = tmp_path / 'only.txt'
    only.write_text('synth01\n')
    out = tmp_path / 'run'
    # ECSSD too: read_pair reads these palette masks as empty (objects 38, 75 in grey < 128)
    assert train_box.main(['--ecssd', ecssd, '--ecssd-holdout', '2', '--davis', davis,
                           '--sequences-file', str(only), '--iters', '1', '--out', str(out)]
                          + TINY) == 0
    trained = torch.load(out / 'last.pt', weights_only=False)['meta']['training_data']
    assert trained['sequences'] == ['synth01'] and trained['davis_frames'] == 3
    # a name that is in no --davis root is an error, before anything is written
    typo = tmp_path / 'typo.txt'
    typo.write_text('synth00\nsynth1\n')
    for option in ('--sequences-file', '--exclude-file'):
        new = tmp_path / option.strip('-')
        assert train_box.main(['--davis', davis, option, str(typo), '--iters', '1',
                               '--out', str(new)] + TINY) == 1
        err = capsys.readouterr().err
        assert err.startswith(f"vos_train_box: error: {option} {typo}: sequence 'synth1' "
                              'not found: no folder ') and 'did you mean synth01' in err
        assert len(err.splitlines()) == 1 and not new.exists()


def test_unusable_out_export_or_resume_is_one_line(data, tmp_path, capsys):
    ecssd, _ = data
    common = ['--ecssd', ecssd, '--ecssd-holdout', '2', '--iters', '1'] + TINY
    afile = tmp_path / 'afile'
    afile.write_text('x')
    cases = [(['--out', str(afile)], f'--out {afile} is a file, expected a folder'),
             (['--out', str(afile / 'sub')], f'{afile} is a file, not a folder'),
             (['--out', str(tmp_path / 'o'), '--export', str(afile / 'm.pt')],
              f'--export {afile / "m.pt"}: {afile} is a file, not a folder')]
    if os.path.isdir('/proc'):
        cases.append((['--out', '/proc/nope'], 'cannot write in /proc'))
    for extra, said in cases:
        assert train_box.main(common + extra) == 1
        err = capsys.readouterr().err
        assert said in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / 'o').exists()  # --export is checked before training
    out = str(tmp_path / 'run')
    assert train_box.main(common + ['--out', out]) == 0
    capsys.readouterr()
    # another architecture on resume is refused, naming the option
    assert train_box.main(common + ['--out', out, '--resume', 'last', '--width', '8']) == 1
    err = capsys.readouterr().err
    assert '--width 16, this command gives --width 8' in err and len(err.splitlines()) == 1
    # an exported box model is frozen: no training to continue from it
    model = str(tmp_path / 'box.pt')
    assert export.main([os.path.join(out, 'last.pt'), '--out', model]) == 0
    assert train_box.main(common + ['--out', out, '--resume', model]) == 1
    assert 'is an exported model (TorchScript), not a training checkpoint' in \
        capsys.readouterr().err


def test_palette_masks_give_one_object_per_sample_and_empty_masks_stop(
        data, tmp_path, monkeypatch):
    """Multi-object palette masks (ids 1, 2) are read by the shared label reader, one object
    per sample (a grey threshold read them as empty and the draw never ended); masks with no
    usable object stop with DataError instead of drawing forever."""
    _, davis = data
    items = train_box.davis_items(davis, set())
    labels = train_box.read_pair(*items[0])[1]
    assert set(np.unique(labels)) == {0, 1, 2}  # write_davis_dataset's clips hold 2 objects
    drawn = []
    make_sample = train_box.make_sample

    def recording(image, mask, *args, **kwargs):
        drawn.append(mask)
        return make_sample(image, mask, *args, **kwargs)

    read_pair = train_box.read_pair
    read = []
    monkeypatch.setattr(train_box, 'read_pair', lambda *a: read.append(read_pair(*a)[1])
                        or (read_pair(*a)[0], read[-1]))
    monkeypatch.setattr(train_box, 'make_sample', recording)
    crops, truths, _, _ = train_box.Sampler([], items, 64, 0.2).batch(0, 6)
    assert crops.shape[0] == 6 and all(np.count_nonzero(t) > 0 for t in truths)
    # each sample is exactly one object's pixels, and both objects are drawn
    chosen = set()
    for mask in drawn:
        ids = [i for i in (1, 2) for labels in read if np.array_equal(mask, labels == i)]
        assert ids, 'a sample was not one object of its frame'
        chosen.update(ids)
    assert chosen == {1, 2}
    monkeypatch.undo()
    blank = tmp_path / 'blank.png'
    cv2.imwrite(str(blank), np.zeros(labels.shape, np.uint8))
    with pytest.raises(train_box.DataError, match='no object'):
        train_box.Sampler([], [(items[0][0], str(blank))], 64, 0.2).batch(0, 2)
