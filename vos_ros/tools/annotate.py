"""``annotate``: make the first-frame label map from a box, clicks or a mask file; send it live.

Sources (one of): ``--image FILE``; ``--video FILE`` (``--frame N``); ``--sequence DIR`` (a
folder of frames such as ``JPEGImages/480p/bear``, a flat sequence folder holding
``JPEGImages/``, or a DAVIS dataset root with ``--sequence-name NAME``; ``--frame N``, default
the first frame); ``--bag DIR --topic T`` (``--frame N``-th message of sensor_msgs/Image or
CompressedImage; ``--topic`` may be left out when the bag has one image topic); ``--topic T``
alone grabs one frame live from a running camera.

Hints (headless): ``--box x0,y0,x1,y1`` (repeatable; ``--object ID`` per box, default 1, 2, …),
``--points x,y,label …`` (label 1 object, 0 background; with one box each click refines the
box's mask in turn, with none they alone mark object ``--object`` or 1), ``--from-mask PNG``
(any 0/255, gray-id, palette or colour mask, converted to the palette format). Boxes and clicks
go to the learned box model shipped in the package (default ``--method auto``: GrabCut when
the shipped model cannot load, saying so once; a ``--model`` named that cannot be used is an
error; ``--method grabcut`` for GrabCut only).
With a source and no hint the annotation window opens (needs a display). The result is a
palette PNG of the frame's size (``--out``, default AnnotatedFrame.png); ``--publish`` also
sends it to the node's ``~/annotation`` topic so tracking restarts on it, and with hints but no
``--out`` only sends it (no file is written). The window always saves to ``--out`` (key P
saves, then publishes).
"""

import argparse
import os
import sys
import time

import cv2

from vos_ros.core.annotation import check_box
from vos_ros.core.annotation import labels_from_masks
from vos_ros.core.davis import Dataset
from vos_ros.core.davis import list_images
from vos_ros.core.davis import read_image
from vos_ros.core.errors import DataError
from vos_ros.core.errors import ModelError
from vos_ros.core.errors import VosError
from vos_ros.core.interactive import DEFAULT_METHOD
from vos_ros.core.interactive import METHODS
from vos_ros.core.interactive import PromptSegmenter
from vos_ros.core.labels import object_ids
from vos_ros.core.labels import read_labels
from vos_ros.core.labels import write_labels
from vos_ros.core.model_io import read_metadata
from vos_ros.tools.cli import finite_numbers
from vos_ros.tools.cli import ToolParser

DEFAULT_OUT = 'AnnotatedFrame.png'
DEFAULT_ANNOTATION_TOPIC = '/vos_node/annotation'
COMPRESSED_TYPE = 'sensor_msgs/msg/CompressedImage'
IMAGE_TYPE = 'sensor_msgs/msg/Image'


class FrameSource:
    """Frames to annotate: ``len()`` (None when unknown) and ``read(index) -> RGB``."""

    name = ''
    frame_id = ''

    def __len__(self):
        return 1

    def read(self, index):
        """Return frame ``index`` as H×W×3 uint8 RGB; DataError if it does not exist."""
        raise NotImplementedError

    def close(self):
        """Release files and handles."""


class ImageSource(FrameSource):
    """One image file."""

    def __init__(self, path):
        self.name = path
        self._image = read_image(path)

    def read(self, index):
        if index != 0:
            raise DataError(f'{self.name} is a single image; frame {index} does not exist')
        return self._image


class ArraySource(FrameSource):
    """Frames already in memory (a grabbed live frame)."""

    def __init__(self, frames, name, frame_id=''):
        self._frames = list(frames)
        self.name = name
        self.frame_id = frame_id

    def __len__(self):
        return len(self._frames)

    def read(self, index):
        if not 0 <= index < len(self._frames):
            raise DataError(f'{self.name}: frame {index} does not exist')
        return self._frames[index]


class FileListSource(FrameSource):
    """A folder of frame files (a sequence)."""

    def __init__(self, paths, name):
        if not paths:
            raise DataError(f'no image files in {name}')
        self._paths = list(paths)
        self.name = name

    def __len__(self):
        return len(self._paths)

    def read(self, index):
        if not 0 <= index < len(self._paths):
            raise DataError(f'{self.name} has {len(self._paths)} frames; frame {index} does '
                            'not exist')
        return read_image(self._paths[index])


class VideoSource(FrameSource):
    """A video file read with OpenCV."""

    def __init__(self, path):
        if not os.path.isfile(path):
            raise DataError(f'video file not found: {path}')
        self.name = path
        self._capture = cv2.VideoCapture(path)
        if not self._capture.isOpened():
            raise DataError(f'cannot open video {path} (corrupt or unsupported format)')
        count = int(self._capture.get(cv2.CAP_PROP_FRAME_COUNT))
        self._count = count if count > 0 else None
        self._next = 0

    def __len__(self):
        return self._count or 1

    def read(self, index):
        if index < 0 or (self._count is not None and index >= self._count):
            raise DataError(f'{self.name} has {self._count} frames; frame {index} does not '
                            'exist')
        if index != self._next:
            self._capture.set(cv2.CAP_PROP_POS_FRAMES, index)
        ok, frame = self._capture.read()
        if not ok or frame is None:
            raise DataError(f'cannot read frame {index} of {self.name}')
        self._next = index + 1
        return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)

    def close(self):
        self._capture.release()


class BagSource(FrameSource):
    """The image messages of one topic of a rosbag2 (read on demand, by log time)."""

    def __init__(self, path, topic):
        from vos_ros.tools.bagio import BagReader
        from vos_ros.tools.bagio import GT_TOPIC

        self._bag = BagReader(path)
        images = sorted(name for name, (kind, _) in self._bag.topics().items()
                        if kind in (IMAGE_TYPE, COMPRESSED_TYPE))
        if topic is None:
            # The usual camera bag has one image topic: no need to name it. Label maps on
            # vos_make_bag's ground-truth topic are not a camera's images.
            cameras = [name for name in images if name != GT_TOPIC]
            if len(cameras) == 1:
                images = cameras
            if len(images) != 1:
                self._bag.close()
                raise ValueError(f'--bag needs --topic: bag {path} has '
                                 f'{len(images)} image topics ({", ".join(images) or "none"})')
            topic = images[0]
        self.name = f'{self._bag.path}:{topic}'
        self.topic = topic
        msgtype = self._bag.msgtype(topic)
        if msgtype is None:
            self._bag.close()
            raise DataError(f'bag {path} has no topic {topic}; image topics: '
                            f'{", ".join(images) or "none"}')
        if msgtype not in (IMAGE_TYPE, COMPRESSED_TYPE):
            self._bag.close()
            raise DataError(f'topic {topic} holds {msgtype}, not sensor_msgs/Image or '
                            'CompressedImage')
        self._msgtype = msgtype
        self._count = self._bag.message_count(topic)
        if self._count == 0:
            self._bag.close()
            raise DataError(f'topic {topic} of bag {path} has no messages')

    def __len__(self):
        return self._count

    def read(self, index):
        from vos_ros.tools.bagio import deserialize

        if not 0 <= index < self._count:
            raise DataError(f'{self.name} has {self._count} messages; frame {index} does not '
                            'exist')
        for position, (_, _, data) in enumerate(self._bag.raw_messages([self.topic])):
            if position == index:
                msg = deserialize(data, self._msgtype)
                self.frame_id = str(msg.header.frame_id)
                return rgb_from_message(msg, self._msgtype)
        raise DataError(f'{self.name}: message {index} could not be read')

    def close(self):
        self._bag.close()


def rgb_from_message(msg, msgtype):
    """Decode a rosbags or rclpy Image / CompressedImage message to RGB."""
    if msgtype == COMPRESSED_TYPE:
        from vos_ros.core.image_codec import compressed_to_rgb

        # ImageDecodeError is a DataError: the caller's one-line error path applies
        return compressed_to_rgb(msg.data, msg.format)
    from vos_ros.tools.bagio import image_rgb

    return image_rgb(msg)


def ensure_local_dds():
    """Keep DDS discovery on this machine unless the user chose a range (before rclpy)."""
    os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')


def grab_topic_frame(topic, timeout):
    """Return ``(rgb, frame_id)`` of the next image on a live topic; DataError on timeout."""
    ensure_local_dds()
    import rclpy
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import CompressedImage
    from sensor_msgs.msg import Image

    rclpy.init()
    try:
        node = rclpy.create_node('annotate_grab')
        received = []
        compressed = topic.rstrip('/').endswith('/compressed')
        # Best effort matches both reliable and best-effort camera publishers.
        node.create_subscription(CompressedImage if compressed else Image, topic,
                                 received.append, qos_profile_sensor_data)
        deadline = time.monotonic() + timeout
        while not received and time.monotonic() < deadline:
            rclpy.spin_once(node, timeout_sec=0.1)
        if not received:
            raise DataError(f'no image arrived on {topic} within {timeout:g} s (is the camera '
                            'running, in the same ROS_DOMAIN_ID, and of type '
                            f'sensor_msgs/{"CompressedImage" if compressed else "Image"}?)')
        msg = received[0]
        if compressed:
            rgb = rgb_from_message(msg, COMPRESSED_TYPE)
        else:
            from vos_ros.ros.conversions import image_msg_to_rgb

            rgb = image_msg_to_rgb(msg)
        return rgb, msg.header.frame_id
    finally:
        rclpy.try_shutdown()


def open_source(args):
    """Return the FrameSource the arguments name, or None when there is none."""
    given = [flag for flag, value in (('--image', args.image), ('--video', args.video),
                                      ('--sequence', args.sequence), ('--bag', args.bag))
             if value]
    if len(given) > 1:
        raise ValueError(f'give one source, not {" and ".join(given)}')
    if args.bag:
        return BagSource(args.bag, args.topic or None)
    if args.image:
        return ImageSource(args.image)
    if args.video:
        return VideoSource(args.video)
    if args.sequence:
        return sequence_source(args.sequence, args.sequence_name)
    if args.topic:
        rgb, frame_id = grab_topic_frame(args.topic, args.timeout)
        return ArraySource([rgb], args.topic, frame_id)
    return None


def sequence_source(directory, name=None):
    """A folder of frames, a flat sequence folder, or a DAVIS root plus a sequence name."""
    if not os.path.isdir(directory):
        raise DataError(f'sequence folder not found: {directory}')
    frames = list_images(directory)
    if frames and not name:
        return FileListSource(frames, directory)
    dataset = Dataset(directory)
    names = dataset.sequence_names()
    if name is None:
        if len(names) != 1:
            raise ValueError(f'{directory} holds {len(names)} sequences; choose one with '
                             f'--sequence-name ({", ".join(names[:10])}'
                             f'{", …" if len(names) > 10 else ""})')
        name = names[0]
    sequence = dataset.sequence(name)
    return FileListSource(sequence.frame_paths, f'{directory}:{name}')


def parse_numbers(text, count, what):
    """Parse ``count`` finite comma-separated numbers; ValueError names the flag's format."""
    try:
        return finite_numbers(text, count)
    except ValueError as error:
        raise ValueError(f'{what}: {error}') from None


#: A box whose sides reach this close to every image border (fraction of the size) covers it.
WHOLE_IMAGE_MARGIN = 0.02


def covers_image(box, width, height):
    """True if a clipped box reaches (nearly) every border: it tells nothing of the object."""
    x0, y0, x1, y1 = box
    margin_x, margin_y = WHOLE_IMAGE_MARGIN * width, WHOLE_IMAGE_MARGIN * height
    return (x0 <= margin_x and y0 <= margin_y and x1 >= width - 1 - margin_x
            and y1 >= height - 1 - margin_y)


def make_segmenter(args):
    """The box/click segmenter ``--method`` and ``--model`` ask for (loaded on first use).

    ``auto`` with a ``--model`` named runs as ``model``: the user asked for that file, so one
    that cannot load is an error, not a quiet GrabCut mask; ``auto`` falls back to GrabCut for
    the shipped model only.
    """
    method, model = getattr(args, 'method', None), getattr(args, 'model', None)
    if model and method in (None, 'auto'):
        method = 'model'
    return PromptSegmenter(method, model,
                           log=lambda line: print(f'annotate: note: {line}', file=sys.stderr))


def check_model(args):
    """Refuse a ``--model`` that is no box model file (missing, a checkpoint, another kind).

    Its metadata only (no torch): said before a camera, a bag or the window is waited for,
    in the words the segmenter uses for a model that fails to load. Nothing to check with
    ``--method grabcut`` (no model runs).
    """
    if not args.model:
        return
    if args.method == 'grabcut':
        # no model runs: said, so that a user who named one does not think it did
        print(f'annotate: note: --model {args.model} is not used with --method grabcut',
              file=sys.stderr)
        return
    try:
        read_metadata(args.model, kinds=('box',))
    except ModelError as error:
        raise ModelError(f'the box model cannot be used: {error}') from None


def labels_from_hints(image, args, segmenter=None):
    """Build the label map the hint flags describe (ValueError / VosError on bad hints)."""
    segmenter = make_segmenter(args) if segmenter is None else segmenter
    height, width = image.shape[:2]
    boxes = [check_box(parse_numbers(text, 4, '--box x0,y0,x1,y1'), width, height)
             for text in args.box or []]
    for text, box in zip(args.box or [], boxes):
        if covers_image(box, width, height):
            print(f'annotate: warning: --box {text} covers the whole {width}x{height} image: '
                  'the object is then whatever differs from the image border; draw the box '
                  'around the object', file=sys.stderr)
    points = [parse_numbers(text, 3, '--points x,y,label') for text in args.points or []]
    ids = list(args.object or [])
    wanted = max(len(boxes), 1)
    if ids and len(ids) != wanted:
        raise ValueError(f'{len(ids)} --object ids for {wanted} object(s); give one per --box')
    if not ids:
        ids = list(range(1, wanted + 1))
    for object_id in ids:
        if not 1 <= object_id <= 255:
            raise ValueError(f'--object {object_id}: object ids are 1..255')
    if len(set(ids)) != len(ids):
        raise ValueError(f'--object ids must differ, got {ids}')
    masks = []
    if not boxes:
        masks.append((ids[0], segmenter.clicks(image, points)))
    for index, (object_id, box) in enumerate(zip(ids, boxes)):
        if len(boxes) == 1:
            mine = points
        else:
            # With several boxes a click belongs to the box it falls in.
            mine = [p for p in points
                    if box[0] <= p[0] <= box[2] and box[1] <= p[1] <= box[3]]
        if mine:
            # the model refines the box's mask one click at a time, GrabCut takes them at once
            masks.append((object_id, segmenter.clicks(image, mine, box=box)))
        else:
            masks.append((object_id, segmenter.box(image, box)))
    for object_id, mask in masks:
        if not mask.any():
            raise DataError(f'object {object_id}: the hints gave an empty mask; draw a larger '
                            'box or add positive clicks')
    labels = labels_from_masks(image.shape, masks)
    for object_id, mask in masks:
        # Overlaps go to the smaller mask (to the later one on a tie): an object whose every
        # pixel went to others would vanish from the file without a word.
        if not (labels[mask] == object_id).any():
            covering = object_ids(labels[mask])
            others = (f'object {covering[0]} covers' if len(covering) == 1 else
                      f'objects {", ".join(map(str, covering))} cover')
            raise DataError(f'object {object_id} would have no pixels: {others} all of its mask '
                            '(where masks overlap the smaller one is kept); give each object '
                            'a box of its own')
    return labels


def labels_from_mask_file(path, image):
    """Read any mask file as a label map; it must match the frame's size when there is one."""
    labels = read_labels(path, log=lambda line: print(f'annotate: note: {line}',
                                                      file=sys.stderr))
    if image is not None and labels.shape != image.shape[:2]:
        raise DataError(f'mask {path} is {labels.shape[1]}x{labels.shape[0]} but the frame is '
                        f'{image.shape[1]}x{image.shape[0]}')
    if not labels.any():
        raise DataError(f'mask {path} holds no object (all background)')
    return labels


def check_out(path, force, flag='--out', expected='a .png file path', hint=''):
    """Refuse a folder, and an existing file without --force (ValueError).

    ``hint`` replaces the advice given for an existing file (the default ``--out``'s).
    """
    if os.path.isdir(path):
        raise ValueError(f'{flag} {path} is a folder, expected {expected}')
    if os.path.exists(path) and not force:
        raise ValueError(f'{path} exists; {hint or "pass --force to overwrite it"}')


def resolve_out(args, has_hint):
    """Set ``args.out`` to DEFAULT_OUT where it was not given and a file is wanted.

    Return True when the default was taken. Boxes, clicks or a mask file sent with
    ``--publish`` and no ``--out`` need no file: ``args.out`` stays None. The window always
    saves to a file (its key P saves, then publishes).
    """
    if args.out is not None or (args.publish and has_hint):
        return False
    args.out = DEFAULT_OUT
    return True


def check_outputs(args, default_out=False, window=False):
    """Check ``--out`` and ``--save-frame`` before any work: a bad name then writes nothing.

    ``default_out``: ``args.out`` is DEFAULT_OUT, not named by the user: an existing file
    there is refused with the ways around it (``window``: for the annotation window).
    """
    if args.out is not None:
        # write_labels writes a palette PNG whatever the name: PIL cannot store one as JPEG
        # and knows no format for a name without extension.
        if not os.path.isdir(args.out) and not args.out.lower().endswith('.png'):
            raise ValueError(f'--out must be a .png file (masks are palette PNGs), got '
                             f'{args.out}')
        hint = ''
        if default_out:
            # The user did not name this file: say that it is the default, and what to do.
            hint = ('it is the default --out' + (', where the window saves' if window else '')
                    + '; pass --out FILE to write another file, --force to overwrite it'
                    + ('' if window else ', or --publish without --out to send the mask '
                       'to the node without writing a file'))
        check_out(args.out, args.force, hint=hint)
    if args.save_frame:
        # imwrite picks its encoder by the name: asked here, a bad one stops before the mask
        if not os.path.isdir(args.save_frame) and not cv2.haveImageWriter(args.save_frame):
            extension = os.path.splitext(args.save_frame)[1]
            raise ValueError(f'--save-frame {args.save_frame}: OpenCV has no writer for '
                             f'{repr(extension) if extension else "a name without extension"}'
                             '; use .png or .jpg')
        check_out(args.save_frame, args.force, '--save-frame', 'an image file path')


def save_frame(path, image):
    """Write the annotated RGB frame (parent folders created, as for the mask)."""
    directory = os.path.dirname(path)
    if directory:
        os.makedirs(directory, exist_ok=True)
    if not cv2.imwrite(path, cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):
        raise DataError(f'cannot write {path}')


def save_labels(path, labels, force):
    """Write the palette PNG (the overwrite check first)."""
    check_out(path, force)
    write_labels(path, labels)


def publish_labels(labels, topic=DEFAULT_ANNOTATION_TOPIC, timeout=5.0, frame_id=''):
    """Send a label map (mono8 Image) to the node's annotation topic and wait for delivery.

    VosError when no subscriber appears within ``timeout`` seconds (no node listens).
    """
    ensure_local_dds()
    import rclpy
    from rclpy.qos import DurabilityPolicy
    from rclpy.qos import QoSProfile
    from rclpy.qos import ReliabilityPolicy

    from vos_ros.ros.conversions import labels_to_msg

    rclpy.init()
    try:
        node = rclpy.create_node('annotate_publisher')
        # Reliable + transient local matches volatile and transient-local readers alike.
        qos = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)
        publisher = node.create_publisher(_image_type(), topic, qos)
        deadline = time.monotonic() + timeout
        while publisher.get_subscription_count() == 0:
            if time.monotonic() > deadline:
                raise VosError(f'no node listens on {topic} (waited {timeout:g} s): start '
                               'vos_node first, in the same ROS_DOMAIN_ID, or pass '
                               '--annotation-topic')
            rclpy.spin_once(node, timeout_sec=0.05)
        # Discovery shows the reader a moment before the writer has matched it.
        time.sleep(0.3)
        msg = labels_to_msg(labels)
        msg.header.stamp = node.get_clock().now().to_msg()
        msg.header.frame_id = frame_id or ''
        publisher.publish(msg)
        if not publisher.wait_for_all_acked(
                rclpy.duration.Duration(seconds=max(timeout, 1.0))):
            raise VosError(f'the node on {topic} did not acknowledge the mask within '
                           f'{timeout:g} s')
        return publisher.get_subscription_count()
    finally:
        rclpy.try_shutdown()


def _image_type():
    from sensor_msgs.msg import Image

    return Image


def build_parser():
    """Return the argument parser of ``annotate``."""
    parser = ToolParser(
        prog='annotate', description=__doc__.split('\n\n')[0].strip('`'),
        epilog=__doc__.split('\n\n', 1)[1],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    source = parser.add_argument_group('source (one of)')
    source.add_argument('--image', help='image file')
    source.add_argument('--video', help='video file (with --frame)')
    source.add_argument('--sequence', metavar='DIR',
                        help='folder of frames, flat sequence folder or DAVIS dataset root')
    source.add_argument('--sequence-name', metavar='NAME',
                        help='sequence inside a DAVIS dataset root given to --sequence')
    source.add_argument('--bag', help='rosbag2 folder (with --topic unless it has one image '
                        'topic)')
    source.add_argument('--topic', help='image topic: in the bag, or grabbed live without --bag')
    source.add_argument('--frame', type=int, default=0,
                        help='frame (video, sequence) or message (bag) index')
    hints = parser.add_argument_group('hints (headless; none opens the window)')
    hints.add_argument('--box', action='append', metavar='X0,Y0,X1,Y1',
                       help='object box in pixels, inclusive (may start outside the image, '
                       'e.g. -20,10,90,90); repeat for more objects')
    hints.add_argument('--object', action='append', type=int, metavar='ID',
                       help='object id of each --box, in order (default 1, 2, …)')
    hints.add_argument('--points', nargs='+', metavar='X,Y,LABEL',
                       help='clicks: label 1 on the object, 0 on the background')
    hints.add_argument('--from-mask', metavar='PNG',
                       help='convert an existing mask (0/255, ids, palette, colours)')
    hints.add_argument('--method', choices=METHODS, default=DEFAULT_METHOD,
                       help='box/click segmentation: model = the learned box model, auto = '
                       'the model when its file loads (OpenCV runs its ONNX copy; torch '
                       'otherwise), else GrabCut (said once; a --model given must load), '
                       'grabcut = GrabCut only')
    hints.add_argument('--model', metavar='PT',
                       help='box model file (default: the one shipped in vos_ros/data); one '
                       'that cannot be used is an error')
    output = parser.add_argument_group('output')
    output.add_argument('--out', help=f'palette PNG to write (default: {DEFAULT_OUT}; none '
                        'when --publish sends a box, click or mask file result)')
    output.add_argument('--force', action='store_true', help='overwrite --out if it exists')
    output.add_argument('--save-frame', metavar='FILE',
                        help='also write the annotated frame (PNG/JPEG) here')
    output.add_argument('--publish', action='store_true',
                        help='send the mask to the running node (label-map Image)')
    output.add_argument('--annotation-topic', default=DEFAULT_ANNOTATION_TOPIC,
                        help='topic of the node annotation subscriber')
    output.add_argument('--timeout', type=float, default=5.0,
                        help='seconds to wait for a live frame or for the node to listen')
    return parser


def main(argv=None):
    """Run ``annotate``; return the exit code (0 ok, 1 data or ROS problem, 2 bad arguments)."""
    # argparse exits by itself for --help (0) and for bad arguments (2), like every other tool.
    args = build_parser().parse_args(argv)
    source = None
    try:
        if args.timeout <= 0:
            raise ValueError('--timeout must be positive')
        has_hint = bool(args.box or args.points or args.from_mask)
        if args.from_mask and (args.box or args.points):
            raise ValueError('--from-mask cannot be combined with --box or --points')
        if args.object and not (args.box or args.points):
            raise ValueError('--object needs --box or --points')
        # Numbers first: a typo in a box should not wait for a camera or a bag.
        for text in args.box or []:
            parse_numbers(text, 4, '--box x0,y0,x1,y1')
        for text in args.points or []:
            parse_numbers(text, 3, '--points x,y,label')
        check_model(args)
        default_out = resolve_out(args, has_hint)
        check_outputs(args, default_out, window=not has_hint)
        source = open_source(args)
        if source is None and not args.from_mask:
            raise ValueError('give a source (--image, --video, --sequence, --bag with --topic, '
                             'or --topic for a live frame) or --from-mask; see --help')
        if not has_hint:
            from vos_ros.tools.annotate_window import run_window

            return run_window(source, args)
        image = source.read(args.frame) if source is not None else None
        if args.from_mask:
            labels = labels_from_mask_file(args.from_mask, image)
        else:
            labels = labels_from_hints(image, args)
        if args.out is not None:
            save_labels(args.out, labels, args.force)
        if args.save_frame and image is not None:
            save_frame(args.save_frame, image)
        area = {i: int((labels == i).sum()) for i in object_ids(labels)}
        summary = (f'{labels.shape[1]}x{labels.shape[0]}, objects '
                   + ', '.join(f'{i}: {n} px' for i, n in area.items()))
        if args.out is not None:
            print(f'wrote {args.out} ({summary})')
        else:
            print(f'mask {summary} (no --out: no file written)')
        if args.publish:
            try:
                publish_labels(labels, args.annotation_topic, args.timeout,
                               source.frame_id if source is not None else '')
            except VosError as error:
                kept = (f'{args.out} was written all the same' if args.out is not None else
                        'no file was written: pass --out FILE to keep the mask')
                raise VosError(f'{error}; {kept}') from None
            print(f'published to {args.annotation_topic}')
        return 0
    except (VosError, ValueError) as error:
        print(f'annotate: error: {error}', file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        if source is not None:
            source.close()


if __name__ == '__main__':
    sys.exit(main())
