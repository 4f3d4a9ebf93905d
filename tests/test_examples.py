"""Every example runs to completion on a machine with nothing but the package installed."""

from __future__ import annotations

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
