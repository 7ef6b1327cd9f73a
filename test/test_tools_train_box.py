"""Tests of vos_train_box (box model training) and its export, on tiny synthetic data."""

import csv
import importlib.util
import os

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
    frames = train_box.davis_items(davis, train_box.read_names([str(exclude)]))
    assert frames and all('synth01' in p for p, _ in frames)


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
    assert train_box.main(common + ['--iters', '4', '--out', two, '--max-minutes', '1e-9']) == 0
    assert torch.load(os.path.join(two, 'last.pt'), weights_only=False)['iteration'] == 0
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
