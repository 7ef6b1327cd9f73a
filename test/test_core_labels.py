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


# -- label maps whose values are not clean object ids (issue 17) ------------------------------


def _disc_masks(shape=(120, 160), discs=((1, (60, 60), 30), (2, (105, 70), 25))):
    """(clean ids, RGB drawn in palette colours with anti-aliased edges)."""
    import cv2

    clean = np.zeros(shape, np.uint8)
    rgb = np.zeros(shape + (3,), np.uint8)
    for object_id, centre, radius in discs:
        cv2.circle(clean, centre, radius, object_id, -1)
        colour = tuple(int(v) for v in DAVIS_PALETTE[object_id])
        cv2.circle(rgb, centre, radius, colour, -1, cv2.LINE_AA)
    return clean, rgb


def _iou(a, b):
    return (a & b).sum() / max((a | b).sum(), 1)


@pytest.mark.parametrize('discs', [((1, (60, 60), 30),),
                                   ((1, (60, 60), 30), (2, (105, 70), 25)),
                                   ((3, (40, 40), 20), (7, (110, 80), 30))])
def test_anti_aliased_palette_rgb_snaps_to_the_drawn_objects(tmp_path, discs):
    clean, rgb = _disc_masks(discs=discs)
    assert len(np.unique(rgb.reshape(-1, 3), axis=0)) > 10  # many edge colours
    path = tmp_path / 'aa.png'
    Image.fromarray(rgb).save(path)
    lines = []
    labels = read_labels(path, log=lines.append)
    assert object_ids(labels) == [d[0] for d in discs]
    for object_id, _, _ in discs:
        # LINE_AA discs are drawn a little wider than filled ones: not a reader error.
        assert _iou(labels == object_id, clean == object_id) > 0.9
    assert len(lines) == 1 and 'aa.png' in lines[0] and 'nearest object colour' in lines[0]


@pytest.mark.parametrize('how', ['bilinear_up', 'bilinear_down', 'area', 'blur'])
def test_soft_edged_0_255_mask_is_one_object(tmp_path, how):
    import cv2

    mask = np.zeros((90, 120), np.uint8)
    cv2.circle(mask, (60, 45), 28, 255, -1)
    if how == 'bilinear_up':
        soft = cv2.resize(mask, (300, 225), interpolation=cv2.INTER_LINEAR)
    elif how == 'bilinear_down':
        soft = cv2.resize(mask, (77, 58), interpolation=cv2.INTER_LINEAR)
    elif how == 'area':
        soft = cv2.resize(mask, (50, 37), interpolation=cv2.INTER_AREA)
    else:
        soft = cv2.GaussianBlur(mask, (9, 9), 3)
    assert len(np.unique(soft)) > 5
    path = tmp_path / 'soft.png'
    Image.fromarray(soft, mode='L').save(path)
    lines = []
    labels = read_labels(path, log=lines.append)
    assert object_ids(labels) == [1]
    np.testing.assert_array_equal(labels, (soft >= 128).astype(np.uint8))
    assert len(lines) == 1 and 'threshold 128' in lines[0]


def test_stray_palette_indices_take_the_neighbouring_label():
    labels = np.zeros((60, 60), np.uint8)
    labels[10:40, 10:40] = 2
    dirty = labels.copy()
    dirty[9, 10:40] = 8     # a one-pixel seam of another index, as paint programs leave
    dirty[40, 12:20] = 17
    lines = []
    snapped = labels_from_array(dirty, 'p.png', log=lines.append)
    assert object_ids(snapped) == [2]
    assert (snapped != labels).sum() <= 38
    assert len(lines) == 1 and 'p.png' in lines[0]


def test_clean_maps_are_unchanged_and_silent(caplog):
    clean, _ = _disc_masks()
    with caplog.at_level('WARNING'):
        np.testing.assert_array_equal(labels_from_array(clean), clean)
        np.testing.assert_array_equal(labels_from_array(DAVIS_PALETTE[clean]), clean)
    assert not caplog.records


def test_default_log_is_one_warning(caplog):
    _, rgb = _disc_masks()
    with caplog.at_level('WARNING', logger='vos_ros.core.labels'):
        labels_from_array(rgb, 'x.png')
    assert len(caplog.records) == 1 and caplog.records[0].getMessage().startswith('x.png: ')


def test_jpeg_compressed_colour_mask_keeps_only_the_object():
    import cv2

    clean, rgb = _disc_masks(shape=(240, 320), discs=((1, (160, 120), 60),))
    ok, data = cv2.imencode('.jpg', rgb[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    decoded = cv2.imdecode(data, cv2.IMREAD_COLOR)[:, :, ::-1]
    labels = labels_from_array(decoded, log=lambda line: None)
    assert object_ids(labels) == [1]
    assert _iou(labels == 1, clean == 1) > 0.95


def test_directory_is_named_as_such(tmp_path):
    with pytest.raises(DataError, match='is a directory'):
        read_labels(tmp_path)


def _soft_disc(shape=(90, 120), scale=1.0):
    """A disc blurred to soft edges: float32 0..``scale`` with many fractional values."""
    import cv2

    mask = np.zeros(shape, np.float32)
    cv2.circle(mask, (60, 45), 28, 1.0, -1)
    return cv2.GaussianBlur(mask, (9, 9), 3) * np.float32(scale)


@pytest.mark.parametrize('dtype', [np.float32, np.float64, np.float16])
def test_float_probability_mask_is_one_object_above_one_half(dtype):
    soft = _soft_disc().astype(dtype)
    lines = []
    labels = labels_from_array(soft, 'net', log=lines.append)
    assert labels.dtype == np.uint8
    np.testing.assert_array_equal(labels, (soft > 0.5).astype(np.uint8))
    assert len(lines) == 1 and lines[0].startswith('net: read as the probability of one object')
    assert '> 0.5 are object 1' in lines[0]
    # A confident mask that never reaches 1.0 is the whole object (astype(uint8) left none).
    hard = (soft > 0.5).astype(dtype) * dtype(0.999)
    np.testing.assert_array_equal(labels_from_array(hard, log=lines.append), labels)
    # A probability map one channel of which is object: the same, alpha ignored.
    grey = np.dstack([soft, soft, soft, np.full(soft.shape, 0.25, dtype)])
    np.testing.assert_array_equal(labels_from_array(grey, log=lines.append), labels)
    # Nothing likely enough is no object, said in the line.
    lines.clear()
    assert not labels_from_array(soft * dtype(0.4), log=lines.append).any()
    assert len(lines) == 1 and 'no object' in lines[0]


def test_float_tiff_probability_file_reads_as_object_one(tmp_path):
    from PIL import Image

    soft = _soft_disc().astype(np.float32)
    path = tmp_path / 'probability.tif'
    Image.fromarray(soft, mode='F').save(path)
    lines = []
    labels = read_labels(path, log=lines.append)
    np.testing.assert_array_equal(labels, (soft > 0.5).astype(np.uint8))
    assert labels.any() and len(lines) == 1 and 'probability of one object' in lines[0]


def test_whole_number_floats_are_ids_as_integers_are(caplog):
    ids = _random_labels([0, 3, 7])
    with caplog.at_level('WARNING', logger='vos_ros.core.labels'):
        np.testing.assert_array_equal(labels_from_array(ids.astype(np.float32)), ids)
        binary = np.where(ids == 3, 255.0, 0.0)  # a 0/255 mask as float: object 1
        np.testing.assert_array_equal(labels_from_array(binary), (ids == 3).astype(np.uint8))
        ones = (ids == 7).astype(np.float64)  # 0/1 floats: object 1, no note
        np.testing.assert_array_equal(labels_from_array(ones), ones.astype(np.uint8))
    assert not caplog.records
    with pytest.raises(ValueError, match='0..255'):
        labels_from_array(np.array([[0.0, 300.0]], np.float32))
    with pytest.raises(ValueError, match='0..255'):
        labels_from_array(np.array([[0.0, -2.0]], np.float32))


@pytest.mark.parametrize('array, match', [
    (_soft_disc(scale=255.0), r'fractional values in 0\.\.255'),   # soft 0..255 as float
    (_soft_disc() - np.float32(0.25), r'fractional values in -0\.25'),
    (np.array([[0.0, np.nan], [1.0, 0.0]], np.float32), 'NaN or infinite'),
    (np.array([[0.0, np.inf], [1.0, 0.0]]), 'NaN or infinite'),
    (np.dstack([_soft_disc(), np.zeros((90, 120), np.float32), _soft_disc()]),
     'float colour mask'),
])
def test_fractional_floats_that_are_no_probability_are_refused(array, match):
    with pytest.raises(ValueError, match=match):
        labels_from_array(array, log=lambda line: None)
