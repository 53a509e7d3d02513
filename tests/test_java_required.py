"""Caption-metric tests need Java: without it they skip on a workstation but fail under CI (issue 21)."""

import shutil

import pytest

from tests.conftest import require_java


@pytest.fixture()
def no_java(monkeypatch):
    real = shutil.which
    monkeypatch.setattr(shutil, "which", lambda name, *a, **kw: None if name == "java" else real(name, *a, **kw))
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("PVLLM_REQUIRE_JAVA", raising=False)


def test_missing_java_skips_outside_ci(no_java):
    with pytest.raises(pytest.skip.Exception, match="default-jre-headless"):
        require_java()


@pytest.mark.parametrize("env", [("CI", "true"), ("PVLLM_REQUIRE_JAVA", "1")])
def test_missing_java_fails_under_ci(no_java, monkeypatch, env):
    monkeypatch.setenv(*env)
    with pytest.raises(pytest.fail.Exception, match="required here"):
        require_java()


def test_present_java_passes(monkeypatch):
    monkeypatch.setenv("CI", "true")
    if shutil.which("java") is None:
        pytest.skip("no java here: the other tests cover the missing case")
    require_java()  # no exception
