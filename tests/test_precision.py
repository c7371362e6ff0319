"""--precision auto|fp32|bf16 and --threads: the choice follows the hardware's capability (stubbed here,
so the test means the same on every CPU), is said once, and reaches the run's settings and metrics."""

import json
import subprocess
import sys

import pytest
import torch

import bertkit.device as device
from bertkit.errors import BertkitError
from conftest import assert_one_line_error, pretrain_args, run_cli

CPU = torch.device("cpu")


@pytest.fixture
def capability(monkeypatch):
    """Set whether the CPU 'runs bf16 natively' (and how slow emulated bf16 'is')."""
    monkeypatch.setattr(device, "_announced", set())

    def set_native(native: bool, slowdown: float = 90.0):
        monkeypatch.setattr(device, "cpu_native_bf16", lambda: native)
        monkeypatch.setattr(device, "bf16_slowdown", lambda: slowdown)
    return set_native


def test_auto_is_fp32_without_native_bf16_and_bf16_with_it(capability, capsys):
    capability(False)
    chosen = device.resolve_precision("auto", CPU)
    assert (chosen.name, chosen.requested) == ("fp32", "auto")
    assert "no native bf16" in chosen.reason
    capability(True)
    chosen = device.resolve_precision("auto", CPU)
    assert chosen.name == "bf16" and "natively" in chosen.reason
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2
    assert err[0].startswith("precision fp32 (auto: this CPU has no native bf16 (oneDNN emulates it; flags: ")
    assert err[1].startswith("precision bf16 (auto: this CPU runs bf16 natively (oneDNN; flags: ")


def test_the_choice_is_said_once_per_process(capability, capsys):
    capability(False)
    for _ in range(3):
        device.resolve_precision("auto", CPU)
    assert len(capsys.readouterr().err.splitlines()) == 1


def test_explicit_choices_are_kept(capability):
    capability(True)
    assert device.resolve_precision("fp32", CPU).name == "fp32"
    capability(False)
    assert device.resolve_precision("fp32", CPU).name == "fp32"


def test_forcing_emulated_bf16_warns_how_much_slower(capability, capsys):
    capability(False, slowdown=97.0)
    chosen = device.resolve_precision("bf16", CPU)
    assert chosen.name == "bf16"
    warning = capsys.readouterr().err.splitlines()[0]
    assert warning.startswith("warning:") and "97x slower" in warning and "--precision auto" in warning


def test_bf16_on_a_gpu_without_it_is_refused(monkeypatch):
    monkeypatch.setattr(device, "native_bf16", lambda dev: (False, "Tesla T4 has no bf16 tensor cores"))
    with pytest.raises(BertkitError, match="Tesla T4 has no bf16") as e:
        device.resolve_precision("bf16", torch.device("cuda"))
    assert "--precision fp32 or auto" in str(e.value)
    monkeypatch.setattr(device, "native_bf16", lambda dev: (False, "Tesla T4 has no bf16 tensor cores"))
    assert device.resolve_precision("auto", torch.device("cuda"), announce=False).name == "fp32"


def test_unknown_precision_is_refused():
    with pytest.raises(BertkitError, match="'fp16'.*auto, fp32, bf16"):
        device.resolve_precision("fp16", CPU)


@pytest.mark.parametrize("command", [["fill-mask", "--model", "m", "a [MASK]"], ["embed", "--model", "m", "--input",
                                     "x", "--output", "y.npy"], ["pretrain", "--data", "d", "--out", "o"], ["demo"],
                                     ["finetune", "--task", "sst2", "--model", "m", "--out", "o"],
                                     ["predict", "--model", "m", "--input", "x", "--output", "y"],
                                     ["evaluate", "--task", "sst2", "--model", "m"],
                                     ["attention", "--model", "m", "text", "--out", "a.png"]])
def test_every_model_command_takes_precision_and_threads(command, tmp_path):
    proc = run_cli(*command, "--precision", "fp16", check=False)
    assert_one_line_error(proc, "--precision", "fp16", "auto")
    assert not (tmp_path / "o").exists()
    proc = run_cli(*command, "--threads", "0", check=False)
    assert_one_line_error(proc, "--threads")


@pytest.mark.parametrize("native, expected", [(False, "fp32"), (True, "bf16")])
def test_the_choice_reaches_run_settings_and_metrics(prepared, tmp_path, capability, capsys, native, expected):
    from bertkit.cli import main

    capability(native)
    out = tmp_path / "run"
    assert main([str(a) for a in pretrain_args(prepared, out, "--steps", 4, "--threads", 1, precision="auto")]) == 0
    settings = json.loads((out / "run.json").read_text())
    assert (settings["precision"], settings["precision_used"]) == ("auto", expected)
    assert settings["precision_reason"].startswith("auto: ") and settings["threads"] == 1
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if r.get("split") != "validation"]
    assert train_rows and all(r["precision"] == expected for r in train_rows)
    assert f"precision {expected} (auto: " in capsys.readouterr().err


def test_threads_follow_the_cpus_this_process_may_use(monkeypatch):
    before = torch.get_num_threads()
    try:
        monkeypatch.setattr(device, "available_cpus", lambda: 8)
        monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        assert device.configure_threads() == 8 == torch.get_num_threads()
        monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")  # torchrun: 4 processes share this machine's 8 CPUs
        assert device.configure_threads() == 2
        assert device.configure_threads(3) == 3
        monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the user's own setting stands, unless --threads is given
        torch.set_num_threads(1)
        assert device.configure_threads() == 1 and device.configure_threads(2) == 2
        with pytest.raises(BertkitError, match="--threads 0"):
            device.configure_threads(0)
    finally:
        torch.set_num_threads(before)


def test_oversubscription_note(monkeypatch):
    monkeypatch.setattr(device, "available_cpus", lambda: 2)
    monkeypatch.setattr(device, "busy_cpus", lambda samples=5: 2)
    note = device.oversubscription_note(2)
    assert note.startswith("note: 2 other thread(s)") and "--threads 1 each" in note
    monkeypatch.setattr(device, "busy_cpus", lambda samples=5: 0)
    assert device.oversubscription_note(2) is None
    monkeypatch.setattr(device, "busy_cpus", lambda samples=5: 1)
    assert device.oversubscription_note(1) is None  # one other thread and one of ours fit two CPUs


def test_machine_summary_names_the_cpu_flags():
    line = device.machine_summary()
    for flag in ("avx2", "avx512f", "avx512_bf16", "amx_bf16"):
        assert flag in line
    assert "CPUs available" in line and "oneDNN native bf16" in line


def test_top_level_api_is_lazy():
    code = ("import sys, bertkit; assert 'torch' not in sys.modules, 'import bertkit loaded torch';"
            "names = [bertkit.Tokenizer, bertkit.BertModel, bertkit.Pipeline, bertkit.BertConfig, "
            "bertkit.BertForPreTraining, bertkit.BertForMaskedLM, bertkit.BertForSequenceClassification, "
            "bertkit.BertForTokenClassification, bertkit.BertForQuestionAnswering, bertkit.BertForMultipleChoice];"
            "from bertkit.model import BertModel; assert bertkit.BertModel is BertModel;"
            "assert set(bertkit.__all__) <= set(dir(bertkit))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    proc = subprocess.run([sys.executable, "-c", "import bertkit; bertkit.Nope"], capture_output=True, text=True)
    assert "has no attribute 'Nope'" in proc.stderr


def test_idle_openmp_threads_sleep_only_when_the_machine_is_busy(monkeypatch):
    import bertkit.machine as machine

    monkeypatch.setattr(machine, "busy_cpus", lambda samples=5: 0)
    env = {}
    assert machine.choose_wait_policy(env) is None and env == {}  # quiet: OpenMP's own (spinning) default
    monkeypatch.setattr(machine, "busy_cpus", lambda samples=5: 2)
    assert machine.choose_wait_policy(env) == "PASSIVE" and env == {"OMP_WAIT_POLICY": "PASSIVE"}
    env = {"OMP_WAIT_POLICY": "ACTIVE"}  # the user's choice stands
    assert machine.choose_wait_policy(env) is None and env == {"OMP_WAIT_POLICY": "ACTIVE"}


def test_the_command_decides_the_wait_policy_before_torch_loads():
    code = "import sys, bertkit.cli, bertkit.machine; assert 'torch' not in sys.modules, 'torch loaded before main()'"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
