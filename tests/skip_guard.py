"""Pytest hooks that fail a run in which a test skipped, unless it is an opt-in ComfyUI test.

A skipped test did not run, so on a clone where a fixture or dependency is missing the suite would pass without
testing anything; the only skips allowed are the ``integration`` tests while COMFYUI_DIR is unset.
``tests/conftest.py`` re-exports these hooks.
"""
from __future__ import annotations

import os

import pytest

#: ``nodeid: reason`` of each test that skipped although it is not an opt-in ComfyUI test.
UNEXPECTED_SKIPS: list[str] = []


def _opt_in(report: pytest.TestReport) -> bool:
    return "integration" in report.keywords and not os.environ.get("COMFYUI_DIR")


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped and not hasattr(report, "wasxfail") and not _opt_in(report):
        reason = report.longrepr[-1] if isinstance(report.longrepr, tuple) else ""
        UNEXPECTED_SKIPS.append(f"{report.nodeid}: {reason}")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if UNEXPECTED_SKIPS and exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter) -> None:
    if UNEXPECTED_SKIPS:
        terminalreporter.section("unexpected skips (only the opt-in ComfyUI tests may skip)", red=True)
        for line in UNEXPECTED_SKIPS:
            terminalreporter.line(line)
