"""The README's Python is Python: every `python` block compiles, and
passes `mypy --strict` against the installed package where mypy is
installed."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import List

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


def blocks() -> List[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_the_readme_has_python() -> None:
    assert len(blocks()) >= 1


def test_every_python_block_compiles() -> None:
    for n, block in enumerate(blocks()):
        compile(block, f"README.md, python block {n}", "exec")


def test_every_python_block_passes_mypy_strict(tmp_path: Path) -> None:
    pytest.importorskip("mypy", reason="mypy is not installed, so the README was not type-checked")
    files = []
    for n, block in enumerate(blocks()):
        path = tmp_path / f"readme_{n}.py"
        path.write_text(block)
        files.append(str(path))
    checked = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--cache-dir", str(tmp_path / "cache"), *files],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=600,
    )
    assert checked.returncode == 0, checked.stdout
