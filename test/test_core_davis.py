"""DAVIS-layout reading (480p, no-480p and flat layouts) and its errors."""

import os
import shutil

import numpy as np
import pytest

from vos_ros.core.davis import fit_labels
from vos_ros.core.davis import Dataset
from vos_ros.core.davis import list_images
from vos_ros.core.davis import read_image
from vos_ros.core.davis import read_sequences_file
from vos_ros.core.errors import DataError
from vos_ros.core.synthetic import make_clip
from vos_ros.core.synthetic import write_davis


@pytest.fixture(scope='module')
def clips():
    return {'alpha': make_clip(num_frames=5, width=64, height=48, num_objects=2, seed=1),
            'beta': make_clip(num_frames=4, width=64, height=48, num_objects=1, seed=2)}


@pytest.fixture
def dataset_root(tmp_path, clips):
    for name, clip in clips.items():
        write_davis(tmp_path, name, clip)
    return tmp_path


def test_reads_sequences_frames_and_masks(dataset_root, clips):
    dataset = Dataset(dataset_root)
    assert dataset.sequence_names() == ['alpha', 'beta']
    for name, clip in clips.items():
        sequence = dataset.sequence(name)
        assert len(sequence) == len(clip)
        assert sequence.frame_names == [f'{i:05d}' for i in range(len(clip))]
        for index in range(len(clip)):
            assert sequence.has_mask(index)
            np.testing.assert_array_equal(sequence.read_mask(index), clip.masks[index])
            frame = sequence.read_frame(index)
            assert frame.shape == clip.frames[index].shape and frame.dtype == np.uint8
            # JPEG is lossy but close; a channel swap (BGR) would be far off.
            truth = clip.frames[index].astype(int)
            error = np.abs(frame.astype(int) - truth).mean()
            swapped = np.abs(frame[:, :, ::-1].astype(int) - truth).mean()
            assert error < 8.0 and error < swapped / 2
        given = sequence.given_masks()
        assert sorted(given) == list(range(len(clip)))


def test_layout_without_480p_level(tmp_path, dataset_root):
    root = tmp_path / 'no480p'
    shutil.copytree(dataset_root / 'JPEGImages' / '480p', root / 'JPEGImages')
    shutil.copytree(dataset_root / 'Annotations' / '480p', root / 'Annotations')
    dataset = Dataset(root)
    assert dataset.sequence_names() == ['alpha', 'beta']
    assert len(dataset.sequence('beta')) == 4


def test_flat_sequence_folder(tmp_path, dataset_root):
    root = tmp_path / 'gamma'
    shutil.copytree(dataset_root / 'JPEGImages' / '480p' / 'alpha', root / 'JPEGImages')
    shutil.copytree(dataset_root / 'Annotations' / '480p' / 'alpha', root / 'Annotations')
    dataset = Dataset(root)
    assert dataset.sequence_names() == ['gamma']
    sequence = dataset.sequence('gamma')
    assert len(sequence) == 5 and sequence.has_mask(0)
    with pytest.raises(DataError):
        dataset.sequence('alpha')


def test_sparse_masks(tmp_path, clips):
    write_davis(tmp_path, 'alpha', clips['alpha'], masks='first')
    sequence = Dataset(tmp_path).sequence('alpha')
    assert sequence.has_mask(0)
    assert not any(sequence.has_mask(i) for i in range(1, len(sequence)))
    assert list(sequence.given_masks()) == [0]
    with pytest.raises(DataError, match='00001.png'):
        sequence.read_mask(1)


def test_missing_folders_name_the_path(tmp_path, dataset_root):
    with pytest.raises(DataError, match='nowhere'):
        Dataset(tmp_path / 'nowhere')
    (tmp_path / 'empty').mkdir()
    with pytest.raises(DataError, match='JPEGImages'):
        Dataset(tmp_path / 'empty')
    dataset = Dataset(dataset_root)
    with pytest.raises(DataError, match='xyzzy') as error:
        dataset.sequence('xyzzy')
    assert 'did you mean' not in str(error.value)
    # a typo names the sequences it is close to
    with pytest.raises(DataError, match='did you mean alpha'):
        dataset.sequence('alpah')
    (dataset_root / 'JPEGImages' / '480p' / 'hollow').mkdir()
    with pytest.raises(DataError, match='no frames'):
        dataset.sequence('hollow')


def test_read_image_errors_and_listing(tmp_path):
    with pytest.raises(DataError, match='missing.jpg'):
        read_image(tmp_path / 'missing.jpg')
    bad = tmp_path / 'bad.jpg'
    bad.write_bytes(b'\xff\xd8 broken')
    with pytest.raises(DataError, match='bad.jpg'):
        read_image(bad)
    for name in ('b.png', 'a.jpg', 'c.txt', 'd.JPEG'):
        (tmp_path / name).write_bytes(b'')
    names = [os.path.basename(p) for p in list_images(tmp_path)]
    assert names == ['a.jpg', 'b.png', 'bad.jpg', 'd.JPEG']


def test_sequences_file(tmp_path):
    path = tmp_path / 'val.txt'
    path.write_text('# validation\nbear\n\n  car-turn  # comment\nbmx\n')
    assert read_sequences_file(path) == ['bear', 'car-turn', 'bmx']
    with pytest.raises(DataError, match='nothing.txt'):
        read_sequences_file(tmp_path / 'nothing.txt')


def test_fit_labels_resizes_the_same_aspect_ratio_and_refuses_another():
    labels = np.zeros((10, 12), np.uint8)
    assert fit_labels(labels, (10, 12), 'ok') is labels
    notes = []
    small = np.zeros((240, 427), np.uint8)
    small[100:140, 200:260] = 3
    fitted = fit_labels(small, (480, 854), 'half.png', notes.append)
    assert fitted.shape == (480, 854) and fitted.dtype == np.uint8
    assert set(np.unique(fitted)) == {0, 3}  # nearest neighbour: no new ids at the edges
    assert notes == ['mask 427x240 resized to the frame size 854x480']
    assert fit_labels(np.ones((480, 853), np.uint8), (480, 854), 'judo.png').shape == (480, 854)
    with pytest.raises(DataError, match='mask.png: mask size 10x12 differs .*aspect ratio'):
        fit_labels(np.zeros((12, 10), np.uint8), (10, 12), 'mask.png')


def test_sequences_file_with_a_byte_order_mark(tmp_path):
    path = tmp_path / 'notepad.txt'
    path.write_bytes('bear\r\ncar-turn\r\n'.encode('utf-8-sig'))
    assert read_sequences_file(path) == ['bear', 'car-turn']


def test_read_image_says_a_folder_is_a_folder(tmp_path):
    with pytest.raises(DataError, match='is a folder, not an image file'):
        read_image(tmp_path)
    with pytest.raises(DataError, match='image file not found'):
        read_image(tmp_path / 'missing.jpg')
