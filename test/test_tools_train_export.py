"""Tests of vos_train and vos_export on tiny synthetic data."""

import csv
import os
import signal

import pytest

torch = pytest.importorskip('torch')

from vos_ros.core import model_io  # noqa: E402
from vos_ros.core.errors import ModelError  # noqa: E402
from vos_ros.core.session import Session  # noqa: E402
from vos_ros.core.synthetic import make_clip  # noqa: E402
from vos_ros.core.synthetic import write_davis_dataset  # noqa: E402
from vos_ros.tools import export  # noqa: E402
from vos_ros.tools import train  # noqa: E402

TINY = ['--crop', '32', '--resolution', '48', '--width', '0.25', '--embedding-dim', '8',
        '--batch-size', '2', '--iters-per-epoch', '2', '--threads', '1', '--ref-pixels', '32',
        '--anchor-pixels', '32', '--log-every', '1']


@pytest.fixture(scope='module')
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp('davis')
    write_davis_dataset(root, num_sequences=2, seed=3, num_frames=4, width=64, height=48)
    return str(root)


def _rows(out):
    with open(os.path.join(out, 'metrics.csv'), newline='') as handle:
        return list(csv.DictReader(handle))


def test_train_resume_and_export(dataset, tmp_path, capsys):
    out = str(tmp_path / 'run')
    args = [dataset, '--synthetic', '1', '--out', out, '--checkpoint-every', '1'] + TINY
    assert train.main(args + ['--epochs', '1']) == 0
    for name in ('last.pt', 'metrics.csv', 'curves.png', 'config.json'):
        assert os.path.getsize(os.path.join(out, name)) > 0
    assert [int(r['iteration']) for r in _rows(out)] == [1, 2]
    assert all(float(r['loss']) >= 0 for r in _rows(out))
    first = torch.load(os.path.join(out, 'last.pt'), weights_only=False)
    assert first['iteration'] == 2

    assert train.main(args + ['--epochs', '2', '--resume', os.path.join(out, 'last.pt')]) == 0
    assert [int(r['iteration']) for r in _rows(out)] == [1, 2, 3, 4]
    resumed = torch.load(os.path.join(out, 'last.pt'), weights_only=False)
    assert resumed['iteration'] == 4

    # the same 4 iterations in one go give the same weights: sampling is a function of index
    straight = str(tmp_path / 'straight')
    args_straight = [dataset, '--synthetic', '1', '--out', straight, '--checkpoint-every', '4']
    assert train.main(args_straight + TINY + ['--epochs', '2']) == 0
    other = torch.load(os.path.join(straight, 'last.pt'), weights_only=False)
    for key, value in resumed['state_dict'].items():
        assert torch.allclose(value.float(), other['state_dict'][key].float(), atol=1e-5), key

    model = str(tmp_path / 'model.pt')
    assert export.main([os.path.join(out, 'last.pt'), '--out', model]) == 0
    meta = model_io.read_metadata(model)
    assert meta['kind'] == 'embedding' and meta['embedding_dim'] == 8
    assert meta['training']['iteration'] == 4
    clip = make_clip(num_frames=3, width=64, height=48, num_objects=1, seed=5)
    session = Session('embedding', model_path=model, device='cpu', prior='none')
    labels = [r.labels for _, r in session.propagate(clip.frames, clip.first_mask)]
    assert labels[-1].shape == (48, 64)


def test_train_synthetic_only(tmp_path):
    out = str(tmp_path / 'synth')
    assert train.main(['--synthetic', '2', '--out', out, '--epochs', '1'] + TINY) == 0
    assert len(_rows(out)) >= 1


def test_tensorboard_events_when_installed(tmp_path):
    event_accumulator = pytest.importorskip(
        'tensorboard.backend.event_processing.event_accumulator',
        reason='tensorboard is optional (requirements.txt installs it for this test)')
    out = str(tmp_path / 'tb')
    assert train.main(['--synthetic', '2', '--out', out, '--epochs', '1'] + TINY) == 0
    events = event_accumulator.EventAccumulator(os.path.join(out, 'tensorboard'))
    events.Reload()
    tags = events.Tags()['scalars']
    assert tags, 'no scalar written to the TensorBoard log'
    # the same losses as metrics.csv, step by step
    loss_tag = next(tag for tag in tags if 'loss' in tag)
    logged = [(e.step, e.value) for e in events.Scalars(loss_tag)]
    rows = [(int(r['iteration']), float(r['loss'])) for r in _rows(out)]
    assert [step for step, _ in logged] == [step for step, _ in rows]
    expected = [value for _, value in rows]
    assert [value for _, value in logged] == pytest.approx(expected, rel=1e-5)


def test_bad_image_named(dataset, tmp_path, capsys):
    import shutil
    broken = tmp_path / 'broken'
    shutil.copytree(dataset, broken)
    frame = broken / 'JPEGImages' / '480p' / 'synth01' / '00002.jpg'
    frame.write_bytes(b'not a jpeg')
    assert train.main([str(broken), '--out', str(tmp_path / 'o'), '--epochs', '1'] + TINY) == 2
    err = capsys.readouterr().err
    assert str(frame) in err and 'Traceback' not in err


def test_missing_mask_named(dataset, tmp_path, capsys):
    import shutil
    broken = tmp_path / 'nomask'
    shutil.copytree(dataset, broken)
    mask = broken / 'Annotations' / '480p' / 'synth00' / '00001.png'
    mask.unlink()
    assert train.main([str(broken), '--out', str(tmp_path / 'o'), '--epochs', '1'] + TINY) == 2
    assert str(mask) in capsys.readouterr().err


def test_train_argument_errors(tmp_path, capsys):
    assert train.main(['--out', str(tmp_path / 'o')]) == 2
    assert train.main([str(tmp_path / 'missing'), '--out', str(tmp_path / 'o')]) == 2
    assert 'missing' in capsys.readouterr().err


class UserNet(torch.nn.Module):
    """A user's own embedding model: [1,3,H,W] -> [1,6,H/8,W/8]."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 6, 8, stride=8)

    def forward(self, x):
        return self.conv(x)


def test_from_traced(tmp_path):
    raw = str(tmp_path / 'user.pt')
    torch.jit.save(torch.jit.trace(UserNet().eval(), torch.zeros(1, 3, 64, 64)), raw)
    with pytest.raises(ModelError, match='--from-traced'):
        model_io.load_model(raw, device='cpu')
    out = str(tmp_path / 'user_vos.pt')
    assert export.main(['--from-traced', raw, '--out', out, '--mean', '0', '0', '0',
                        '--std', '255', '255', '255', '--training-data', 'mine']) == 0
    meta = model_io.read_metadata(out)
    assert (meta['embedding_dim'], meta['stride'], meta['input_multiple']) == (6, 8, 8)
    assert meta['training_data'] == 'mine' and meta['mean'] == [0.0, 0.0, 0.0]
    clip = make_clip(num_frames=3, width=72, height=50, num_objects=2, seed=2)
    session = Session('embedding', model_path=out, device='cpu')
    for _, result in session.propagate(clip.frames, clip.first_mask):
        assert result.labels.shape == (50, 72)
        assert result.object_ids == clip.object_ids


def test_from_traced_refuses_a_model_of_another_kind(tmp_path, capsys):
    # a memory model's forward gives a key map, which the embedding probe would accept
    memory = model_io.default_model_path('memory')
    out = tmp_path / 'm.pt'
    assert export.main(['--from-traced', memory, '--out', str(out)]) == 2
    assert 'is a memory model' in capsys.readouterr().err
    assert not out.exists()
    # an embedding model's metadata may still be replaced
    assert export.main(['--from-traced', model_io.default_model_path('embedding'), '--out',
                        str(out), '--version', 'again']) == 0
    assert model_io.read_metadata(out)['version'] == 'again'


def test_export_errors(tmp_path, capsys):
    assert export.main(['--out', str(tmp_path / 'x.pt')]) == 2
    assert export.main([str(tmp_path / 'none.pt'), '--out', str(tmp_path / 'x.pt')]) == 2
    junk = tmp_path / 'junk.pt'
    torch.save({'weights': 1}, junk)
    assert export.main([str(junk), '--out', str(tmp_path / 'x.pt')]) == 2
    assert export.main(['--from-traced', str(junk), '--out', str(tmp_path / 'x.pt')]) == 2
    err = capsys.readouterr().err
    assert 'not found' in err and 'not a vos_train checkpoint' in err
    assert 'Traceback' not in err


def test_model_file_given_as_checkpoint_says_what_to_run(tmp_path, capsys):
    import warnings

    raw = str(tmp_path / 'user.pt')
    torch.jit.save(torch.jit.trace(UserNet().eval(), torch.zeros(1, 3, 64, 64)), raw)
    exported = str(tmp_path / 'exported.pt')
    assert export.main(['--from-traced', raw, '--out', exported]) == 0
    capsys.readouterr()
    out = str(tmp_path / 'x2.pt')
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        assert export.main([exported, '--out', out]) == 2
        err = capsys.readouterr().err
        assert 'is an exported TorchScript model' in err
        assert f'vos_export --from-traced {exported} --out {out}' in err
        assert export.main([raw, '--out', out]) == 2
        raw_err = capsys.readouterr().err
    assert 'TorchScript model without vos.json' in raw_err
    assert f'vos_export --from-traced {raw} --out {out}' in raw_err
    assert [str(w.message) for w in caught] == []
    assert not os.path.exists(out)
    # the shipped memory model is a model too, but not one --from-traced can take
    memory = model_io.default_model_path('memory')
    if os.path.isfile(memory):
        assert export.main([memory, '--out', out]) == 2
        err = capsys.readouterr().err
        assert 'kind memory' in err and '--from-traced' not in err


def test_error_without_text_names_its_type(tmp_path, capsys, monkeypatch):
    checkpoint = tmp_path / 'last.pt'
    torch.save({'weights': 1}, checkpoint)

    def fail(*args, **kwargs):
        raise RuntimeError()

    monkeypatch.setattr(torch, 'load', fail)
    assert export.main([str(checkpoint), '--out', str(tmp_path / 'x.pt')]) == 2
    assert capsys.readouterr().err.rstrip().endswith(f'{checkpoint}: RuntimeError')


def test_out_folder_refused_before_loading(tmp_path, capsys, monkeypatch):
    raw = str(tmp_path / 'user.pt')
    torch.jit.save(torch.jit.trace(UserNet().eval(), torch.zeros(1, 3, 64, 64)), raw)
    folder = tmp_path / 'ann'
    folder.mkdir()

    def no_loading(*args, **kwargs):
        raise AssertionError('a model was loaded before --out was checked')

    monkeypatch.setattr(torch, 'load', no_loading)
    monkeypatch.setattr(model_io, 'jit_load', no_loading)
    for argv in (['--from-traced', raw, '--version', 'test'], [raw]):
        assert export.main(argv + ['--out', str(folder)]) == 2
        assert capsys.readouterr().err == (f'vos_export: error: --out {folder} is a folder, '
                                           'expected a model file path\n')
    # a file where a parent folder should be is said as clearly (missing folders are created)
    (tmp_path / 'afile').write_text('x')
    assert export.main(['--from-traced', raw, '--out', str(tmp_path / 'afile' / 'm.pt')]) == 2
    assert f'{tmp_path / "afile"} is a file, not a folder' in capsys.readouterr().err
    monkeypatch.undo()
    nested = tmp_path / 'new' / 'sub' / 'm.pt'
    assert export.main(['--from-traced', raw, '--out', str(nested)]) == 0
    assert model_io.read_metadata(nested)['embedding_dim'] == 6


def test_help_says_what_the_code_does():
    import numpy as np

    from vos_ros.tools import train_box

    assert '--kind memory' in train.build_parser().format_help().split('\n\n')[1]
    description = train.build_parser().description
    assert 'embedding' in description and 'memory' in description
    rounds = [r for r, p in zip(train_box.CLICK_ROUNDS, train_box.CLICK_ROUND_P) if p > 0]
    assert np.isclose(sum(train_box.CLICK_ROUND_P), 1.0)
    assert f'{min(rounds)}-{max(rounds)} rounds' in ' '.join(
        train_box.build_parser().format_help().split())


def test_torchrun_two_processes(tmp_path):
    """Two CPU processes under torchrun (gloo DDP): rank 0 writes, gradients are averaged."""
    import subprocess
    import sys
    common = ['--synthetic', '2', '--epochs', '1', '--checkpoint-every', '2'] + TINY
    single = str(tmp_path / 'single')
    assert train.main(common + ['--out', single]) == 0
    ddp = str(tmp_path / 'ddp')
    env = dict(os.environ, OMP_NUM_THREADS='1')
    done = subprocess.run(
        [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', '2',
         '-m', 'vos_ros.tools.train'] + common + ['--out', ddp],
        env=env, capture_output=True, text=True, timeout=150)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count('vos_train: iteration 2;') == 1  # only rank 0 reports and writes
    state = torch.load(os.path.join(ddp, 'last.pt'), weights_only=False)
    assert state['iteration'] == 2
    alone = torch.load(os.path.join(single, 'last.pt'), weights_only=False)
    # rank 1 draws other samples, so the averaged gradients give other weights than one process
    assert any(not torch.allclose(value.float(), alone['state_dict'][key].float())
               for key, value in state['state_dict'].items())


def _last(out):
    return torch.load(os.path.join(out, 'last.pt'), weights_only=False)


def test_listed_sequences_not_in_the_data_are_named_before_anything(dataset, tmp_path, capsys):
    typo = tmp_path / 'typo.txt'
    typo.write_text('synth00\nnosuch\nsynth1\n')
    out = tmp_path / 'o'
    for kind in ('embedding', 'memory'):
        for option in ('--sequences-file', '--exclude-file', '--val-file'):
            argv = [dataset, '--kind', kind, option, str(typo), '--out', str(out)] + TINY
            assert train.main(argv) == 2
            err = capsys.readouterr().err
            if kind == 'memory' and option == '--val-file':
                # the memory trainer scores no validation pairs: said, not silently ignored
                assert err.startswith('vos_train: error: --val-file is for the embedding '
                                      'model'), err
                assert len(err.splitlines()) == 1 and not out.exists()
                continue
            assert err.startswith(f"vos_train: error: {option} {typo}: sequence 'nosuch' not "
                                  'found: no folder '), err
            assert "sequence 'synth1' not found" in err and 'did you mean synth01' in err
            assert len(err.splitlines()) == 1 and not out.exists()
    # without any DAVIS folder, a listed sequence cannot be in the data either
    assert train.main(['--synthetic', '1', '--exclude-file', str(typo), '--out', str(out)]
                      + TINY) == 2
    assert 'no DAVIS folder given' in capsys.readouterr().err and not out.exists()


@pytest.mark.parametrize('number, reason, code', [(signal.SIGTERM, 'SIGTERM', 75),
                                                  (signal.SIGINT, 'Ctrl-C', 130)])
def test_sigterm_and_ctrl_c_save_and_say_how_to_continue(
        tmp_path, capsys, monkeypatch, number, reason, code):
    out = str(tmp_path / 'run')
    argv = ['--synthetic', '1', '--epochs', '2', '--checkpoint-every', '100', '--out', out] + TINY
    original = train.nn_triplet_loss

    def signalling(*args):
        os.kill(os.getpid(), number)  # as kill or Ctrl-C would, inside the first iteration
        monkeypatch.setattr(train, 'nn_triplet_loss', original)
        return original(*args)

    monkeypatch.setattr(train, 'nn_triplet_loss', signalling)
    handlers = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    assert train.main(argv + ['--resume', 'last']) == code
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == handlers
    last = os.path.join(out, 'last.pt')
    assert _last(out)['iteration'] == 1
    captured = capsys.readouterr()
    assert captured.err == (f'vos_train: stopped at iteration 1 of 4 ({reason}): continue with '
                            f'--resume last; checkpoint {last}\n')
    assert captured.out == ''
    # the same command continues, and ends with code 0
    assert train.main(argv + ['--resume', 'last']) == 0
    assert _last(out)['iteration'] == 4
    assert [int(r['iteration']) for r in _rows(out)] == [1, 2, 3, 4]


def test_max_minutes_stop_exits_75_and_a_second_ctrl_c_quits(tmp_path, capsys, monkeypatch):
    out = str(tmp_path / 'run')
    argv = ['--synthetic', '1', '--epochs', '2', '--out', out] + TINY
    assert train.main(argv + ['--max-minutes', '1e-9']) == 75
    assert 'stopped at iteration 1 of 4 (--max-minutes): continue with --resume last' in \
        capsys.readouterr().err
    # --max-minutes reached at the last iteration: the run finished
    assert train.main(argv + ['--max-minutes', '1e-9', '--resume', 'last', '--epochs', '1']) == 0
    # a second Ctrl-C does not wait for the end of the iteration: nothing saved
    stops = train.StopRequests()
    try:
        os.kill(os.getpid(), signal.SIGINT)
        assert stops.reason() == 'Ctrl-C'
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    finally:
        stops.close()


def test_unusable_out_is_one_line_and_writes_nothing(tmp_path, capsys, monkeypatch):
    afile = tmp_path / 'afile'
    afile.write_text('x')
    cases = [(str(afile), f'--out {afile} is a file, expected a folder'),
             (str(afile / 'sub'), f'--out {afile / "sub"}: {afile} is a file, not a folder')]
    if os.path.isdir('/proc'):
        cases.append(('/proc/nope', '--out /proc/nope: cannot write in /proc'))
    for kind in ('embedding', 'memory'):
        for out, said in cases:
            assert train.main(['--kind', kind, '--synthetic', '1', '--out', out] + TINY) == 2
            err = capsys.readouterr().err
            assert err.startswith(f'vos_train: error: {said}') and len(err.splitlines()) == 1
    assert afile.read_text() == 'x'
    if os.path.isdir('/proc'):
        monkeypatch.setattr(torch, 'load', lambda *args, **kwargs: 1 / 0)
        assert export.main([str(afile), '--out', '/proc/nope/m.pt']) == 2
        assert capsys.readouterr().err == ('vos_export: error: --out /proc/nope/m.pt: cannot '
                                           'write in /proc (No such file or directory)\n')


@pytest.fixture(scope='module')
def tiny_run(dataset, tmp_path_factory):
    """A 2-iteration embedding run (D=8) and its exported model."""
    folder = tmp_path_factory.mktemp('tiny_run')
    out = str(folder / 'run')
    assert train.main([dataset, '--out', out, '--epochs', '1'] + TINY) == 0
    model = str(folder / 'model.pt')
    assert export.main([os.path.join(out, 'last.pt'), '--out', model]) == 0
    return out, model


def _parameters(state):
    # batch-norm statistics change in any training iteration, even at learning rate 0
    return {key: value for key, value in state.items()
            if not key.endswith(('running_mean', 'running_var', 'num_batches_tracked'))}


def test_init_starts_a_new_run_from_an_exported_model(tiny_run, tmp_path, capsys):
    run, model = tiny_run
    out = str(tmp_path / 'fine')
    # learning rate 0: the weights after training are the model's
    argv = ['--synthetic', '1', '--epochs', '1', '--lr', '0', '--out', out] + TINY
    assert train.main(argv + ['--init', model, '--resume', 'last']) == 0
    trained = _last(out)
    assert trained['iteration'] == 2
    given = model_io.jit_load(model).state_dict()
    for key, value in _parameters(trained['state_dict']).items():
        assert torch.equal(value, given[key]), key
    assert trained['meta']['init']['path'] == os.path.abspath(model)
    exported = str(tmp_path / 'fine.pt')
    assert export.main([os.path.join(out, 'last.pt'), '--out', exported]) == 0
    assert {'init_model': os.path.abspath(model), 'version': 'embednet-it2'} in \
        model_io.read_metadata(exported)['training_data']
    capsys.readouterr()
    # refused with one line: another architecture, another kind, a checkpoint, no architecture
    raw = str(tmp_path / 'user.pt')
    torch.jit.save(torch.jit.trace(UserNet().eval(), torch.zeros(1, 3, 64, 64)), raw)
    traced = str(tmp_path / 'traced.pt')
    assert export.main(['--from-traced', raw, '--out', traced]) == 0
    capsys.readouterr()
    new = tmp_path / 'new'
    for init, extra, said in (
            (model, ['--embedding-dim', '16'],
             f'--init {model} has --embedding-dim 8, this command gives --embedding-dim 16'),
            (model_io.default_model_path('memory'), [],
             'is a model of kind memory, this run trains kind embedding'),
            (os.path.join(run, 'last.pt'), [], '--init needs an exported model'),
            (traced, [], 'records no architecture')):
        assert train.main(['--synthetic', '1', '--init', init, '--out', str(new)] + TINY
                          + extra) == 2
        err = capsys.readouterr().err
        assert said in err and len(err.splitlines()) == 1, err
        assert not new.exists()


def test_init_memory_model(tiny_memory_model, tmp_path):
    out = str(tmp_path / 'fine')
    argv = ['--kind', 'memory', '--synthetic', '1', '--init', tiny_memory_model, '--key-dim',
            '16', '--value-dim', '32', '--top-k', '8', '--crop', '48', '--resolution', '64',
            '--clip-frames', '2', '--batch-size', '1', '--iters-per-epoch', '1', '--epochs', '1',
            '--threads', '1', '--lr', '0', '--out', out]
    assert train.main(argv) == 0
    given = model_io.jit_load(tiny_memory_model).state_dict()
    for key, value in _parameters(_last(out)['state_dict']).items():
        assert torch.equal(value, given[key]), key


def test_resume_refuses_an_exported_model_and_another_architecture(tiny_run, tmp_path, capsys):
    import json
    import warnings

    run, model = tiny_run
    out = tmp_path / 'o'
    for kind, path in (('embedding', model), ('memory', model_io.default_model_path('memory'))):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter('always')
            assert train.main(['--kind', kind, '--synthetic', '1', '--resume', path,
                               '--out', str(out)] + TINY) == 2
        assert [str(w.message) for w in caught] == []
        assert capsys.readouterr().err == (
            f'vos_train: error: {path} is an exported model (TorchScript), not a training '
            f'checkpoint: start a new run from its weights with --init {path}\n')
        assert not out.exists()
    config = json.loads(open(os.path.join(run, 'config.json')).read())
    argv = ['--synthetic', '1', '--epochs', '2', '--out', run, '--resume', 'last'] + TINY
    assert train.main(argv + ['--embedding-dim', '16', '--width', '0.5']) == 2
    assert capsys.readouterr().err == (
        f'vos_train: error: --resume {os.path.join(run, "last.pt")} was trained with '
        '--embedding-dim 8 --width 0.25, this command gives --embedding-dim 16 --width 0.5: '
        'give the same values (architecture options cannot change on resume; schedule options '
        'such as --epochs can)\n')
    assert json.loads(open(os.path.join(run, 'config.json')).read()) == config
    assert _last(run)['iteration'] == 2


def test_export_kind_is_the_checkpoints(tiny_run, tmp_path, capsys):
    run, _ = tiny_run
    checkpoint = os.path.join(run, 'last.pt')
    out = tmp_path / 'm.pt'
    assert export.main([checkpoint, '--out', str(out), '--kind', 'memory']) == 2
    assert capsys.readouterr().err == (
        f'vos_export: error: {checkpoint} is a checkpoint of kind embedding: --kind memory '
        "contradicts it (leave --kind out: the kind is the checkpoint's)\n")
    assert not out.exists()
    memory = tmp_path / 'memory_ckpt.pt'
    torch.save({'arch': 'memnet_mbv2', 'model_kwargs': {}, 'state_dict': {},
                'meta': {'kind': 'memory'}}, memory)
    assert export.main([str(memory), '--out', str(out), '--kind', 'embedding']) == 2
    assert 'is a checkpoint of kind memory: --kind embedding contradicts it' in \
        capsys.readouterr().err
    assert export.main([checkpoint, '--out', str(out), '--kind', 'embedding']) == 0
    assert model_io.read_metadata(out)['kind'] == 'embedding'
    assert '(default: embedding)' not in ' '.join(export.build_parser().format_help().split())
    raw = str(tmp_path / 'user.pt')
    torch.jit.save(torch.jit.trace(UserNet().eval(), torch.zeros(1, 3, 64, 64)), raw)
    assert export.main(['--from-traced', raw, '--out', str(tmp_path / 'u.pt'), '--kind',
                        'memory']) == 2
    assert '--from-traced makes an embedding model only' in capsys.readouterr().err
