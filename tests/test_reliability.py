"""Runs that survive: SIGKILL anywhere then --resume gives bit-identical parameters, SIGINT/SIGTERM stop
cleanly, non-finite steps are skipped and counted, a failed checkpoint write keeps the previous one, a
damaged checkpoint is named, and `prepare` streams a corpus far larger than it keeps in memory."""

import contextlib
import errno
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from conftest import assert_one_line_error, pretrain_args, run_cli, slow


def cli(*args):
    return [sys.executable, "-m", "bertkit", *map(str, args)]


def assert_same_weights(a, b):
    a, b = load_file(a), load_file(b)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def assert_checkpoints_sound(run_dir):
    """Every directory named step-N is complete and matches its manifest; debris is only ever .tmp."""
    from bertkit.train.state import STATE_NAME, verify_checkpoint

    root = run_dir / "checkpoints"
    for name in os.listdir(root) if root.exists() else []:
        if name.startswith("step-"):
            state = json.loads((root / name / STATE_NAME).read_text())
            verify_checkpoint(str(root / name), state)
        else:
            assert name.startswith(".step-") and name.endswith(".tmp"), name


def kill_during_checkpoint(args, run_dir, timeout=60.0):
    """Start the run and SIGKILL it the moment a checkpoint's temporary directory appears."""
    proc = subprocess.Popen(cli(*args), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    root, deadline = run_dir / "checkpoints", time.time() + timeout
    while proc.poll() is None and time.time() < deadline:
        if root.exists() and any(n.startswith(".step-") for n in os.listdir(root)):
            proc.kill()
            break
        time.sleep(0.001)
    proc.wait()
    return proc.returncode == -signal.SIGKILL


def kill_at_random(args, delays):
    for delay in delays:
        proc = subprocess.Popen(cli(*args), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        proc.kill()
        proc.wait()


def run_killed_many_times(args, run_dir, straight_seconds, seed):
    rng = random.Random(seed)
    killed_mid_save = kill_during_checkpoint(args, run_dir)  # first, while the run surely has saves ahead
    assert_checkpoints_sound(run_dir)
    # then random moments from the start of the process to the end of an uninterrupted run's time
    for delay in [rng.uniform(0.3, 1.0) * straight_seconds for _ in range(4)]:
        kill_at_random(args, [delay])
        assert_checkpoints_sound(run_dir)
    run_cli(*args)  # and finally to the end
    return killed_mid_save


def timed_run(args):
    start = time.perf_counter()
    run_cli(*args)
    return time.perf_counter() - start


def test_pretrain_killed_anywhere_resumes_bit_identical(prepared, tmp_path):
    common = ["--steps", 40, "--save-every", 1, "--eval-every", 10, "--keep-checkpoints", 2]
    seconds = timed_run(pretrain_args(prepared, tmp_path / "straight", *common))
    args = pretrain_args(prepared, tmp_path / "killed", *common, "--resume")
    killed_mid_save = run_killed_many_times(args, tmp_path / "killed", seconds, seed=1)
    assert killed_mid_save  # one kill landed while a checkpoint was being written
    assert_same_weights(tmp_path / "straight" / "model" / "model.safetensors",
                        tmp_path / "killed" / "model" / "model.safetensors")
    steps = [json.loads(line)["step"] for line in open(tmp_path / "killed" / "metrics.jsonl")
             if "split" not in line]
    assert steps == list(range(1, 41))  # the log reads as one uninterrupted run


def finetune_args(tiny_model, sst2, out, *extra):
    return ["finetune", "--task", "sst2", "--data", sst2, "--model", tiny_model, "--out", out, "--epochs", 2,
            "--batch-size", 4, "--lr", 1e-3, "--log-every", 1, "--save-every", 1, "--keep", "last", "--quiet",
            *extra]


def test_finetune_killed_anywhere_resumes_bit_identical(tiny_model, sst2, tmp_path):
    seconds = timed_run(finetune_args(tiny_model, sst2, tmp_path / "straight"))
    args = finetune_args(tiny_model, sst2, tmp_path / "killed", "--resume")
    run_killed_many_times(args, tmp_path / "killed" / "seed-1", seconds, seed=2)
    assert_same_weights(tmp_path / "straight" / "seed-1" / "model.safetensors",
                        tmp_path / "killed" / "seed-1" / "model.safetensors")
    straight = json.loads((tmp_path / "straight" / "seed-1" / "eval_results.json").read_text())
    killed = json.loads((tmp_path / "killed" / "seed-1" / "eval_results.json").read_text())
    assert killed["accuracy"] == straight["accuracy"]


def wait_for_lines(path, n, proc, timeout=120.0):
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if path.exists() and len(path.read_text().splitlines()) >= n:
            return
        time.sleep(0.02)
    raise AssertionError(f"{path} did not reach {n} lines")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_pretrain_stops_gracefully_and_resumes_exactly(prepared, tmp_path, sig):
    common = ["--steps", 300, "--save-every", 1000, "--eval-every", 1000]
    run_cli(*pretrain_args(prepared, tmp_path / "straight", *common))
    proc = subprocess.Popen(cli(*pretrain_args(prepared, tmp_path / "run", *common)), stderr=subprocess.PIPE,
                            text=True)
    wait_for_lines(tmp_path / "run" / "metrics.jsonl", 3, proc)
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig, stderr  # 130 / 143, as shells report it: the run did not finish
    assert "Resume with the same command plus --resume" in stderr
    stopped = [n for n in os.listdir(tmp_path / "run" / "checkpoints") if n.startswith("step-")]
    assert len(stopped) == 1 and int(stopped[0][5:]) < 300  # saved where it stopped, not at a save point
    run_cli(*pretrain_args(prepared, tmp_path / "run", *common, "--resume"))
    assert_same_weights(tmp_path / "straight" / "model" / "model.safetensors",
                        tmp_path / "run" / "model" / "model.safetensors")


def test_finetune_stops_gracefully_and_resumes_exactly(tiny_model, sst2, tmp_path):
    extra = ["--epochs", 20, "--save-every", 0]
    run_cli(*finetune_args(tiny_model, sst2, tmp_path / "straight", *extra))
    proc = subprocess.Popen(cli(*finetune_args(tiny_model, sst2, tmp_path / "run", *extra)), stderr=subprocess.PIPE,
                            text=True)
    wait_for_lines(tmp_path / "run" / "seed-1" / "metrics.jsonl", 5, proc)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143, stderr
    assert "Resume with the same command plus --resume" in stderr
    assert not (tmp_path / "run" / "seed-1" / "eval_results.json").exists()
    run_cli(*finetune_args(tiny_model, sst2, tmp_path / "run", *extra, "--resume"))
    assert_same_weights(tmp_path / "straight" / "seed-1" / "model.safetensors",
                        tmp_path / "run" / "seed-1" / "model.safetensors")


def test_demo_interrupted_exits_130_and_resumes(tmp_path):
    """The demo's stop message promises --resume: it exists, reuses the vocabulary and data, and continues the
    pre-training from the checkpoint; a changed option is refused by name and the directory kept."""
    out = tmp_path / "demo"
    args = ["demo", "--out", out, "--steps", 400, "--batch-size", 8, "--seq-len", 32, "--corpus-bytes", 200_000,
            "--finetune-epochs", 0, "--quiet"]  # (test_demo_smoke resumes a demo in its fine-tuning step)
    proc = subprocess.Popen(cli(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_lines(out / "run" / "metrics.jsonl", 1, proc)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr  # it did not finish, and says so
    assert "Resume with the same command plus --resume" in stderr
    assert not (out / "run" / "model").exists()
    changed = run_cli(*args, "--resume", "--seed", 1, check=False)
    assert_one_line_error(changed, "other settings", "seed 0 (now 1)")
    assert (out / "data" / "manifest.json").exists()  # refused, and nothing of the first try lost
    resumed = run_cli(*args, "--resume")
    assert "reusing the" in resumed.stdout and "resuming from" in resumed.stderr, resumed.stdout + resumed.stderr
    assert "MLM accuracy" in resumed.stdout and "[5/5] fine-tuning skipped" in resumed.stdout
    assert (out / "run" / "model" / "model.safetensors").exists()
    steps = [json.loads(line)["step"] for line in open(out / "run" / "metrics.jsonl") if "split" not in line]
    assert steps == list(range(25, 401, 25))  # one run's log, continued where it stopped


def test_finetune_resume_refuses_other_settings(tiny_model, sst2, tmp_path):
    run_cli(*finetune_args(tiny_model, sst2, tmp_path / "run", "--epochs", 1))
    proc = run_cli(*finetune_args(tiny_model, sst2, tmp_path / "run", "--epochs", 1, "--lr", 5e-4, "--resume"),
                   check=False)
    assert_one_line_error(proc, "other settings", "lr 0.001 (now 0.0005)")


# ----------------------------------------------------------------------------------------------
# Numerical faults: NaN injected into the loss of chosen training steps


def poison(monkeypatch, cls, bad_calls):
    """Make the loss of the given (1-based) training forward calls NaN."""
    original, calls = cls.forward, {"n": 0}

    def forward(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        if self.training and out.loss is not None:
            calls["n"] += 1
            if calls["n"] in bad_calls:
                out.loss = out.loss * float("nan")
        return out

    monkeypatch.setattr(cls, "forward", forward)


def pretrain_config(prepared, out, **overrides):
    from bertkit.train.pretrain import PretrainConfig

    values = dict(data=[str(prepared / "data")], out=str(out), model_config="tiny", steps=12, batch_size=4,
                  seq_len=32, lr=1e-3, log_every=1, eval_every=100, eval_samples=8, save_every=4, show_progress=False)
    return PretrainConfig(**{**values, **overrides})


def test_pretrain_skips_and_counts_nan_steps(prepared, tmp_path, monkeypatch):
    from bertkit.model import BertForPreTraining
    from bertkit.train.pretrain import pretrain

    poison(monkeypatch, BertForPreTraining, {3, 7, 8})
    pretrain(pretrain_config(prepared, tmp_path / "run"))
    rows = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl") if "validation" not in line]
    assert [r["skipped_steps"] for r in rows] == [0, 0, 1, 1, 1, 1, 2, 3, 3, 3, 3, 3]
    weights = load_file(tmp_path / "run" / "model" / "model.safetensors")
    assert all(torch.isfinite(w).all() for w in weights.values())


def test_pretrain_stops_after_consecutive_nan_steps(prepared, tmp_path, monkeypatch):
    from bertkit.errors import BertkitError
    from bertkit.model import BertForPreTraining
    from bertkit.train.pretrain import pretrain

    poison(monkeypatch, BertForPreTraining, set(range(6, 100)))
    with pytest.raises(BertkitError) as e:
        pretrain(pretrain_config(prepared, tmp_path / "run", max_bad_steps=3))
    message = str(e.value)
    assert "step 8" in message and "3 consecutive steps" in message
    assert "step-00000004" in message  # the last good checkpoint
    assert "learning rate" in message  # likely causes


def test_finetune_skips_nan_steps_then_stops_after_too_many(tiny_model, sst2, tmp_path, monkeypatch):
    from bertkit.errors import BertkitError
    from bertkit.model import BertForSequenceClassification
    from bertkit.train.finetune import FinetuneConfig, finetune

    def config(out, **overrides):
        return FinetuneConfig(task="sst2", data=str(sst2), model=str(tiny_model), out=str(out), epochs=1,
                              batch_size=4, lr=1e-3, log_every=1, show_progress=False, **overrides)

    poison(monkeypatch, BertForSequenceClassification, {2, 5})
    finetune(config(tmp_path / "a"))
    rows = [json.loads(line) for line in open(tmp_path / "a" / "seed-1" / "metrics.jsonl") if "dev" not in line]
    assert rows[-1]["skipped_steps"] == 2 and rows[0]["skipped_steps"] == 0
    assert all(torch.isfinite(w).all() for w in load_file(tmp_path / "a" / "seed-1" / "model.safetensors").values())

    poison(monkeypatch, BertForSequenceClassification, set(range(1, 100)))
    with pytest.raises(BertkitError, match="step 4: loss or gradient not finite for 4 consecutive steps"):
        finetune(config(tmp_path / "b", max_bad_steps=4))


# ----------------------------------------------------------------------------------------------
# Running out of memory: one line, exit status 2, the output directory as it was


@pytest.mark.parametrize("error", [
    RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: you "
                 "tried to allocate 40000000000 bytes. Error code 12 (Cannot allocate memory)"),
    torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 8 GiB"),
    MemoryError()])
def test_out_of_memory_is_one_line_and_leaves_no_output(tiny_model, sst2, prepared, tmp_path, monkeypatch, capsys,
                                                         error):
    from bertkit.cli import main
    from bertkit.model import BertForPreTraining, BertForSequenceClassification

    def forward(self, *args, **kwargs):
        raise error

    monkeypatch.setattr(BertForSequenceClassification, "forward", forward)
    monkeypatch.setattr(BertForPreTraining, "forward", forward)
    empty = tmp_path / "empty"
    empty.mkdir()
    runs = {"finetune": finetune_args(tiny_model, sst2, tmp_path / "fresh"),
            "finetune-empty": finetune_args(tiny_model, sst2, empty),
            "pretrain": pretrain_args(prepared, tmp_path / "pre")}
    for name, args in runs.items():
        capsys.readouterr()
        assert main([str(a) for a in args]) == 2, name
        # the run had started (its precision said, maybe a busy-machine note): then exactly one error line
        lines = [line for line in capsys.readouterr().err.strip().splitlines()
                 if not line.startswith(("precision ", "note: ", "recipe: "))]
        assert len(lines) == 1, lines
        assert "out of" in lines[0] and "memory" in lines[0] and "--batch-size" in lines[0], lines[0]
        if "allocate" in str(error):
            assert ("37.25 GiB" if "40000000000" in str(error) else "2.00 GiB") in lines[0], lines[0]
    assert not (tmp_path / "fresh").exists() and not (tmp_path / "pre").exists()  # nothing half-written
    assert empty.is_dir() and os.listdir(empty) == []  # an empty directory the user made stays, empty


# ----------------------------------------------------------------------------------------------
# Disk faults and damaged checkpoints


def test_failed_checkpoint_write_keeps_the_previous_checkpoint(prepared, tmp_path, monkeypatch):
    from bertkit.errors import BertkitError
    from bertkit.train import state
    from bertkit.train.pretrain import pretrain

    original, calls = state.save_tensors, {"n": 0}

    def save_tensors(path, tensors, metadata=None):
        calls["n"] += 1
        if calls["n"] == 2:  # the second checkpoint's optimizer file: the disk is full
            raise OSError(errno.ENOSPC, "No space left on device", path)
        return original(path, tensors, metadata)

    monkeypatch.setattr(state, "save_tensors", save_tensors)
    run = tmp_path / "run"
    with pytest.raises(BertkitError) as e:
        pretrain(pretrain_config(prepared, run))
    assert "step-00000008: could not write checkpoint (No space left on device)" in str(e.value)
    assert "the previous checkpoint is intact" in e.value.hint
    assert os.listdir(run / "checkpoints") == ["step-00000004"]  # no debris, the earlier one kept
    assert_checkpoints_sound(run)
    monkeypatch.setattr(state, "save_tensors", original)
    pretrain(pretrain_config(prepared, run, resume=True))  # after freeing space, the run goes on from step 4
    assert (run / "model" / "model.safetensors").exists()


@contextlib.contextmanager
def read_only(directory):
    """Nothing can be created in `directory`: mode 555, or for root (whom permissions do not stop) the
    immutable attribute, where the file system has it."""
    if os.geteuid() != 0:
        os.chmod(directory, 0o555)
        try:
            yield
        finally:
            os.chmod(directory, 0o755)
        return
    if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", directory], capture_output=True).returncode:
        pytest.skip("running as root, and chattr +i is not available here to make a directory read-only")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", directory], check=True)


def test_read_only_checkpoint_directory(prepared, tmp_path):
    run = tmp_path / "run"
    run_cli(*pretrain_args(prepared, run, "--stop-at", 3))
    with read_only(run / "checkpoints"):
        proc = run_cli(*pretrain_args(prepared, run, "--resume"), check=False)
    assert proc.returncode == 2, proc.stderr
    # "resuming from ...", the precision it runs in (and a note if the machine is busy), then the error
    resumed, error = [line for line in proc.stderr.strip().splitlines() if not line.startswith(("precision ", "note: ", "recipe: "))]
    assert resumed.startswith("resuming from") and "could not write checkpoint" in error, proc.stderr
    assert "previous checkpoint is intact" in error and str(run / "checkpoints") in error, error
    assert os.listdir(run / "checkpoints") == ["step-00000003"]


@pytest.mark.parametrize("name", ["optimizer.safetensors", "model/model.safetensors", "model/config.json"])
def test_damaged_checkpoint_file_is_named_on_resume(prepared, tmp_path, name):
    run = tmp_path / "run"
    run_cli(*pretrain_args(prepared, run, "--stop-at", 3))
    target = run / "checkpoints" / "step-00000003" / name
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x10  # one flipped bit in the middle of the file
    target.write_bytes(bytes(data))
    proc = run_cli(*pretrain_args(prepared, run, "--resume"), check=False)
    assert_one_line_error(proc, str(target), "damaged")


# ----------------------------------------------------------------------------------------------
# Under load


@slow
def test_prepare_two_gigabytes_with_flat_memory(tmp_path):
    """2 GB of text (one sentence per line, blank lines between documents) through `prepare`: the peak
    resident memory of the prepare process and its workers stays under 1 GB."""
    from conftest import minilm_path
    from test_embed import real_sentences

    sentences = real_sentences(400)
    rng = random.Random(0)
    block = "\n\n".join("\n".join(rng.sample(sentences, 8)) for _ in range(2000)) + "\n\n"
    corpus = tmp_path / "corpus.txt"
    with open(corpus, "w", encoding="utf-8") as f:
        while f.tell() < 2 * 1024 ** 3:
            f.write(block)
    start = time.perf_counter()
    # a fresh parent, so the peak is prepare's own (its workers included), not an earlier test's
    measure = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True); "
               "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    proc = subprocess.run([sys.executable, "-c", measure, *cli("prepare", "--input", corpus, "--tokenizer",
                                                               minilm_path(), "--out", tmp_path / "data",
                                                               "--workers", 2, "--validation-fraction", 0, "--quiet")],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    seconds = time.perf_counter() - start
    peak_mb = int(proc.stdout.split()[-1]) / 1024
    size_mb = corpus.stat().st_size / 1024 ** 2
    print(f"prepare: {size_mb:.0f} MB in {seconds:.0f} s = {size_mb / seconds:.1f} MB/s, peak RSS {peak_mb:.0f} MB")
    assert peak_mb < 1024
    manifest = json.loads((tmp_path / "data" / "manifest.json").read_text())
    assert manifest["splits"]["train"]["tokens"] > 300_000_000
