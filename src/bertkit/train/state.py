"""Run checkpoints: the model as a HuggingFace directory, plus the training state, with no pickle.

    RUN_DIR/checkpoints/step-00000100/
        model/                  config.json, model.safetensors, tokenizer files (loads in transformers)
        optimizer.safetensors   AdamW moments and step counts, keyed "state.{param_index}.{name}"
        trainer_state.json      step, data position, optimizer hyper-parameters, metrics; written last

A checkpoint is written under a temporary name, fsynced, and renamed: a directory called step-N with a
trainer_state.json in it is complete, anything else is debris from a crash and is ignored (and removed
by the next save). trainer_state.json lists the sha256 of every other file; loading checks them, so a
truncated or bit-flipped file is named rather than trained on. The data position needs no RNG state: samples and masks are seeded from
(seed, epoch, index) and dropout from (seed, step, micro-batch), so (epoch, offset) and the step
resume the exact stream.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal

import torch

from bertkit.checkpoint import load_tensors, save_tensors
from bertkit.errors import BertkitError, Interrupted
from bertkit.files import atomic_write_json

STATE_NAME = "trainer_state.json"
OPTIMIZER_NAME = "optimizer.safetensors"
_STEP_DIR = re.compile(r"^step-(\d+)$")


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list[dict]]:
    """Split an optimizer state_dict into tensors (for safetensors) and plain hyper-parameters (for JSON)."""
    sd = optimizer.state_dict()
    tensors = {f"state.{index}.{name}": value for index, entry in sd["state"].items()
               for name, value in entry.items()}
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in sd["param_groups"]]
    return tensors, groups


def load_optimizer_tensors(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor],
                           groups: list[dict]) -> None:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        _, index, name = key.split(".", 2)
        state.setdefault(int(index), {})[name] = value
    for g in groups:
        if "betas" in g:
            g["betas"] = tuple(g["betas"])
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def save_checkpoint(run_dir: str, step: int, model, tokenizer, optimizer, trainer_state: dict,
                    keep: int = 2) -> str:
    """Write checkpoints/step-N atomically; keep the newest `keep` complete ones."""
    root = os.path.join(run_dir, "checkpoints")
    final = os.path.join(root, f"step-{step:08d}")
    tmp = os.path.join(root, f".step-{step:08d}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        os.makedirs(tmp)  # inside the try: a read-only or full checkpoints directory fails right here
        model.save_pretrained(os.path.join(tmp, "model"))
        tokenizer.save_pretrained(os.path.join(tmp, "model"),
                                  model_max_length=model.config.max_position_embeddings)
        tensors, groups = optimizer_tensors(optimizer)
        save_tensors(os.path.join(tmp, OPTIMIZER_NAME), tensors)
        atomic_write_json(os.path.join(tmp, STATE_NAME), {**trainer_state, "step": step, "optimizer_groups": groups,
                                                          "files": _digests(tmp)})
        if os.path.exists(final):  # re-saving the same step (a resumed run that stops where it started)
            _remove_checkpoint(final)
        os.replace(tmp, final)
        _fsync_dir(root)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise BertkitError(f"{final}: could not write checkpoint ({e.strerror or e})",
                           hint="free disk space or fix permissions; the previous checkpoint is intact") from None
    for old in complete_checkpoints(run_dir)[:-keep] if keep > 0 else []:
        _remove_checkpoint(old)
    for name in os.listdir(root):  # debris of interrupted saves
        if name.startswith(".step-") and name != os.path.basename(tmp):
            shutil.rmtree(os.path.join(root, name), ignore_errors=True)
    return final


def _remove_checkpoint(path: str) -> None:
    """Rename to debris, then delete: a kill in the middle of deleting step-N in place left a directory that
    still had its trainer_state.json (so it looked complete) but had lost other files."""
    debris = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.old.tmp")
    shutil.rmtree(debris, ignore_errors=True)
    try:
        os.replace(path, debris)
    except OSError:
        debris = path
    shutil.rmtree(debris, ignore_errors=True)


def _sha256(path: str) -> str:
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _digests(directory: str) -> dict[str, str]:
    """sha256 of every file under `directory`, by relative path: a checkpoint's manifest."""
    return {os.path.relpath(os.path.join(parent, name), directory): _sha256(os.path.join(parent, name))
            for parent, _, names in os.walk(directory) for name in names}


def verify_checkpoint(path: str, state: dict) -> None:
    """Every file the manifest lists is there with the same sha256: a truncated or bit-flipped file is named."""
    for name, digest in state.get("files", {}).items():
        file = os.path.join(path, name)
        if not os.path.isfile(file):
            raise BertkitError(f"{file}: missing from the checkpoint", hint="resume from an older checkpoint "
                               "(delete this one) or start a new --out")
        if _sha256(file) != digest:
            raise BertkitError(f"{file}: damaged (its sha256 differs from the checkpoint's manifest)",
                               hint="delete this checkpoint directory to resume from the one before, "
                                    "or start a new --out")


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def complete_checkpoints(run_dir: str) -> list[str]:
    """Complete checkpoint directories, oldest first."""
    root = os.path.join(run_dir, "checkpoints")
    if not os.path.isdir(root):
        return []
    found = []
    for name in os.listdir(root):
        m = _STEP_DIR.match(name)
        if m and os.path.isfile(os.path.join(root, name, STATE_NAME)):
            found.append((int(m.group(1)), os.path.join(root, name)))
    return [path for _, path in sorted(found)]


def load_checkpoint(path: str, model, optimizer, restore=None) -> dict:
    """Restore model and optimizer from a checkpoint directory; returns the trainer state. restore(model,
    model_dir) loads the weights (an objective's restore, e.g. ELECTRA's generator and discriminator); None: every
    tensor of `model` from PATH/model."""
    from bertkit.checkpoint import load_state, read_weights

    state_path = os.path.join(path, STATE_NAME)
    try:
        with open(state_path, encoding="utf-8") as f:
            state = json.load(f)
    except ValueError:
        raise BertkitError(f"{state_path}: not valid JSON", hint="delete this checkpoint directory to resume from "
                           "the one before, or start a new --out") from None
    verify_checkpoint(path, state)
    if restore is not None:
        restore(model, os.path.join(path, "model"))
    else:
        report = load_state(model, read_weights(os.path.join(path, "model")), source=path)
        if report.missing:
            raise BertkitError(f"{path}: checkpoint lacks {', '.join(report.missing)}",
                               hint="it was written by a different model; start a new --out")
    load_optimizer_tensors(optimizer, load_tensors(os.path.join(path, OPTIMIZER_NAME)), state["optimizer_groups"])
    return state


class StopRequest:
    """SIGINT/SIGTERM ask the loop to save and exit at the next step boundary instead of dying mid-step."""

    def __init__(self):
        self.requested = False
        self.signum: int | None = None  # which signal asked: the exit status is 128 + it
        self._previous = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested:  # a second Ctrl-C: stop now
            raise Interrupted(signum, "stopped at once by a second signal; the newest complete checkpoint is "
                                      "kept. Resume with the same command plus --resume")
        self.requested, self.signum = True, signum

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
