"""The workspace's scheduling hooks (the root `conftest.py`), run on a small suite of their own in
a pytest of its own: a group's tests run together, and the processes a group's session fixture
started stop when the group is done, not at the end of the session."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CONFTEST = f"""
import importlib.util
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location("workspace_conftest", {str(ROOT / "conftest.py")!r})
_workspace = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_workspace)
pytest_collection_modifyitems = _workspace.pytest_collection_modifyitems
pytest_runtest_teardown = _workspace.pytest_runtest_teardown

EVENTS = Path(__file__).with_name("events.txt")


def note(event):
    with EVENTS.open("a") as events:
        events.write(event + "\\n")


@pytest.fixture(scope="session")
def platform():
    note("platform started")
    yield "running"
    note("platform stopped")
"""

USES_PLATFORM = """
from conftest import note


def test_{name}(platform):
    note("{name}")
"""

WITHOUT_PLATFORM = """
from conftest import note


def test_{name}():
    note("{name}")
"""


def test_a_groups_tests_run_together_and_its_session_processes_stop_when_it_ends(
    tmp_path: Path,
) -> None:
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "conftest.py").write_text(textwrap.dedent(CONFTEST))
    suite = tmp_path / "suite" / "tests"
    suite.mkdir(parents=True)
    # Collected in this order: a platform test, a file without it, a platform test again.
    (suite / "test_a.py").write_text(USES_PLATFORM.format(name="first_with_platform"))
    (suite / "test_m.py").write_text(WITHOUT_PLATFORM.format(name="without_platform"))
    (suite / "test_z.py").write_text(USES_PLATFORM.format(name="second_with_platform"))

    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=tmp_path,
        # Only this suite's conftest: none of the plugins installed in the workspace.
        env={**os.environ, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert run.returncode == 0, run.stdout + run.stderr
    assert (tmp_path / "events.txt").read_text().split("\n")[:-1] == [
        "platform started",
        "first_with_platform",
        "second_with_platform",
        "platform stopped",
        "without_platform",
    ]
