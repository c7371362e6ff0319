"""Files users hand us and files we write: strict UTF-8 reading with positions, atomic writes.

Every file bertkit writes goes through `atomic_write`: written to a temporary name in the same
directory, fsynced, then renamed over the target, so a crash leaves the old file or the new one,
never half of either.
"""

from __future__ import annotations

import json
import os
import tempfile

from bertkit.errors import BertkitError


_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write(path: str, write) -> None:
    """Call write(tmp_path), then move tmp_path over `path` in one rename."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=directory)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files (and some writers recreate them): the usual mode
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(e, OSError) and e.filename == tmp:  # name the file the user asked for, not our temporary
            raise OSError(e.errno, e.strerror, path) from None
        raise


def atomic_write_text(path: str, text: str) -> None:
    def write(tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)

    atomic_write(path, write)


def atomic_write_json(path: str, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, default=os.fspath) + "\n")  # paths as strings


def check_output_dir(path: str, option: str = "--out", hint: str = "choose a new --out or delete it",
                     reuse: bool = False) -> None:
    """Refuse an output directory that would overwrite something: a file at that path, or (unless
    `reuse`, e.g. --resume or --force) a directory that is not empty. Called before any work is done."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise BertkitError(f"{option} {path}: exists and is not a directory", hint=f"choose another {option}")
    if not reuse and os.path.isdir(path) and os.listdir(path):
        raise BertkitError(f"{option} {path}: already exists and is not empty", hint=hint)


def check_output_file(path: str, option: str = "--output") -> None:
    """Refuse an output file that cannot be written, before any work is done: a directory at that path, a
    file where its directory should be, or a directory we may not write into."""
    if os.path.isdir(path):
        raise BertkitError(f"{option} {path}: is a directory, expected a file name",
                           hint=f"name a file inside it, e.g. {option} {os.path.join(path, 'NAME')}")
    parent = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(parent):  # atomic_write creates missing directories: check the nearest that exists
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise BertkitError(f"{option} {path}: {parent} is a file, not a directory", hint=f"choose another {option}")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise BertkitError(f"{option} {path}: no permission to write in {parent}", hint=f"choose another {option}")


def read_text(path: str) -> str:
    """A whole UTF-8 text file; invalid bytes are reported with their line and byte offset."""
    if not os.path.exists(path):
        raise BertkitError(f"{path}: file not found", hint="check the path")
    if os.path.isdir(path):
        raise BertkitError(f"{path}: is a directory, expected a text file", hint="pass a file")
    with open(path, "rb") as f:
        data = f.read()
    try:
        return data.decode("utf-8-sig") if data.startswith(b"\xef\xbb\xbf") else data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise BertkitError(f"{path}: line {line}: invalid UTF-8 at byte offset {e.start}",
                           hint="convert the file to UTF-8 (e.g. iconv -f latin1 -t utf-8)") from None


def read_lines(path: str, skip_empty: bool = True) -> list[str]:
    """Lines of a UTF-8 text file (one item per line); an input with no lines is an error."""
    lines = [line.rstrip("\r") for line in read_text(path).split("\n")]
    if lines and not lines[-1]:
        lines.pop()  # the newline that ends the last line
    if skip_empty:
        lines = [line for line in lines if line.strip()]
    if not any(line.strip() for line in lines):
        raise BertkitError(f"{path}: file is empty", hint="give one text per line")
    return lines


def json_object(path: str, number: int, line: str) -> dict:
    """One line of a JSON Lines file, which must be an object; errors name the file, line and column."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as e:
        raise BertkitError(f"{path}: line {number}, column {e.colno}: invalid JSON: {e.msg}",
                           hint="write one JSON object per line (JSON Lines), not one JSON array") from None
    if not isinstance(record, dict):
        raise BertkitError(f"{path}: line {number}: expected a JSON object, found {type(record).__name__}",
                           hint='write one object per line, e.g. {"text": "..."}')
    return record
