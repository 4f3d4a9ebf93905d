"""Every example runs to completion on a machine with nothing but the package installed."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.mark.timeout(120)
def test_push_and_fetch_example() -> None:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "push_and_fetch.py")], capture_output=True, text=True, timeout=100
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("fetched ") == 4
    assert "fetched SendEmail('ada@example.com', 'Welcome')" in result.stdout
    assert "rejected by PUSHB: none" in result.stdout


@pytest.mark.timeout(180)
def test_deflow_demo_runs_a_workflow_on_faktory() -> None:
    """The README's main job: in-process Faktory, private Redis, a prefork Celery worker, a three-step workflow."""
    environ = {key: value for key, value in os.environ.items() if key != "REDIS_URL"}
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "deflow_demo.py")],
        capture_output=True,
        text=True,
        timeout=160,
        env=environ,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    assert "(in-process Faktory-compatible server)" in out
    assert "progress: 100.00% - 34/34" in out
    assert "): done" in out
    assert re.search(r"step 1 +FetchPages +24 tasks, 1 retried", out)
    assert re.search(r"step 1\.1 +Translate +7 tasks, 0 retried", out)
    assert re.search(r"step 2 +Publish +3 tasks, 0 retried", out)
    assert "7 -> {'page': 7, 'words': 107}  (after 1 failed attempt)" in out
    assert out.index("FetchPages") < out.index("Translate") < out.index("Publish")
