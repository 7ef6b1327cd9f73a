"""Label contract: reading every mask flavour, palette writing, colours and overlays."""

import numpy as np
from PIL import Image
import pytest

from vos_ros.core.errors import DataError
from vos_ros.core.labels import colourise
from vos_ros.core.labels import DAVIS_PALETTE
from vos_ros.core.labels import labels_from_array
from vos_ros.core.labels import object_ids
from vos_ros.core.labels import overlay
from vos_ros.core.labels import read_labels
from vos_ros.core.labels import resize_labels
from vos_ros.core.labels import write_labels


def _random_labels(ids, shape=(37, 53), seed=0):
    rng = np.random.default_rng(seed)
    return np.asarray(ids, np.uint8)[rng.integers(0, len(ids), shape)]


@pytest.mark.parametrize('ids', [[0, 1], [0, 1, 2, 3, 4, 5], [0, 3, 7], [0, 3, 7, 200, 254]])
def test_palette_roundtrip(tmp_path, ids):
    labels = _random_labels(ids)
    path = tmp_path / 'mask.png'
    write_labels(path, labels)
    with Image.open(path) as image:
        assert image.mode == 'P'
        palette = np.array(image.getpalette()[:768]).reshape(-1, 3)
        stored = np.array(image)
    np.testing.assert_array_equal(stored, labels)
    np.testing.assert_array_equal(palette, DAVIS_PALETTE[:len(palette)])
    np.testing.assert_array_equal(read_labels(path), labels)


def test_write_creates_parents_and_rejects_bad_shapes(tmp_path):
    path = tmp_path / 'a' / 'b' / 'm.png'
    write_labels(path, np.ones((4, 5), np.uint8))
    assert path.is_file()
    with pytest.raises(ValueError):
        write_labels(tmp_path / 'x.png', np.zeros((4, 5, 3), np.uint8))
    with pytest.raises(ValueError):
        write_labels(tmp_path / 'y.png', np.full((4, 5), 300, np.int32))


def test_davis_palette_known_colours():
    # The PASCAL VOC colour map: background black, then maroon, green, olive, navy.
    assert DAVIS_PALETTE[0].tolist() == [0, 0, 0]
    assert DAVIS_PALETTE[1].tolist() == [128, 0, 0]
    assert DAVIS_PALETTE[2].tolist() == [0, 128, 0]
    assert DAVIS_PALETTE[3].tolist() == [128, 128, 0]
    assert DAVIS_PALETTE[4].tolist() == [0, 0, 128]
    assert len({tuple(c) for c in DAVIS_PALETTE.tolist()}) == 256


def test_gray_0_255_reads_as_object_one(tmp_path):
    gray = np.zeros((20, 30), np.uint8)
    gray[5:12, 4:20] = 255
    path = tmp_path / 'gray.png'
    Image.fromarray(gray, mode='L').save(path)
    labels = read_labels(path)
    assert labels.dtype == np.uint8
    np.testing.assert_array_equal(labels, (gray == 255).astype(np.uint8))


def test_gray_with_small_ids_kept(tmp_path):
    gray = _random_labels([0, 1, 2, 5])
    path = tmp_path / 'ids.png'
    Image.fromarray(gray, mode='L').save(path)
    np.testing.assert_array_equal(read_labels(path), gray)


def test_gray_alpha_like_davis_bear_ignores_alpha(tmp_path):
    # DAVIS-2016 bear/00077.png is an 'LA' image: 0/255 gray plus an alpha channel.
    gray = np.zeros((24, 32), np.uint8)
    gray[3:15, 6:25] = 255
    alpha = np.random.default_rng(1).integers(0, 256, gray.shape).astype(np.uint8)
    path = tmp_path / 'la.png'
    Image.fromarray(np.dstack([gray, alpha]), mode='LA').save(path)
    with Image.open(path) as image:
        assert image.mode == 'LA'
    np.testing.assert_array_equal(read_labels(path), (gray == 255).astype(np.uint8))


def test_palette_index_is_the_id_whatever_the_colours(tmp_path):
    labels = _random_labels([0, 2, 5, 9])
    image = Image.fromarray(labels, mode='P')
    colours = np.random.default_rng(3).integers(0, 256, (256, 3)).astype(np.uint8)
    image.putpalette(colours.reshape(-1).tolist())
    path = tmp_path / 'custom.png'
    image.save(path)
    np.testing.assert_array_equal(read_labels(path), labels)


def test_rgb_palette_colours_map_to_ids(tmp_path):
    labels = _random_labels([0, 1, 2, 7])
    rgb = DAVIS_PALETTE[labels]
    path = tmp_path / 'rgb.png'
    Image.fromarray(rgb, mode='RGB').save(path)
    np.testing.assert_array_equal(read_labels(path), labels)
    rgba = np.dstack([rgb, np.full(labels.shape, 77, np.uint8)])
    path = tmp_path / 'rgba.png'
    Image.fromarray(rgba, mode='RGBA').save(path)
    np.testing.assert_array_equal(read_labels(path), labels)


def test_unknown_colour_takes_lowest_free_id():
    rgb = np.zeros((4, 4, 3), np.uint8)
    rgb[0, 0] = DAVIS_PALETTE[1]
    rgb[1, 1] = (17, 200, 99)  # not a palette colour
    labels = labels_from_array(rgb)
    assert labels[0, 0] == 1
    assert labels[1, 1] == 2
    assert labels[2, 2] == 0


def test_binary_mode_image(tmp_path):
    bits = np.zeros((10, 12), bool)
    bits[2:6, 3:9] = True
    path = tmp_path / 'bits.png'
    Image.fromarray(bits).convert('1').save(path)
    np.testing.assert_array_equal(read_labels(path), bits.astype(np.uint8))


def test_missing_and_corrupt_files_name_the_file(tmp_path):
    missing = tmp_path / 'nope.png'
    with pytest.raises(DataError, match='nope.png'):
        read_labels(missing)
    corrupt = tmp_path / 'corrupt.png'
    corrupt.write_bytes(b'not a png at all')
    with pytest.raises(DataError, match='corrupt.png'):
        read_labels(corrupt)


def test_labels_from_array_rejects_bad_input():
    with pytest.raises(ValueError):
        labels_from_array(np.zeros((2, 2, 5), np.uint8))
    with pytest.raises(ValueError):
        labels_from_array(np.zeros((2, 2, 2, 2), np.uint8))
    with pytest.raises(ValueError):
        labels_from_array(np.array([[0, 300]], np.int32))
    np.testing.assert_array_equal(labels_from_array(np.array([[0, 3]], np.int64)),
                                  np.array([[0, 3]], np.uint8))


def test_object_ids_colourise_resize():
    labels = _random_labels([0, 3, 7])
    assert object_ids(labels) == [3, 7]
    assert object_ids(np.zeros((3, 3), np.uint8)) == []
    colours = colourise(labels)
    assert colours.shape == labels.shape + (3,)
    np.testing.assert_array_equal(colours[labels == 7][0], DAVIS_PALETTE[7])
    resized = resize_labels(labels, 106, 74)
    assert resized.shape == (74, 106)
    # Nearest-neighbour: no new ids are invented by blending.
    assert set(np.unique(resized).tolist()) <= {0, 3, 7}
    np.testing.assert_array_equal(resized[::2, ::2], labels)


def test_overlay_keeps_background_and_colours_objects():
    image = np.full((20, 20, 3), 100, np.uint8)
    labels = np.zeros((20, 20), np.uint8)
    labels[5:15, 5:15] = 2
    blended = overlay(image, labels, alpha=0.5, contour=False)
    np.testing.assert_array_equal(blended[labels == 0], image[labels == 0])
    expected = (0.5 * 100 + 0.5 * DAVIS_PALETTE[2]).astype(np.uint8)
    np.testing.assert_array_equal(blended[10, 10], expected)
    outlined = overlay(image, labels, alpha=0.5, contour=True)
    assert (outlined == 255).all(axis=2).any()
