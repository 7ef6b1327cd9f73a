"""Raw and compressed image buffers (sensor_msgs/Image fields) to numpy, framework-free.

rclpy messages and rosbags messages carry the same fields (height, width, encoding, step, data),
so the node, the bag tools and annotate all decode through these functions with any object that
has them; no ROS import happens here.
"""

import cv2
import numpy as np

from vos_ros.core.errors import DataError
from vos_ros.core.labels import labels_from_array

#: 8-bit encodings understood: name -> channel count (8UC3 is read as RGB order).
ENCODINGS = {
    'rgb8': 3,
    'bgr8': 3,
    'rgba8': 4,
    'bgra8': 4,
    'mono8': 1,
    '8UC1': 1,
    '8UC3': 3,
}

#: Largest image side accepted (guards against absurd headers allocating huge arrays).
MAX_SIDE = 16384


class ImageDecodeError(DataError):
    """A buffer cannot be turned into an image: the text says why, ``kind`` in a word."""

    def __init__(self, message, kind='invalid'):
        super().__init__(message)
        #: encoding, size, step, length, decode or invalid (for per-problem log throttling).
        self.kind = kind


def check_geometry(msg):
    """Validate an Image-like object's geometry; return (height, width, channels).

    Raises ImageDecodeError for an unknown encoding, a zero or absurd size, a ``step`` smaller
    than one row of pixels, or a data length other than ``step * height``.
    """
    encoding = msg.encoding
    if encoding not in ENCODINGS:
        raise ImageDecodeError(f'unsupported encoding {encoding!r}; '
                               f'supported: {", ".join(ENCODINGS)}', 'encoding')
    channels = ENCODINGS[encoding]
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height <= 0 or width <= 0:
        raise ImageDecodeError(f'zero-size image ({width}x{height})', 'size')
    if height > MAX_SIDE or width > MAX_SIDE:
        raise ImageDecodeError(f'image too large ({width}x{height}; limit {MAX_SIDE} per side)',
                               'size')
    row = width * channels
    if step < row:
        raise ImageDecodeError(f'step {step} is smaller than one row of {encoding} pixels '
                               f'({width} x {channels} = {row} bytes)', 'step')
    size = len(msg.data)
    if size != step * height:
        raise ImageDecodeError(f'data length {size} does not match step x height = '
                               f'{step} x {height} = {step * height}', 'length')
    return height, width, channels


def raw_to_array(msg):
    """Return the pixels as H×W (1 channel) or H×W×C uint8, as encoded, row padding removed.

    The array is a view of the message buffer where possible (no copy).
    """
    height, width, channels = check_geometry(msg)
    flat = np.frombuffer(msg.data, dtype=np.uint8)
    rows = flat.reshape(height, int(msg.step))[:, :width * channels]
    if channels == 1:
        return rows
    return rows.reshape(height, width, channels)


def array_to_rgb(array, encoding):
    """Convert a decoded array in ``encoding`` to H×W×3 uint8 RGB."""
    if array.ndim == 2:
        return cv2.cvtColor(np.ascontiguousarray(array), cv2.COLOR_GRAY2RGB)
    if encoding == 'bgr8':
        return cv2.cvtColor(array, cv2.COLOR_BGR2RGB)
    if encoding == 'bgra8':
        return cv2.cvtColor(array, cv2.COLOR_BGRA2RGB)
    if encoding == 'rgba8':
        return cv2.cvtColor(array, cv2.COLOR_RGBA2RGB)
    return np.ascontiguousarray(array)


def raw_to_rgb(msg):
    """Return an Image-like object's pixels as H×W×3 uint8 RGB."""
    return array_to_rgb(raw_to_array(msg), msg.encoding)


def raw_to_labels(msg, log=None):
    """Read a label map (mono8/8UC1 ids or 0/255, or a palette-colour mask).

    Seams that are not objects are snapped as :func:`vos_ros.core.labels.labels_from_array`
    does; ``log`` receives its one line.
    """
    array = raw_to_array(msg)
    if msg.encoding.startswith('bgr'):
        array = array[:, :, 2::-1]
    try:
        return labels_from_array(np.ascontiguousarray(array), 'label map message', log)
    except ValueError as error:
        raise ImageDecodeError(f'bad label map: {error}') from error


#: JPEG start-of-image and end-of-image markers (ITU-T T.81, B.1.1.3).
_JPEG_SOI = b'\xff\xd8'
_JPEG_EOI = b'\xff\xd9'
#: Bytes after the end-of-image marker still taken as a whole JPEG (some encoders pad).
_JPEG_TAIL = 64


def jpeg_truncated(data):
    """Return True for a JPEG stream cut short: no end-of-image marker at its end.

    ``data``: the bytes of a compressed image (bytes, bytearray, memoryview or a uint8
    array); a stream that is not JPEG (no start-of-image
    marker) is never called truncated. OpenCV's decoder fills the missing rows of a cut JPEG
    with grey and returns an image without an error (libjpeg only prints a warning), so a
    frame cut on a lossy link would be segmented as if the scene had turned grey. Inside the
    entropy-coded data a 0xFF byte is always stuffed or a restart marker, so ``FF D9`` near the
    end is the end-of-image marker; up to 64 bytes of padding after it are allowed.
    """
    # only the first and last bytes are read: no copy of a whole frame on the hot path
    if bytes(data[:len(_JPEG_SOI)]) != _JPEG_SOI:
        return False
    return _JPEG_EOI not in bytes(data[-(_JPEG_TAIL + len(_JPEG_EOI)):])


def compressed_to_rgb(data, image_format=''):
    """Decode a compressed buffer (jpeg, png, ...) to H×W×3 uint8 RGB.

    Raises ImageDecodeError (kind ``decode``) for an empty buffer, one OpenCV cannot decode,
    and a JPEG cut short (``jpeg_truncated``), which OpenCV would return half grey.
    """
    buffer = np.frombuffer(bytes(data) if not isinstance(data, np.ndarray) else data,
                           dtype=np.uint8)
    if buffer.size == 0:
        raise ImageDecodeError('empty compressed image', 'decode')
    if jpeg_truncated(buffer):
        raise ImageDecodeError(f'truncated JPEG (format {image_format!r}, {buffer.size} bytes, '
                               'no end-of-image marker): the frame was cut short', 'decode')
    image = cv2.imdecode(buffer, cv2.IMREAD_COLOR)
    if image is None or image.size == 0:
        raise ImageDecodeError(f'cannot decode compressed image (format {image_format!r}, '
                               f'{buffer.size} bytes)', 'decode')
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
