"""vos_make_bag: turn a DAVIS sequence, an image folder or a video into a rosbag2.

The bag holds ``/image`` (sensor_msgs/Image, rgb8) at ``--fps`` Hz and, when masks exist,
``/ground_truth`` (sensor_msgs/Image, mono8 label map: 0 background, 1..N objects; DAVIS-2016
0/255 masks become object 1) with the same stamps. Header stamp and bag (log) time are equal:
``--start-time`` plus frame index / fps.

Sources:

* a DAVIS sequence folder ``…/JPEGImages/480p/<seq>``: masks are read from the matching
  ``…/Annotations/480p/<seq>`` when it exists;
* a DAVIS dataset root plus ``--sequence NAME`` (also a flat ``<seq>/JPEGImages`` folder);
* any image folder (masks from ``--masks DIR``, matched by file name stem);
* a video file (masks from ``--masks DIR``, matched by frame number: ``00012.png`` = frame 12).

Only frames with a mask get a ``/ground_truth`` message.

The bag is written into a hidden temporary folder next to OUT and moved to OUT once complete:
a failed or interrupted run leaves no partial bag and an existing OUT as it was.
"""

import argparse
import contextlib
import logging
import os
import shutil
import sys
import tempfile
import time

import cv2

from vos_ros.core.davis import Dataset
from vos_ros.core.davis import fit_labels
from vos_ros.core.davis import list_images
from vos_ros.core.davis import read_image
from vos_ros.core.errors import DataError
from vos_ros.core.errors import VosError
from vos_ros.core.labels import read_labels
from vos_ros.tools import bagio
from vos_ros.tools.cli import int_in
from vos_ros.tools.cli import sigterm_raises
from vos_ros.tools.cli import ToolParser

DEFAULT_FPS = 10.0
_LOGGER = logging.getLogger('vos_make_bag')


def _mask_dir_for(image_dir):
    """Return the DAVIS ``Annotations`` twin of a ``JPEGImages`` folder, or None."""
    parts = os.path.abspath(image_dir).split(os.sep)
    if 'JPEGImages' not in parts:
        return None
    index = len(parts) - 1 - parts[::-1].index('JPEGImages')
    parts[index] = 'Annotations'
    return os.sep.join(parts)


def _masks_by_stem(mask_dir):
    """Return ``{stem: path}`` of the PNG masks in ``mask_dir`` (empty if it is missing)."""
    if not mask_dir or not os.path.isdir(mask_dir):
        return {}
    return {os.path.splitext(n)[0]: os.path.join(mask_dir, n)
            for n in sorted(os.listdir(mask_dir)) if n.lower().endswith('.png')}


class FrameSource:
    """Frames (RGB) and optional mask paths of one input, in order."""

    def __init__(self, frames, count, masks, description, fps=None):
        self.frames = frames            # iterator of (key, rgb)
        self.count = count              # number of frames (None if unknown)
        self.masks = masks              # {key: mask path}
        self.description = description
        self.fps = fps                  # native rate of a video, else None


def _image_folder_source(image_dir, mask_dir, description):
    paths = list_images(image_dir)
    if not paths:
        raise VosError(f'no images (.jpg, .png, …) in {image_dir}')
    stems = [os.path.splitext(os.path.basename(p))[0] for p in paths]
    masks = {stem: path for stem, path in _masks_by_stem(mask_dir).items() if stem in stems}
    frames = ((stem, read_image(path)) for stem, path in zip(stems, paths))
    return FrameSource(frames, len(paths), masks, description)


def _video_source(path, mask_dir):
    capture = cv2.VideoCapture(path)
    if not capture.isOpened():
        raise VosError(f'cannot open video {path} (not a video or unsupported codec)')
    count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) or None
    fps = capture.get(cv2.CAP_PROP_FPS) or None
    masks = {}
    for stem, mask_path in _masks_by_stem(mask_dir).items():
        if stem.isdigit():
            masks[int(stem)] = mask_path

    def frames():
        index = 0
        try:
            while True:
                ok, bgr = capture.read()
                if not ok:
                    return
                yield index, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                index += 1
        finally:
            capture.release()

    return FrameSource(frames(), count, masks, f'video {path}', fps=fps)


def open_source(source, sequence=None, masks=None):
    """Return a FrameSource for a sequence folder, dataset root (+ sequence), folder or video."""
    source = os.fspath(source)
    if masks is not None and not os.path.isdir(masks):
        # a mistyped --masks would otherwise give a bag without ground truth and exit 0
        if os.path.exists(masks):
            raise VosError(f'--masks {masks} is not a folder')
        raise VosError(f'mask folder not found: {masks}')
    if os.path.isfile(source):
        if sequence:
            raise ValueError('--sequence applies to a DAVIS dataset root, not to a video file')
        return _video_source(source, masks)
    if not os.path.isdir(source):
        raise VosError(f'source not found: {source}')
    if sequence or (not list_images(source)
                    and os.path.isdir(os.path.join(source, 'JPEGImages'))):
        dataset = Dataset(source)
        names = dataset.sequence_names()
        if not sequence:
            if len(names) != 1:
                raise ValueError(f'{source} is a DAVIS dataset with {len(names)} sequences; '
                                 f'choose one with --sequence (e.g. {", ".join(names[:5])})')
            sequence = names[0]
        seq = dataset.sequence(sequence)
        image_dir = os.path.dirname(seq.frame_paths[0])
        return _image_folder_source(image_dir, masks or seq.annotation_dir,
                                    f'DAVIS sequence {sequence}')
    mask_dir = masks or _mask_dir_for(source)
    return _image_folder_source(source, mask_dir, f'image folder {source}')


@contextlib.contextmanager
def staged_bag(out, overwrite=False):
    """Yield the path to write a bag folder at; it becomes ``out`` when the block succeeds.

    rosbags' Writer creates the bag folder itself and refuses an existing one, so the path
    lies inside a fresh hidden folder next to ``out`` (the same file system: the move is a
    rename) and has ``out``'s name, which rosbags gives the storage file. An existing ``out``
    is an error (DataError) unless ``overwrite``; it is replaced only once the new bag is
    complete. On an error or an interruption the temporary folder goes and ``out`` stays.
    """
    shown = os.fspath(out)
    path = os.path.abspath(shown)
    parent, name = os.path.split(path)
    if os.path.lexists(path) and not overwrite:
        raise DataError(f'output bag {shown} already exists (remove it or use --overwrite)')
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f'.{name}.', suffix='.partial', dir=parent)
    try:
        bag = os.path.join(staging, name)
        yield bag
        old = None
        if os.path.lexists(path):
            # moved aside, not deleted yet: should the rename below fail, it goes back
            old = os.path.join(staging, name + '.old')
            os.rename(path, old)
        try:
            os.rename(bag, path)
        except BaseException:
            if old is not None:
                os.rename(old, path)
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def make_bag(source, out, fps=DEFAULT_FPS, storage='mcap', image_topic='/image',
             gt_topic=bagio.GT_TOPIC, frame_id='camera', encoding='rgb8', start_time=None,
             max_frames=0, ground_truth=True, overwrite=False, progress=True):
    """Write ``source`` (a FrameSource) as a bag; return ``(images, ground_truth_count, size)``.

    The bag appears at ``out`` only once complete (see :func:`staged_bag`); a source without
    frames is a VosError and writes nothing.
    """
    from vos_ros.tools.cli import progress_bar

    if fps is None:
        fps = source.fps or DEFAULT_FPS
    if not fps > 0:
        raise ValueError(f'--fps must be > 0, got {fps}')
    if encoding not in ('rgb8', 'bgr8'):
        raise ValueError(f"--encoding must be 'rgb8' or 'bgr8', got {encoding!r}")
    if max_frames < 0:
        raise ValueError(f'--max-frames must be >= 0 (0 = all frames), got {max_frames}')
    start_ns = int(round((time.time() if start_time is None else start_time) * 1e9))
    period_ns = 1e9 / fps
    total = source.count
    if max_frames:
        total = min(total, max_frames) if total else max_frames
    size = None
    written_gt = 0
    notes = []  # the label reader's lines: said once, for all masks
    images = 0
    with staged_bag(out, overwrite) as staging:
        with bagio.BagWriter(staging, storage) as writer:
            writer.add_topic(image_topic)
            if ground_truth and source.masks:
                writer.add_topic(gt_topic)
            bar = progress_bar(total=total, unit='frame', desc='vos_make_bag', enabled=progress)
            try:
                for key, rgb in source.frames:
                    if max_frames and images >= max_frames:
                        break
                    stamp = start_ns + int(round(images * period_ns))
                    pixels = rgb if encoding == 'rgb8' else rgb[:, :, ::-1]
                    writer.write(image_topic, stamp,
                                 bagio.image_msg(pixels, stamp, frame_id, encoding))
                    size = (rgb.shape[1], rgb.shape[0])
                    if ground_truth and key in source.masks:
                        # the one rule of every tool: a mask a pixel narrower than its frame
                        # (some DAVIS-2017 files) is resized, one of another aspect ratio is
                        # another video's and stops the run (OUT untouched: staged)
                        labels = fit_labels(read_labels(source.masks[key], log=notes.append),
                                            rgb.shape[:2], source.masks[key], notes.append)
                        writer.write(gt_topic, stamp, bagio.image_msg(labels, stamp, frame_id))
                        written_gt += 1
                    images += 1
                    bar.update(1)
            finally:
                bar.close()
        if not images:
            # raised inside the block: an empty bag must not replace OUT
            raise VosError(f'{source.description} has no frames')
    if notes:
        more = f' (and {len(notes) - 1} more masks alike)' if len(notes) > 1 else ''
        _LOGGER.warning('%s%s', notes[0], more)
    return images, written_gt, size


def build_parser():
    """Return the argument parser of vos_make_bag."""
    parser = ToolParser(
        prog='vos_make_bag', description=__doc__.split('\n\n')[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        epilog='Examples: vos_make_bag DAVIS/JPEGImages/480p/blackswan blackswan_bag; '
               'vos_make_bag DAVIS --sequence judo judo_bag --storage sqlite3; '
               'vos_make_bag clip.mp4 clip_bag --fps 15')
    parser.add_argument('source', help='DAVIS sequence folder (…/JPEGImages/480p/<seq>), DAVIS '
                        'dataset root (with --sequence), image folder or video file')
    parser.add_argument('out', help='output rosbag2 folder (must not exist unless --overwrite; '
                        'replaced only once the new bag is complete)')
    parser.add_argument('--sequence', help='sequence name when SOURCE is a DAVIS dataset root')
    parser.add_argument('--masks', help='mask folder (PNG label maps or 0/255); default: the '
                        'DAVIS Annotations folder matching SOURCE, if any')
    parser.add_argument('--fps', type=float, default=None,
                        help=f'frame rate of the stamps (default {DEFAULT_FPS:g}; a video: '
                        'its own rate)')
    parser.add_argument('--storage', choices=bagio.STORAGES, default='mcap',
                        help='rosbag2 storage format')
    parser.add_argument('--image-topic', default='/image', help='topic of the images')
    parser.add_argument('--gt-topic', default=bagio.GT_TOPIC,
                        help='topic of the ground-truth label maps')
    parser.add_argument('--no-ground-truth', action='store_true',
                        help='do not write ground truth even if masks exist')
    parser.add_argument('--frame-id', default='camera', help='header frame_id')
    parser.add_argument('--encoding', choices=('rgb8', 'bgr8'), default='rgb8',
                        help='image encoding')
    parser.add_argument('--start-time', type=float, default=None,
                        help='stamp of the first frame in seconds since the epoch '
                        '(default: now)')
    parser.add_argument('--max-frames', type=int_in(0, meaning=' (0 = all frames)'), default=0,
                        help='stop after this many frames (0 = all)')
    parser.add_argument('--overwrite', action='store_true', help='replace an existing OUT')
    parser.add_argument('--quiet', action='store_true', help='no progress bar')
    return parser


def main(argv=None):
    """Run vos_make_bag; return the exit code."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format='%(name)s: %(levelname)s: %(message)s')
    try:
        # SIGTERM (kill, launch) unwinds like Ctrl-C: the partial bag is removed either way
        with sigterm_raises():
            source = open_source(args.source, args.sequence, args.masks)
            images, gt_count, size = make_bag(
                source, args.out, fps=args.fps, storage=args.storage,
                image_topic=args.image_topic, gt_topic=args.gt_topic, frame_id=args.frame_id,
                encoding=args.encoding, start_time=args.start_time, max_frames=args.max_frames,
                ground_truth=not args.no_ground_truth, overwrite=args.overwrite,
                progress=not args.quiet)
    except (VosError, ValueError, OSError) as error:
        print(f'vos_make_bag: error: {error}', file=sys.stderr)
        return 1  # a bad value or file found after parsing (argparse exits 2), as every tool
    except KeyboardInterrupt:
        print(f'vos_make_bag: interrupted; {args.out} left as it was', file=sys.stderr)
        return 130
    fps = args.fps or source.fps or DEFAULT_FPS
    print(f'{args.out}: {images} images {size[0]}x{size[1]} {args.encoding} on '
          f'{args.image_topic} at {fps:g} Hz'
          + (f', {gt_count} ground-truth label maps on {args.gt_topic}' if gt_count else
             ', no ground truth')
          + f' ({args.storage}) from {source.description}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
