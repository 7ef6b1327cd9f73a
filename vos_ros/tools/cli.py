"""What every console tool's command line shares: finite numbers, one-line errors, progress.

``ToolParser`` is ``argparse.ArgumentParser`` with three differences:

* ``type=float`` arguments refuse ``inf``, ``nan`` and numbers that overflow to them
  (``1e400``): a tool would otherwise sleep forever, loop forever or fail with a traceback;
* an error is one line naming the argument (``prog: error: argument --speed: ...``), not the
  usage block, and exits with code 2;
* a comma-separated list of numbers that starts with a minus (``--box -20,10,90,90``) is a
  value, not an unknown option, as users type it.
"""

import argparse
import contextlib
import functools
import math
import os
import re
import signal
import sys
import threading

#: Terminal control sequences (cursor moves) that tqdm writes between bars.
_CURSOR_MOVES = re.compile(r'\x1b\[[0-9;]*[A-Za-z]')
#: Seconds between two progress lines where stderr is not a terminal (a log file, a pipe).
LOG_PROGRESS_INTERVAL = 30.0

#: A token like -20,10,90,90 or -inf,3: a number list, which argparse would take for an option.
_NEGATIVE_LIST = re.compile(r'^-(?:[\d.]|inf|nan)[^,\s]*(?:,[^,\s]*)+$', re.IGNORECASE)


def finite_float(text):
    """Parse a finite float (argparse type); ArgumentTypeError says what is wrong."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f'expected a number, got {text!r}') from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f'must be a finite number, got {text!r}')
    return value


def finite_numbers(text, count=None):
    """Parse comma- (or space-) separated finite numbers; ValueError says what is wrong."""
    parts = [part for part in str(text).replace(' ', ',').split(',') if part]
    try:
        values = [float(part) for part in parts]
    except ValueError:
        raise ValueError(f'{text.strip()!r} is not a list of numbers') from None
    if count is not None and len(values) != count:
        raise ValueError(f'expected {count} comma-separated numbers, got {text.strip()!r}')
    if not all(math.isfinite(value) for value in values):
        raise ValueError(f'numbers must be finite, got {text.strip()!r}')
    return values


def int_in(low, high=None, meaning=''):
    """Return an argparse type: an integer in ``low..high`` (no upper bound when None).

    An out-of-range value is refused while parsing, before any work (a clip made, a node
    started, a file touched). ``meaning``: what a bound value means, as ' (0 = all)'.
    """
    def parse(text):
        try:
            value = int(text)
        except (TypeError, ValueError):
            raise argparse.ArgumentTypeError(f'expected an integer, got {text!r}') from None
        if value < low or (high is not None and value > high):
            bound = f'be >= {low}' if high is None else f'lie in {low}..{high}'
            raise argparse.ArgumentTypeError(f'must {bound}{meaning}, got {text!r}')
        return value

    return parse


def check_out_folder(path, option='--out'):
    """Raise ValueError if ``path``, an output folder to create or reuse, is a file.

    Checked before any work: ``os.makedirs`` would otherwise fail late with ``[Errno 17]
    File exists``, which names neither the option nor what is wrong.
    """
    if os.path.isfile(path):
        raise ValueError(f'{option} {path} is a file, expected a folder')


def protect_negative_lists(argv):
    """Return argv with number lists that start with '-' marked as values (a leading space)."""
    return [' ' + token if _NEGATIVE_LIST.match(token) else token for token in argv]


class HelpFormatter(argparse.RawDescriptionHelpFormatter,
                    argparse.ArgumentDefaultsHelpFormatter):
    """Defaults shown only where they say something; descriptions keep their line breaks."""

    def _get_help_string(self, action):
        text = action.help or ''
        # "(default: None)" says nothing, and a help text that names its default says it once
        default = action.default
        if default is None or default is False or default == argparse.SUPPRESS \
                or 'default' in text.lower():
            return text
        return super()._get_help_string(action)


def plain_text(docstring):
    """Return reStructuredText from a module docstring as a terminal shows it (no ``)."""
    return (docstring or '').replace('``', '').strip()


class ToolParser(argparse.ArgumentParser):
    """ArgumentParser with finite floats, one-line errors and negative number lists.

    Its help shows defaults only where they say something, and the description and epilog
    without reStructuredText quoting.
    """

    def __init__(self, *args, **kwargs):
        kwargs['formatter_class'] = HelpFormatter
        for key in ('description', 'epilog'):
            if kwargs.get(key):
                kwargs[key] = plain_text(kwargs[key])
        super().__init__(*args, **kwargs)
        # argparse looks a type up in this registry first: type=float means finite_float.
        self.register('type', float, finite_float)

    def parse_known_args(self, args=None, namespace=None):
        args = sys.argv[1:] if args is None else list(args)
        return super().parse_known_args(protect_negative_lists(args), namespace)

    def error(self, message):
        self.exit(2, f'{self.prog}: error: {message} (see {self.prog} --help)\n')


class _LogLines:
    """A file for tqdm that writes each refresh as a line of its own.

    A terminal redraws the bar in place after '\\r'; a log file or a pipe would keep every
    refresh on one ever-growing line.
    """

    def __init__(self, stream):
        self.stream = stream

    def write(self, text):
        # tqdm moves the cursor between nested bars; a log keeps only the text
        text = _CURSOR_MOVES.sub('', text.replace('\r', '')).strip()
        if text:
            self.stream.write(text + '\n')

    def flush(self):
        self.stream.flush()


def progress_bar(iterable=None, enabled=True, stream=None, **options):
    """Return a tqdm progress bar on ``stream`` (default stderr); ``enabled`` False hides it.

    On a terminal it is tqdm's bar. Elsewhere (stderr sent to a log file or a pipe, as under
    ``nohup`` or a launch file) it writes one plain line at most every
    ``LOG_PROGRESS_INTERVAL`` seconds, and nothing for work that ends sooner. ``options`` go
    to tqdm (``total``, ``desc``, ``unit``, ...).
    """
    from tqdm import tqdm

    stream = sys.stderr if stream is None else stream
    isatty = getattr(stream, 'isatty', None)
    bar_class = tqdm
    if enabled and not (isatty is not None and isatty()):
        bar_class = _log_bar_class()
        options.setdefault('mininterval', LOG_PROGRESS_INTERVAL)
        # tqdm's monitor thread refreshes a bar after maxinterval (10 s) whatever mininterval
        options.setdefault('maxinterval', options['mininterval'])
        options.setdefault('delay', LOG_PROGRESS_INTERVAL)
        # the rate over the whole run: a log line stands for a long stretch of it
        options.setdefault('smoothing', 0)
        options.pop('dynamic_ncols', None)
        options.setdefault('ncols', 100)
        stream = _LogLines(stream)
    return bar_class(iterable, disable=not enabled, file=stream, **options)


@functools.lru_cache(maxsize=None)
def _log_bar_class():
    """tqdm whose every refresh keeps the interval, for ``progress_bar`` in a log.

    tqdm rate-limits ``update`` only: ``set_postfix`` and ``set_description`` redraw at once
    (the training tools set a loss on every iteration, a line each in a log).
    """
    from tqdm import tqdm

    class LogBar(tqdm):

        def refresh(self, nolock=False, lock_args=None):
            now = self._time()
            start = getattr(self, 'start_t', None)  # None while tqdm builds the bar
            if self.disable or start is None or now < start + self.delay \
                    or now - self.last_print_t < self.mininterval:
                return
            # update() sets this after its refresh too; set_postfix() does not
            self.last_print_t = now
            super().refresh(nolock=nolock, lock_args=lock_args)

    return LogBar


@contextlib.contextmanager
def sigterm_raises(exception=KeyboardInterrupt):
    """Raise ``exception`` (a class) where the main thread is when SIGTERM arrives, in the block.

    kill, systemd and ROS 2 launch stop a process with SIGTERM, whose default ends it at once:
    the tools turn it into an exception so that they stop their workers and keep what finished,
    as on Ctrl-C (``KeyboardInterrupt``, the default) or with an exit code of their own (a
    ``BaseException`` subclass, so no ``except Exception`` on the way swallows it). Outside the
    main thread (a tool called from a thread) Python cannot install a handler: the block runs
    with SIGTERM as it was. The previous handler is restored on leaving.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise exception()

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        # None: the handler was not set from Python; the default is what stands then
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)
