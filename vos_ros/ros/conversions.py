"""sensor_msgs/Image and CompressedImage <-> numpy arrays, validated.

Every malformed message raises :class:`ConversionError` (a DataError) naming the problem, so
the node can log it and skip the frame; geometry is always checked here first. cv_bridge
converts the pixels when it is importable (the ROS image ships it); the numpy path is the
fallback and the reference (zero-copy for rgb8). Row padding (``step`` larger than
``width * channels``) is honoured, not rejected.
"""

import cv2
import numpy as np
from sensor_msgs.msg import CompressedImage
from sensor_msgs.msg import Image

from vos_ros.core import image_codec

try:  # cv_bridge is an apt package in ROS; pip installs have no wheel of it.
    from cv_bridge import CvBridge
    from cv_bridge import CvBridgeError
except ImportError:  # pragma: no cover - depends on the installation
    CvBridge = None
    CvBridgeError = None

#: Encodings accepted as camera input: name -> channel count.
ENCODINGS = image_codec.ENCODINGS

#: Encodings cv_bridge converts to rgb8 unambiguously (8UC1/8UC3 are generic: numpy path).
_BRIDGE_ENCODINGS = ('rgb8', 'bgr8', 'rgba8', 'bgra8', 'mono8')

#: A message cannot be turned into an image (``kind`` says which problem, for throttling).
ConversionError = image_codec.ImageDecodeError

_bridge = None


def use_cv_bridge():
    """Return True when cv_bridge is importable and used for pixel conversion."""
    return CvBridge is not None


def _get_bridge():
    global _bridge
    if _bridge is None:
        _bridge = CvBridge()
    return _bridge


#: Validate an Image message's geometry; return (height, width, channels).
check_image_msg = image_codec.check_geometry

#: Return the pixels of an Image message as H×W or H×W×C uint8, as encoded (a view).
image_msg_to_array = image_codec.raw_to_array


def image_msg_to_rgb(msg):
    """Return an Image message as H×W×3 uint8 RGB (the session's input format)."""
    height, width, channels = check_image_msg(msg)
    # cv_bridge only for unpadded images of at least 2x2: some releases ignore row padding
    # and squeeze 1-pixel dimensions away; the numpy path below handles both.
    if use_cv_bridge() and msg.encoding in _BRIDGE_ENCODINGS \
            and int(msg.step) == width * channels and min(height, width) > 1:
        try:
            rgb = _get_bridge().imgmsg_to_cv2(msg, desired_encoding='rgb8')
        except (CvBridgeError, TypeError, ValueError) as error:
            raise ConversionError(f'cv_bridge could not convert the image: {error}') from error
        return np.ascontiguousarray(rgb)
    return image_codec.raw_to_rgb(msg)


def compressed_msg_to_rgb(msg):
    """Decode a CompressedImage (jpeg, png, ...) to H×W×3 uint8 RGB."""
    return image_codec.compressed_to_rgb(msg.data, msg.format)


def array_to_image_msg(array, encoding, header=None):
    """Build an Image message from an H×W or H×W×C uint8 array in ``encoding``."""
    array = np.asarray(array)
    if encoding not in ENCODINGS:
        raise ValueError(f'unsupported encoding {encoding!r}; supported: {", ".join(ENCODINGS)}')
    if array.dtype != np.uint8:
        raise ValueError(f'array must be uint8, got {array.dtype}')
    channels = ENCODINGS[encoding]
    have = 1 if array.ndim == 2 else (array.shape[2] if array.ndim == 3 else -1)
    if have != channels:
        raise ValueError(f'{encoding} needs {channels} channel(s), array has shape {array.shape}')
    msg = Image()
    if header is not None:
        msg.header = header
    msg.height, msg.width = int(array.shape[0]), int(array.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = 0
    msg.step = int(array.shape[1]) * channels
    # Assigning bytes is a memcpy; assigning an ndarray goes element by element (~60x slower).
    msg.data = np.ascontiguousarray(array).tobytes()
    return msg


def labels_to_msg(labels, header=None):
    """Build a mono8 label-map Image (0 background, object ids 1..255)."""
    return array_to_image_msg(np.asarray(labels, dtype=np.uint8), 'mono8', header)


def msg_to_labels(msg, log=None):
    """Read a label map from an Image message (mono8/8UC1 ids or 0/255, or a colour mask).

    ``log`` receives the one line saying which seam pixels were snapped, if any.
    """
    if isinstance(msg, CompressedImage):
        raise ConversionError('label maps must be sensor_msgs/Image, not CompressedImage')
    return image_codec.raw_to_labels(msg, log)


def rgb_to_compressed_msg(rgb, image_format='jpeg', header=None, quality=90):
    """Encode an RGB array as a CompressedImage (``jpeg`` or ``png``)."""
    if image_format not in ('jpeg', 'png'):
        raise ValueError(f'unsupported compressed format {image_format!r}; use jpeg or png')
    bgr = cv2.cvtColor(np.asarray(rgb, dtype=np.uint8), cv2.COLOR_RGB2BGR)
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)] if image_format == 'jpeg' else []
    ok, encoded = cv2.imencode('.jpg' if image_format == 'jpeg' else '.png', bgr, params)
    if not ok:
        raise ValueError('could not encode the image')
    msg = CompressedImage()
    if header is not None:
        msg.header = header
    msg.format = image_format
    msg.data = encoded.tobytes()
    return msg
