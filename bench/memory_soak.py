"""Long-stream soak of a backend: memory frames and process RSS over thousands of frames.

Users of memory-based trackers report memory growing until the process dies; the ``memory``
backend keeps a bounded memory (first mask, keyframes, previous frame). This runs one session
over a looping synthetic clip and prints RSS and the number of memory frames every
``--every`` frames, then the growth between the first report after warm-up and the last.

    .venv/bin/python bench/memory_soak.py --frames 3000 --backend memory
"""

import argparse
import os
import sys
import time


def _rss_mb():
    with open('/proc/self/status', encoding='ascii') as handle:
        for line in handle:
            if line.startswith('VmRSS:'):
                return int(line.split()[1]) / 1024.0
    return float('nan')


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('--frames', type=int, default=3000, help='frames to run')
    parser.add_argument('--every', type=int, default=250, help='report every N frames')
    parser.add_argument('--backend', default='memory', help='backend name')
    parser.add_argument('--model', default=None, help='model file (backend default if unset)')
    parser.add_argument('--width', type=int, default=432, help='frame width')
    parser.add_argument('--height', type=int, default=240, help='frame height')
    args = parser.parse_args(argv)
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from vos_ros.core.session import Session
    from vos_ros.core.synthetic import make_clip

    clip = make_clip(num_frames=60, width=args.width, height=args.height, num_objects=2,
                     seed=3)
    options = {'model_path': args.model} if args.model else {}
    session = Session(args.backend, **options)
    backend = session.backend
    rows = []
    tic = time.perf_counter()
    for index in range(args.frames):
        frame = clip.frames[index % len(clip.frames)]
        session.step(frame, clip.first_mask if index == 0 else None)
        if (index + 1) % args.every == 0:
            rows.append((index + 1, _rss_mb(), getattr(backend, 'memory_frames', -1)))
            print(f'frame {index + 1:6d}  RSS {rows[-1][1]:8.1f} MB  memory frames '
                  f'{rows[-1][2]}  {(index + 1) / (time.perf_counter() - tic):5.1f} FPS',
                  flush=True)
    if len(rows) >= 2:
        first, last = rows[0], rows[-1]
        print(f'RSS growth from frame {first[0]} to {last[0]}: {last[1] - first[1]:+.1f} MB; '
              f'memory frames {first[2]} -> {last[2]}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
