"""Bad numbers on every tool's command line: one line naming the argument, non-zero exit.

And the tools' progress bars, on a terminal and in a log.
"""

import io
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
from PIL import Image
import pytest

from vos_ros.tools import annotate
from vos_ros.tools import bag_eval
from vos_ros.tools import demo
from vos_ros.tools import evaluate
from vos_ros.tools import export
from vos_ros.tools import make_bag
from vos_ros.tools import train
from vos_ros.tools.cli import finite_numbers
from vos_ros.tools.cli import progress_bar
from vos_ros.tools.cli import protect_negative_lists
from vos_ros.tools.cli import sigterm_raises

TOOLS = {
    'annotate': (annotate.main, annotate.build_parser),
    'vos_eval': (evaluate.main, evaluate._parser),
    'vos_make_bag': (make_bag.main, make_bag.build_parser),
    'vos_bag_eval': (bag_eval.main, bag_eval.build_parser),
    'vos_demo': (demo.main, demo.build_parser),
    'vos_train': (train.main, train.build_parser),
    'vos_export': (export.main, export.build_parser),
}
BAD = ('inf', '-inf', 'nan', '1e400')


def _numeric_options():
    cases = []
    for tool, (_, build) in TOOLS.items():
        for action in build()._actions:
            if action.type in (float, int) and action.option_strings:
                cases.append((tool, action.option_strings[-1], action.nargs))
    return cases


NUMERIC = _numeric_options()


def test_every_tool_has_numeric_options_checked():
    assert {tool for tool, _, _ in NUMERIC} == set(TOOLS)


@pytest.mark.parametrize('tool, option, nargs', NUMERIC)
@pytest.mark.parametrize('bad', BAD)
def test_non_finite_number_is_one_line_naming_the_argument(tool, option, nargs, bad, capsys):
    main, _ = TOOLS[tool]
    values = [bad] * (nargs if isinstance(nargs, int) else 1)
    with pytest.raises(SystemExit) as raised:
        main([option, *values])
    assert raised.value.code == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert option in lines[0] and 'Traceback' not in err


@pytest.mark.parametrize('bad', BAD)
def test_annotate_box_and_points_refuse_non_finite(tmp_path, capsys, bad):
    image = tmp_path / 'f.png'
    Image.fromarray(np.zeros((40, 50, 3), np.uint8)).save(image)
    for extra in (['--box', f'{bad},3,30,30'], ['--points', f'10,{bad},1']):
        code = annotate.main(['--image', str(image), '--out', str(tmp_path / 'm.png'), *extra])
        err = capsys.readouterr().err
        assert code != 0 and len(err.strip().splitlines()) == 1, err
        assert extra[0] in err and 'finite' in err


def _frame(path):
    image = np.full((90, 120, 3), 40, np.uint8)
    image[30:70, 10:60] = (220, 30, 30)
    Image.fromarray(image).save(path)
    return path


def test_negative_box_coordinates_as_users_type_them(tmp_path, capsys):
    image = _frame(tmp_path / 'f.png')
    for argv in (['--box', '-20,25,65,75'], ['--box=-20,25,65,75'], ['--box', '-20 25 65 75']):
        out = tmp_path / 'm.png'
        assert annotate.main(['--image', str(image), '--out', str(out), '--force', *argv]) == 0
        labels = np.array(Image.open(out))
        assert labels[50, 30] == 1 and labels[50, 100] == 0
    assert 'error' not in capsys.readouterr().err


def test_whole_image_box_warns(tmp_path, capsys):
    image = _frame(tmp_path / 'f.png')
    annotate.main(['--image', str(image), '--out', str(tmp_path / 'm.png'),
                   '--box', '-5,-5,200,200'])
    assert 'covers the whole 120x90 image' in capsys.readouterr().err
    annotate.main(['--image', str(image), '--out', str(tmp_path / 'n.png'),
                   '--box', '5,25,65,75'])
    assert 'covers the whole' not in capsys.readouterr().err


def test_negative_lists_are_protected_only_where_they_are_lists():
    argv = ['--box', '-20,10,90,90', '--resolution', '-1', '--node-args=-p a:=1', '-inf,2']
    assert protect_negative_lists(argv) == ['--box', ' -20,10,90,90', '--resolution', '-1',
                                            '--node-args=-p a:=1', ' -inf,2']
    assert finite_numbers(' -20,10,90,90', 4) == [-20.0, 10.0, 90.0, 90.0]
    with pytest.raises(ValueError, match='finite'):
        finite_numbers('1e400,1', 2)


def test_console_script_prints_one_line_without_traceback(tmp_path):
    image = _frame(tmp_path / 'f.png')
    result = subprocess.run(
        [sys.executable, '-c', 'import sys; from vos_ros.tools.annotate import main; '
         'sys.exit(main())', '--image', str(image), '--box', 'inf,30,90,90'],
        capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        "annotate: error: --box x0,y0,x1,y1: numbers must be finite, got 'inf,30,90,90'"]


def test_help_shows_only_defaults_that_say_something_and_no_rest_quoting():
    from vos_ros.tools.cli import ToolParser

    parser = ToolParser(prog='tool', description='``tool``: does ``x``.', epilog='Use ``--a``.')
    parser.add_argument('--a', help='nothing by default')
    parser.add_argument('--frame', type=int, default=0, help='frame index')
    parser.add_argument('--flag', action='store_true', help='a switch')
    parser.add_argument('--ids', default='1,2', help='ids (default 1, 2, …)')
    text = parser.format_help()
    assert '(default: None)' not in text and '(default: False)' not in text
    assert 'frame index (default: 0)' in ' '.join(text.split())
    assert '(default: 1,2)' not in text  # its help names the default already
    assert '``' not in text and 'tool: does x.' in text and 'Use --a.' in text


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_bar_in_a_log_writes_whole_lines():
    log = io.StringIO()
    for _ in progress_bar(range(5), stream=log, desc='work', mininterval=0, delay=0):
        pass
    lines = log.getvalue().split('\n')
    assert '\r' not in log.getvalue()
    assert lines[-1] == '' and len(lines) > 2
    assert all(line.startswith('work:') for line in lines[:-1])
    assert '5/5' in lines[-2]
    # work that ends before the interval writes nothing to a log
    quiet = io.StringIO()
    for _ in progress_bar(range(50), stream=quiet, desc='quick'):
        pass
    assert quiet.getvalue() == ''
    bar = progress_bar(total=3, stream=quiet, enabled=False, mininterval=0, delay=0)
    bar.update(3)
    bar.close()
    assert quiet.getvalue() == ''


def test_progress_bar_on_a_terminal_redraws_in_place():
    terminal = _Terminal()
    for _ in progress_bar(range(3), stream=terminal, desc='work', mininterval=0):
        pass
    assert '\r' in terminal.getvalue() and '3/3' in terminal.getvalue()


class _TimedLog(io.StringIO):
    """A log that notes when each line arrived."""

    def __init__(self):
        super().__init__()
        self.times = []

    def write(self, text):
        self.times.append(time.monotonic())
        return super().write(text)


def test_progress_bar_in_a_log_keeps_its_interval():
    log = _TimedLog()
    bar = progress_bar(total=120, stream=log, desc='work', mininterval=0.4, delay=0.4)
    # tqdm's monitor thread would otherwise refresh it every 10 s, under the log's interval
    assert bar.maxinterval == 0.4
    started = time.monotonic()
    for index in range(120):
        if index % 10 == 0:
            bar.set_description(f'part {index // 10}')  # redraws at once in plain tqdm
        bar.set_postfix(loss=index)  # so does this: the training tools call it every step
        time.sleep(0.01)
        bar.update(1)
    bar.close()
    elapsed = time.monotonic() - started
    lines = log.getvalue().splitlines()
    assert 1 <= len(lines) <= elapsed / 0.4 + 2, lines
    # the last line is the closing one; the others keep the interval (a line per refresh
    # would come every 10 ms; a busy machine may delay one write a little)
    gaps = [b - a for a, b in zip(log.times[:-2], log.times[1:-1])]
    assert all(gap >= 0.25 for gap in gaps), gaps
    assert 'loss=119' in lines[-1] and '120/120' in lines[-1]


class _Stopped(BaseException):
    pass


def test_sigterm_raises_the_given_exception_in_the_block_and_restores_the_handler():
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(_Stopped):
        with sigterm_raises(_Stopped):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the signal interrupts this at once
    assert signal.getsignal(signal.SIGTERM) is before
    with pytest.raises(KeyboardInterrupt):
        with sigterm_raises():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
    assert signal.getsignal(signal.SIGTERM) is before


def test_sigterm_raises_leaves_sigterm_alone_outside_the_main_thread():
    seen = []

    def run():
        with sigterm_raises(_Stopped):  # signal.signal would raise ValueError here
            seen.append(signal.getsignal(signal.SIGTERM))

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    assert seen == [signal.getsignal(signal.SIGTERM)]
