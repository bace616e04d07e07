"""What the tests share: which package they test, the crate's checkout,
and the Rust parent binary (`examples/python_parent.rs`), built once."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Iterator, List, Optional

import pytest

import actix_webworker

HERE = Path(__file__).resolve().parent
# The crate's root: python/tests/../..
CRATE = HERE.parent.parent
DEMO = HERE.parent / "examples" / "demo.py"
# Where the package these tests import lives: the workers they start
# import the same one.
PACKAGE_ROOT = str(Path(actix_webworker.__file__).resolve().parent.parent)

# A cold debug build of the crate and its example takes minutes on a
# loaded machine; a warm one, seconds.
BUILD_TIMEOUT = 1800


def pytest_report_header() -> str:
    return f"actix_webworker {actix_webworker.__version__} from {PACKAGE_ROOT}"


def worker_env() -> dict[str, str]:
    """The environment of a worker started by these tests: this package
    first on its path."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in [PACKAGE_ROOT, env.get("PYTHONPATH")] if p)
    return env


def _build(cargo: str) -> Path:
    """Builds the example; the path of its executable."""
    try:
        built = subprocess.run(
            [cargo, "build", "--example", "python_parent", "--message-format=json-render-diagnostics"],
            cwd=CRATE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            timeout=BUILD_TIMEOUT,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"`cargo build --example python_parent` took over {BUILD_TIMEOUT} s")
    if built.returncode != 0:
        pytest.fail(f"`cargo build --example python_parent` failed:\n{built.stderr[-4000:]}")
    for line in built.stdout.splitlines():
        artifact = json.loads(line)
        if (
            artifact.get("reason") == "compiler-artifact"
            and artifact["target"]["name"] == "python_parent"
            and artifact.get("executable")
        ):
            return Path(artifact["executable"])
    pytest.fail("cargo built no executable named python_parent")


@pytest.fixture(scope="session")
def python_parent() -> Iterator[Path]:
    """The Rust parent binary; the tests that need it are skipped where
    cargo or the crate's checkout is missing."""
    if not sys.platform.startswith("linux"):
        pytest.skip("actix-webworker runs on Linux only")
    if not (CRATE / "Cargo.toml").is_file() or not (CRATE / "examples" / "python_parent.rs").is_file():
        pytest.skip(f"not in the crate's checkout ({CRATE} has no examples/python_parent.rs)")
    cargo = shutil.which("cargo")
    if cargo is None:
        pytest.skip("cargo is not installed, so the Rust parent could not be built")
    yield _build(cargo)


def drive(
    binary: Path, scenarios: List[str], command: Optional[List[str]] = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Runs the parent binary on `scenarios`, with the worker `command`
    (default: this interpreter running `demo.py`)."""
    if command is None:
        command = [sys.executable, str(DEMO)]
    return subprocess.run(
        [str(binary), *scenarios, "--", *command],
        env=worker_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        timeout=timeout,
    )
