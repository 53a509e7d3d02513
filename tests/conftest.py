"""Shared fixtures: an isolated cache/output root per test session, tiny models built once."""

from __future__ import annotations

import contextlib
import json
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
    from pvllm.utils.locks import file_lock

    with file_lock(_SESSION_TMP / f".{name}.lock"):
        yield


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
    """Tiny random models of the new families (pvllm.models.tiny), written once per session."""
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


# --- the heavy tests, pytest-xdist groups and order ---------------------------------------------------
# HEAVY: tests (node id prefixes) that train, start processes or load a real model, seconds to minutes each
# (`--durations` of a full run), heaviest first. They get the `heavy` marker (`make test-quick` leaves them
# out), and under xdist they are queued first, so that the longest do not start last and keep one worker busy
# after the other has finished.
HEAVY = (
    "tests/test_real_danmaku.py::test_shrunk_real_danmaku_text_run",  # ~8 min on a loaded machine
    "tests/test_deepspeed.py::",  # the TWO_PROCESSES group below starts with these
    "tests/test_zero3_configure_model.py::",
    "tests/test_ddp_faults.py::",
    "tests/test_ddp.py::",
    "tests/test_packing.py::test_train_py_packed_ddp_two_processes_same_steps",
    "tests/test_train_metrics.py::test_train_loss_is_the_mean_over_the_window_and_ranks",
    "tests/test_secrets.py::test_openai_generator_and_rater_never_write_the_key",
    "tests/test_secrets.py::test_submitit_multirun_keeps_url_credentials_out_of_pickles_and_saved_configs",
    "tests/test_secrets.py::test_gemini_generator_and_rater_never_write_the_key",
    "tests/test_train.py::",
    "tests/test_experiment_smoke.py::test_experiment_runs_with_debug_smoke",
    "tests/test_generators_multirun.py::",
    "tests/test_wandb.py::",
    "tests/test_master_weights.py::",
    "tests/test_train_metrics.py::test_requeued_slurm_job_continues_its_wandb_run",
    "tests/bad_inputs/test_kill9.py::",
    "tests/test_pvllm_small.py::",
    "tests/bad_inputs/test_disk_full.py::test_disk_full_while_writing_predictions_then_scores_then_rerun",
    "tests/bad_inputs/test_evaluation_inputs.py::test_unreadable_target_video_is_a_counted_failure",
    "tests/test_build.py::test_cli_on_real_danmaku_subset_with_real_model",
    "tests/test_ranking_scale.py::test_packed_scores_equal_one_full_sequence_per_candidate",
    "tests/test_vision_encoders.py::",
    "tests/bad_inputs/test_comments_only.py::",
    "tests/test_local_hf_rater.py::test_smollm2_",
    "tests/test_local_hf_rater.py::test_prefix_reuse_gives_the_same_reply",
    "tests/bad_inputs/test_kill_during_save.py::",
    "tests/test_identity_reuse.py::test_resume_refuses_another_",
    "tests/test_experiments.py::test_fig6_sweep_plots_the_summaries",
    "tests/test_config_keys.py::test_every_documented_command_composes",
    "tests/test_text_only.py::test_greedy_batch_size_one_and_n_identical_and_pinned",
    "tests/test_text_only.py::test_default_sampling_is_recorded_and_seeded_by_sample_ids",
    "tests/test_text_only.py::test_prompt_has_history_and_title_in_the_chat_template",  # these 3 load SmolLM2 too
    "tests/test_text_only.py::test_hydra_config",
    "tests/test_text_only.py::test_over_long_history_is_cut_to_max_input_tokens",
    "tests/test_ranking.py::test_ranking_history_experiment_is_one_command",
    "tests/test_experiments.py::test_table5_and_appA_print_the_run_summaries",
    "tests/test_hf_video_generator.py::test_every_family_reads_the_same_histories_in_one_multirun",
    "tests/test_protocols.py::test_retrieved_history_is_top_k_by_title_similarity_with_minilm",
    "tests/test_slurm.py::",
    "tests/bad_inputs/test_train_inputs.py::test_unknown_config_name_lists_the_valid_names_and_group_null",
    "tests/test_family_lora.py::",
)
# Under xdist each test is its own unit of work unless it carries an xdist_group mark: a group's tests run on
# one worker, in collection order. Groups are set here rather than in each file:
# - TWO_PROCESSES: tests that start 2 training processes (DDP, DeepSpeed) share one group, so that no more
#   than one such run (plus the other worker's test) competes for the 2 cores at a time;
# - SHARED: tests that share one service or each other's outputs, one group per entry;
# - any other module that defines a module-, class- or session-scoped fixture (a trained run, a loaded model,
#   a server, a browser) is one group for the tests that use it: built once, on one worker, and not torn
#   down and rebuilt when another module's test runs between two of its tests.
TWO_PROCESSES = (
    "tests/test_deepspeed.py::",
    "tests/test_zero3_configure_model.py::",
    "tests/test_ddp_faults.py::",
    "tests/test_ddp.py::",
    "tests/test_packing.py::test_train_py_packed_ddp_two_processes_same_steps",
    "tests/test_train_metrics.py::test_train_loss_is_the_mean_over_the_window_and_ranks",
)
SHARED = {
    "tests/test_slurm.py::": "slurm",  # one 2-CPU node: jobs of two tests at once would queue behind each other
}


def _prefix_index(nodeid: str, prefixes) -> int | None:
    return next((i for i, p in enumerate(prefixes) if nodeid.startswith(p)), None)


def _module_scoped_fixtures(item: pytest.Item, module: str) -> bool:
    info = getattr(item, "_fixtureinfo", None)
    defs = info.name2fixturedefs.values() if info is not None else ()
    return any(d.scope != "function" and d.baseid == module for seq in defs for d in seq)


def _xdist_group(item: pytest.Item) -> str | None:
    if _prefix_index(item.nodeid, TWO_PROCESSES) is not None:
        return "two-processes"
    shared = next((g for p, g in SHARED.items() if item.nodeid.startswith(p)), None)
    module = item.nodeid.split("::", 1)[0]
    return shared or (module if _module_scoped_fixtures(item, module) else None)


_GROUPS_FILE = _SESSION_TMP / "xdist-groups.json"  # test id -> group, written by the workers for the controller


def pytest_configure(config):
    if getattr(config.option, "dist", "no") == "loadgroup":
        config.option.loadscopereorder = False  # keep the heavy-first order of the workers' collection


@pytest.hookimpl(optionalhook=True)  # a hook of pytest-xdist: unknown when it is not installed
def pytest_xdist_make_scheduler(config, log):
    """``--dist loadgroup`` by the groups of _xdist_group. xdist 3.8 marks a group by appending it to the test
    id, which pytest 9 ignores (ids are no longer stored as a string), so its loadgroup would split groups:
    the workers write each grouped test's group into _GROUPS_FILE and this scheduler reads them."""
    if getattr(config.option, "dist", "no") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class GroupScheduling(LoadScopeScheduling):
        groups: dict[str, str] | None = None

        def _split_scope(self, nodeid: str) -> str:
            if self.groups is None:  # first called once every worker has collected (and written the file)
                self.groups = json.loads(_GROUPS_FILE.read_text())
            if nodeid.rfind("@") > nodeid.rfind("]"):  # an xdist that can append the group to the id
                return nodeid.rsplit("@", 1)[1]
            return self.groups.get(nodeid, nodeid)

    return GroupScheduling(config, log)


def pytest_itemcollected(item):
    # marks set as each test is collected, before any collection_modifyitems reads them
    if _prefix_index(item.nodeid, HEAVY) is not None:
        item.add_marker("heavy")
    if _WORKER is not None and item.get_closest_marker("xdist_group") is None:
        group = _xdist_group(item)
        if group is not None:
            item.add_marker(pytest.mark.xdist_group(group))


def pytest_collection_modifyitems(config, items):
    if _WORKER is None:
        return  # a plain run keeps the files' order

    def rank(item: pytest.Item) -> int:
        i = _prefix_index(item.nodeid, HEAVY)
        return len(HEAVY) if i is None else i

    # a group starts where its heaviest test ranks, its tests kept in their order
    first = {}
    for item in items:
        m = item.get_closest_marker("xdist_group")
        key = m.args[0] if m else item.nodeid
        first[key] = min(first.get(key, len(HEAVY)), rank(item))
    items.sort(key=lambda it: first[m.args[0] if (m := it.get_closest_marker("xdist_group")) else it.nodeid])
    groups = {it.nodeid: m.args[0] for it in items if (m := it.get_closest_marker("xdist_group"))}
    tmp = _GROUPS_FILE.with_name(f"{_GROUPS_FILE.name}.{_WORKER}")
    _SESSION_TMP.mkdir(parents=True, exist_ok=True)
    tmp.write_text(json.dumps(groups))
    os.replace(tmp, _GROUPS_FILE)  # every worker writes the same groups


# PVLLM_TEST_TIMELINE=FILE: one line per test (worker, start, end, CPU seconds of the worker and the
# processes it waited for, node id) appended to FILE, to see which worker runs what when and which tests
# wait rather than compute (the critical path of `make test` under xdist); unset: nothing is written.
@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    path = os.environ.get("PVLLM_TEST_TIMELINE")
    if not path:
        yield
        return
    import resource
    import time

    def cpu() -> float:
        return sum(r.ru_utime + r.ru_stime for r in (resource.getrusage(resource.RUSAGE_SELF),
                                                      resource.getrusage(resource.RUSAGE_CHILDREN)))

    t0, c0 = time.time(), cpu()
    yield
    with open(path, "a") as f:
        f.write(f"{_WORKER or 'main'}\t{t0:.1f}\t{time.time():.1f}\t{cpu() - c0:.1f}\t{item.nodeid}\n")
