"""Shared fixtures: an isolated cache/output root per test session, tiny models built once."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
SAMPLE = REPO / "data" / "sample"

# set before anything imports pvllm/train.py: tests never write into ~/.cache or the repo's outputs/
_SESSION_TMP = Path(os.environ.get("PVLLM_TEST_TMP", "/tmp")) / f"pvllm-tests-{os.getpid()}"
os.environ.setdefault("PVLLM_CACHE", str(_SESSION_TMP / "cache"))
os.environ.setdefault("PVLLM_OUTPUTS", str(_SESSION_TMP / "outputs"))
os.environ["PVLLM_ROOT"] = str(REPO)
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def require_java() -> None:
    """Caption metrics (METEOR, the PTB tokenizer) run Java: without it a test skips (counted), but under CI
    (``CI=true`` or ``PVLLM_REQUIRE_JAVA=1``, which ``.ci/run`` sets) it fails, as the browser tests do."""
    import shutil

    if shutil.which("java") is not None:
        return
    problem = "java is not on PATH (pycocoevalcap needs it: apt-get install default-jre-headless)"
    if os.environ.get("CI", "").lower() in ("true", "1") or os.environ.get("PVLLM_REQUIRE_JAVA") == "1":
        pytest.fail(f"caption-metric tests are required here (CI / PVLLM_REQUIRE_JAVA=1) but {problem}")
    pytest.skip(problem)


@pytest.fixture()
def java():
    """Use in a test (or ``pytestmark = pytest.mark.usefixtures("java")``) that computes caption metrics."""
    require_java()


def requires_shared_data(*parts: str) -> pytest.MarkDecorator:
    path = SHARED_DATA.joinpath(*parts)
    return pytest.mark.skipif(not path.exists(), reason=f"real test data {path} is absent (it lives beside the repo)")


@pytest.fixture(scope="session")
def tiny_model_dir() -> Path:
    """The tiny random Video-LLaVA of conf/model/tiny.yaml, written once per session."""
    from pvllm.models.tiny import make_tiny_video_llava

    out = _SESSION_TMP / "tiny-model"
    if not (out / "config.json").is_file():
        make_tiny_video_llava(out, seed=0)
    return out


@pytest.fixture(scope="session")
def tiny_family_dirs() -> dict[str, Path]:
    """Tiny random models of the new families (pvllm.models.tiny_families), written once per session."""
    from hydra.utils import get_method

    from pvllm.models.families import FAMILIES

    out = {}
    for name in FAMILIES.names():
        if name != "video_llava":
            d = _SESSION_TMP / f"tiny-{name}"
            if not (d / "config.json").is_file():
                get_method(FAMILIES.get(name).tiny)(d, seed=0)
            out[name] = d
    return out


@pytest.fixture(scope="session")
def sample_ds():
    from pvllm.data.dataset import load_pervidcom

    return load_pervidcom(SAMPLE)


def pytest_sessionfinish(session, exitstatus):
    """Remove this session's caches (prepared SmolLM2, tiny models, runs: several GB) unless asked to keep."""
    import shutil

    if not os.environ.get("PVLLM_KEEP_TEST_TMP") and os.environ.get("PYTEST_XDIST_WORKER") is None:
        shutil.rmtree(_SESSION_TMP, ignore_errors=True)
