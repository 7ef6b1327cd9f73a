"""sensor_msgs <-> numpy conversions: roundtrips, row padding and malformed messages."""

import cv2
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
import numpy as np
import pytest
from sensor_msgs.msg import CompressedImage
from sensor_msgs.msg import Image

from vos_ros.core.errors import DataError
from vos_ros.ros import conversions
from vos_ros.ros.conversions import array_to_image_msg
from vos_ros.ros.conversions import compressed_msg_to_rgb
from vos_ros.ros.conversions import ConversionError
from vos_ros.ros.conversions import image_msg_to_array
from vos_ros.ros.conversions import image_msg_to_rgb
from vos_ros.ros.conversions import labels_to_msg
from vos_ros.ros.conversions import msg_to_labels
from vos_ros.ros.conversions import rgb_to_compressed_msg


def _rgb(height=5, width=7, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _encode(rgb, encoding):
    """Return the array a camera would send in ``encoding`` for the RGB picture ``rgb``."""
    alpha = np.full(rgb.shape[:2] + (1,), 77, np.uint8)
    return {
        'rgb8': rgb,
        'bgr8': rgb[:, :, ::-1],
        'rgba8': np.concatenate([rgb, alpha], axis=2),
        'bgra8': np.concatenate([rgb[:, :, ::-1], alpha], axis=2),
        'mono8': rgb[:, :, 0],
        '8UC1': rgb[:, :, 0],
        '8UC3': rgb,
    }[encoding]


def _expected_rgb(rgb, encoding):
    if encoding in ('mono8', '8UC1'):
        return np.repeat(rgb[:, :, :1], 3, axis=2)
    return rgb


def _raw_msg(height, width, encoding, step, data):
    msg = Image()
    msg.height, msg.width, msg.encoding, msg.step = height, width, encoding, step
    msg.data = bytes(data)
    return msg


@pytest.fixture(params=[False, True], ids=['numpy', 'cv_bridge'])
def bridge(request, monkeypatch):
    """Run each conversion through the numpy path and, where importable, cv_bridge."""
    if request.param and not conversions.use_cv_bridge():
        pytest.skip('cv_bridge is not importable here')
    if not request.param:
        monkeypatch.setattr(conversions, 'CvBridge', None)
    return request.param


@pytest.mark.parametrize('encoding', list(conversions.ENCODINGS))
def test_roundtrip_every_encoding(encoding, bridge):
    rgb = _rgb()
    msg = array_to_image_msg(_encode(rgb, encoding), encoding)
    assert (msg.height, msg.width, msg.encoding) == (5, 7, encoding)
    assert msg.step * msg.height == len(msg.data)
    back = image_msg_to_rgb(msg)
    assert back.dtype == np.uint8 and back.flags['C_CONTIGUOUS']
    np.testing.assert_array_equal(back, _expected_rgb(rgb, encoding))
    np.testing.assert_array_equal(image_msg_to_array(msg), _encode(rgb, encoding))


@pytest.mark.parametrize('encoding', ['rgb8', 'bgra8', 'mono8'])
@pytest.mark.parametrize('padding', [1, 3, 64])
def test_row_padding_is_honoured(encoding, padding, bridge):
    rgb = _rgb(height=4, width=6, seed=1)
    pixels = _encode(rgb, encoding)
    rows = pixels.reshape(4, -1)
    filler = np.full((4, padding), 201, np.uint8)  # garbage that must not leak into pixels
    padded = np.concatenate([rows, filler], axis=1)
    msg = _raw_msg(4, 6, encoding, padded.shape[1], padded.tobytes())
    np.testing.assert_array_equal(image_msg_to_rgb(msg), _expected_rgb(rgb, encoding))


@pytest.mark.parametrize('case, kind', [
    (dict(encoding='yuv422'), 'encoding'),
    (dict(encoding='16UC1'), 'encoding'),
    (dict(height=0, step=0, data=b''), 'size'),
    (dict(width=0, step=0, data=b''), 'size'),
    (dict(step=5), 'step'),
    (dict(data=bytes(6 * 4 * 3 - 1)), 'length'),
    (dict(data=bytes(6 * 4 * 3 + 1)), 'length'),
])
def test_malformed_image_raises_conversion_error(case, kind):
    fields = dict(height=4, width=6, encoding='rgb8', step=18, data=bytes(6 * 4 * 3))
    fields.update(case)
    msg = _raw_msg(**fields)
    with pytest.raises(ConversionError) as info:
        image_msg_to_rgb(msg)
    assert info.value.kind == kind
    assert isinstance(info.value, DataError)


def test_labels_roundtrip_and_0_255_masks():
    labels = np.zeros((6, 9), np.uint8)
    labels[1:3, 2:5] = 1
    labels[4:, 6:] = 7
    msg = labels_to_msg(labels)
    assert msg.encoding == 'mono8'
    np.testing.assert_array_equal(msg_to_labels(msg), labels)
    binary = array_to_image_msg((labels > 0).astype(np.uint8) * 255, 'mono8')
    np.testing.assert_array_equal(msg_to_labels(binary), (labels > 0).astype(np.uint8))


def test_colour_label_map_reads_palette_ids():
    from vos_ros.core.labels import colourise

    labels = np.zeros((4, 4), np.uint8)
    labels[:2, :2] = 2
    labels[2:, 2:] = 3
    np.testing.assert_array_equal(msg_to_labels(array_to_image_msg(colourise(labels), 'rgb8')),
                                  labels)
    bgr = np.ascontiguousarray(colourise(labels)[:, :, ::-1])
    np.testing.assert_array_equal(msg_to_labels(array_to_image_msg(bgr, 'bgr8')), labels)


def test_compressed_roundtrip_png_is_lossless_jpeg_close():
    rgb = cv2.GaussianBlur(_rgb(32, 48, seed=2), (7, 7), 3)
    np.testing.assert_array_equal(compressed_msg_to_rgb(rgb_to_compressed_msg(rgb, 'png')), rgb)
    jpeg = compressed_msg_to_rgb(rgb_to_compressed_msg(rgb, 'jpeg', quality=95))
    assert jpeg.shape == rgb.shape
    assert np.abs(jpeg.astype(int) - rgb).mean() < 4


def test_truncated_jpeg_is_a_decode_error_padded_one_is_not():
    rgb = cv2.GaussianBlur(_rgb(64, 96, seed=3), (7, 7), 3)
    data = bytes(rgb_to_compressed_msg(rgb, 'jpeg', quality=90).data)
    # OpenCV alone returns the cut stream as an image (its lower rows grey): the check is ours
    cut = data[:len(data) * 2 // 3]
    assert cv2.imdecode(np.frombuffer(cut, np.uint8), cv2.IMREAD_COLOR) is not None
    with pytest.raises(ConversionError, match='truncated JPEG') as caught:
        compressed_msg_to_rgb(CompressedImage(format='jpeg', data=cut))
    assert caught.value.kind == 'decode'
    # padding after the end-of-image marker, as some encoders write, is still a whole frame
    padded = compressed_msg_to_rgb(CompressedImage(format='jpeg', data=data + bytes(16)))
    assert padded.shape == rgb.shape
    # PNG never goes through the JPEG check
    png = bytes(rgb_to_compressed_msg(rgb, 'png').data)
    np.testing.assert_array_equal(
        compressed_msg_to_rgb(CompressedImage(format='png', data=png)), rgb)


def test_array_to_image_msg_rejects_bad_arrays():
    with pytest.raises(ValueError):
        array_to_image_msg(np.zeros((2, 2, 3), np.float32), 'rgb8')
    with pytest.raises(ValueError):
        array_to_image_msg(np.zeros((2, 2), np.uint8), 'rgb8')
    with pytest.raises(ValueError):
        array_to_image_msg(np.zeros((2, 2), np.uint8), 'yuv422')


_ENCODING_CHOICES = list(conversions.ENCODINGS) + ['', 'rgb16', 'RGB8', 'bayer_rggb8', 'mono8 ']


@settings(max_examples=300, deadline=None)
@given(height=st.integers(0, 40), width=st.integers(0, 40), step=st.integers(0, 200),
       encoding=st.sampled_from(_ENCODING_CHOICES), data=st.binary(max_size=3000))
def test_malformed_messages_never_crash(height, width, step, encoding, data):
    msg = _raw_msg(height, width, encoding, step, data)
    for convert in (image_msg_to_rgb, msg_to_labels):
        try:
            out = convert(msg)
        except ConversionError:
            continue
        # Accepted only when consistent, and then the output has the declared size.
        assert len(data) == step * height and height > 0 and width > 0
        assert out.shape[:2] == (height, width) and out.dtype == np.uint8
        if convert is image_msg_to_rgb:
            assert out.shape == (height, width, 3)


@settings(max_examples=100, deadline=None)
@given(data=st.binary(max_size=500), image_format=st.sampled_from(['jpeg', 'png', '']))
def test_garbage_compressed_images_raise_conversion_error(data, image_format):
    msg = CompressedImage(format=image_format, data=data)
    try:
        out = compressed_msg_to_rgb(msg)
    except ConversionError:
        return
    assert out.ndim == 3 and out.shape[2] == 3


@st.composite
def _consistent_messages(draw):
    """Messages whose geometry is right, with arbitrary pixels and padding."""
    encoding = draw(st.sampled_from(list(conversions.ENCODINGS)))
    channels = conversions.ENCODINGS[encoding]
    height, width = draw(st.integers(1, 24)), draw(st.integers(1, 24))
    step = width * channels + draw(st.integers(0, 5))
    data = draw(st.binary(min_size=step * height, max_size=step * height))
    return _raw_msg(height, width, encoding, step, data)


@settings(max_examples=200, deadline=None)
@given(msg=_consistent_messages())
def test_consistent_messages_convert_or_raise_package_error(msg):
    rgb = image_msg_to_rgb(msg)
    assert rgb.shape == (msg.height, msg.width, 3)
    try:
        labels = msg_to_labels(msg)  # random colours may exceed 255 object ids
    except ConversionError:
        return
    assert labels.shape == (msg.height, msg.width) and labels.dtype == np.uint8


@pytest.mark.parametrize('encoding', ['rgb8', 'bgr8', 'mono8'])
def test_annotation_message_with_soft_edges_reads_as_the_objects_meant(encoding):
    """~/annotation takes the same reader as files: seams snapped, one line said (issue 17)."""
    from vos_ros.core.labels import DAVIS_PALETTE

    if encoding == 'mono8':
        mask = np.zeros((120, 160), np.uint8)
        cv2.circle(mask, (80, 60), 30, 255, -1)
        array = cv2.resize(cv2.resize(mask, (80, 60), interpolation=cv2.INTER_AREA),
                           (160, 120), interpolation=cv2.INTER_LINEAR)
        expected = [1]
    else:
        array = np.zeros((120, 160, 3), np.uint8)
        for object_id, centre in ((1, (50, 60)), (2, (115, 60))):
            colour = tuple(int(v) for v in DAVIS_PALETTE[object_id])
            cv2.circle(array, centre, 28, colour, -1, cv2.LINE_AA)
        if encoding == 'bgr8':
            array = np.ascontiguousarray(array[:, :, ::-1])
        expected = [1, 2]
    lines = []
    labels = msg_to_labels(array_to_image_msg(array, encoding), log=lines.append)
    assert sorted(int(v) for v in np.unique(labels) if v) == expected
    assert len(lines) == 1
