"""Test-suite policy: in CI (CI=true) a skipped test is a failure, heavy tests included."""

from __future__ import annotations

import os

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if IN_CI and report.skipped and not hasattr(report, "wasxfail"):
        # A skip hides a failure in CI: the heavy tests (DeepSpeed, Slurm, sandbox) must run there.
        report.outcome = "failed"
        report.longrepr = f"skipped in CI (CI=true), which counts as a failure: {report.longrepr}"


@pytest.fixture
def one_thread():
    """Tiny models on a shared machine: more torch threads only contend (seconds a step instead of ms)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
