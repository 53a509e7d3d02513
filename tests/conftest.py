"""Shared fixtures: an isolated cache/output root per test session, tiny models built once."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
SAMPLE = REPO / "data" / "sample"

# set before anything imports pvllm/train.py: tests never write into ~/.cache or the repo's outputs/.
# Under pytest-xdist (`make test` runs -n 2) the controller imports this file first and its workers inherit
# its environment: one session directory for all of them, so the cache (tiny models, prepared SmolLM2, the
# smoke preset's models) is built once and shared (writers lock, see built_once); outputs stay per worker.
_WORKER = os.environ.get("PYTEST_XDIST_WORKER")  # gw0, gw1, ... in an xdist worker; None otherwise
_SESSION_TMP = Path(os.environ.setdefault("PVLLM_TEST_SESSION_DIR", str(
    Path(os.environ.get("PVLLM_TEST_TMP", "/tmp")) / f"pvllm-tests-{os.getpid()}")))
os.environ.setdefault("PVLLM_CACHE", str(_SESSION_TMP / "cache"))
os.environ.setdefault("PVLLM_OUTPUTS", str(_SESSION_TMP / "outputs"))
if _WORKER and os.environ["PVLLM_OUTPUTS"] == str(_SESSION_TMP / "outputs"):
    os.environ["PVLLM_OUTPUTS"] = str(_SESSION_TMP / f"outputs-{_WORKER}")
if _WORKER:  # workers share the 2 cores: one torch/OpenMP thread each (and in the runs they start)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
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


@contextlib.contextmanager
def built_once(name: str) -> Iterator[None]:
    """Hold the session's lock ``name`` while checking for and writing a shared directory: xdist workers
    share the session directory, so the first builds it and the others wait, then reuse it."""
    _SESSION_TMP.mkdir(parents=True, exist_ok=True)
    with open(_SESSION_TMP / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@pytest.fixture(scope="session")
def tiny_model_dir() -> Path:
    """The tiny random Video-LLaVA of conf/model/tiny.yaml, written once per session."""
    from pvllm.models.tiny import make_tiny_video_llava

    out = _SESSION_TMP / "tiny-model"
    with built_once(out.name):
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
            with built_once(d.name):
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


# --- pytest-xdist (`make test` runs `-n 2 --dist loadgroup`) -------------------------------------------
# Each test is its own unit of work unless it carries an xdist_group mark: the tests of one group run on one
# worker, in collection order. Groups are set here rather than in each file:
# - a module that defines a module-, class- or session-scoped fixture (a trained run, a loaded model, a
#   server, a browser) is one group: its fixtures are built once, on one worker, and not torn down and rebuilt
#   when another module's test runs between two of its tests;
# - the modules of SHARED_GROUPS form one group each (runs that read each other's outputs, or that start two
#   processes each and would oversubscribe the 2 cores if they ran side by side).
SHARED_GROUPS: dict[str, str] = {}


def _module_scoped_fixtures(item: pytest.Item) -> bool:
    module = item.nodeid.split("::", 1)[0]
    info = getattr(item, "_fixtureinfo", None)
    defs = info.name2fixturedefs.values() if info is not None else ()
    return any(d.scope != "function" and d.baseid == module for seq in defs for d in seq)


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook appends the group to each test id
def pytest_collection_modifyitems(config, items):
    if not config.pluginmanager.hasplugin("xdist"):
        return
    for item in items:
        if item.get_closest_marker("xdist_group") is not None:
            continue
        module = item.nodeid.split("::", 1)[0]
        group = SHARED_GROUPS.get(Path(module).name)
        if group is None and _module_scoped_fixtures(item):
            group = module
        if group is not None:
            item.add_marker(pytest.mark.xdist_group(group))
