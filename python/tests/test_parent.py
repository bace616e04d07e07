"""The package's worker (`python/examples/demo.py`) under a real Rust
parent: `examples/python_parent.rs`, built by cargo, which runs each
scenario, checks what the worker did, and prints what it saw."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import List

from conftest import DEMO, drive


def lines(run: subprocess.CompletedProcess[str], scenario: str) -> List[str]:
    """What the parent saw in `scenario`, having checked the run went
    well."""
    assert run.returncode == 0, f"exit code {run.returncode}\n{run.stdout}\n{run.stderr}"
    prefix = f"{scenario}: "
    return [line[len(prefix) :] for line in run.stdout.splitlines() if line.startswith(prefix)]


def line_of(needle: str) -> int:
    """The line of `needle` in demo.py (1-based)."""
    for n, line in enumerate(DEMO.read_text().splitlines(), 1):
        if needle in line:
            return n
    raise AssertionError(f"{needle!r} is not in {DEMO}")


TERMINATED = "terminated: on_close posted Closing, exit code 0"


def test_posts_both_ways(python_parent: Path) -> None:
    said = lines(drive(python_parent, ["posts"]), "posts")
    assert said == [
        'Echoed("héllo wörld ✓")',
        "Sum(42)",
        'Shapes { flag: true, maybe: None, list: ["a", ""], ratio: 0.1 }',
        TERMINATED,
    ]


def test_requests_of_the_parent_answered_by_python(python_parent: Path) -> None:
    said = lines(drive(python_parent, ["requests"]), "requests")
    assert said[:2] == ["Mul(6, 7) = 42", "100 at once, each answered"]
    # A request type the worker has no handler for fails that request.
    assert said[2].startswith('Unserved: Unhandled("no handler for the request type with tag ')
    assert said[3:] == [TERMINATED]


def test_python_asks_the_parent(python_parent: Path) -> None:
    said = lines(drive(python_parent, ["ask"]), "ask")
    assert said[0] == 'Answered("hello py")'
    # A request the parent serves nowhere: `RemoteError` in Python.
    assert said[1].startswith("a request nobody serves: failed: {'Unhandled': ")
    assert said[2:] == [TERMINATED]


def test_descriptors_both_ways(python_parent: Path) -> None:
    said = lines(drive(python_parent, ["fds"]), "fds")
    assert said == [
        'the worker wrote "through a pipe, to Python" into the descriptor sent',
        'the parent read "through a pipe, from Python" from the descriptor received',
        TERMINATED,
    ]


def test_errors_in_handlers_reach_the_parent_with_their_line(python_parent: Path) -> None:
    said = lines(drive(python_parent, ["errors"]), "errors")
    fail, boom = line_of("raise Failure(value)"), line_of('raise RuntimeError("boom")')
    assert said == [
        f'post handler raised "Failure: oops" at demo.py:{fail}',
        f'request handler raised "RuntimeError: boom" at demo.py:{boom}',
        "and the parent heard of it as an error event",
        "the worker goes on: Mul(2, 2) = 4",
        TERMINATED,
    ]


def test_terminate_runs_on_close_then_exits_0(python_parent: Path) -> None:
    assert lines(drive(python_parent, ["terminate"]), "terminate") == [TERMINATED]


def test_close_from_inside_the_worker(python_parent: Path) -> None:
    said = lines(drive(python_parent, ["close"]), "close")
    assert said == ["parent.close(): on_close posted Closing, exit code 0"]


def test_the_exit_code_of_a_worker_that_leaves(python_parent: Path) -> None:
    assert lines(drive(python_parent, ["exit"]), "exit") == ["os._exit(3): exit code 3"]


def test_an_entry_the_worker_does_not_run_is_refused(python_parent: Path) -> None:
    run = drive(python_parent, ["refused"])
    said = lines(run, "refused")
    assert said == ['the worker has no entry named "nope"; it knows ["demo"]']
    assert "no entry 'nope' here" in run.stderr


def test_a_wrapper_between_parent_and_worker(python_parent: Path) -> None:
    # `sh` waits for Python instead of becoming it: the socket's maker is
    # the worker's grandparent, which the worker accepts.
    wrapped = ["sh", "-c", '"$@"; exit $?', "sh", sys.executable, str(DEMO)]
    said = lines(drive(python_parent, ["requests"], command=wrapped), "requests")
    assert said[0] == "Mul(6, 7) = 42"


def test_every_scenario_in_one_run(python_parent: Path) -> None:
    run = drive(python_parent, [])
    assert run.returncode == 0, f"exit code {run.returncode}\n{run.stdout}\n{run.stderr}"
    assert "FAILED" not in run.stderr


def test_a_failed_check_fails_the_parent(python_parent: Path, tmp_path: Path) -> None:
    # A worker that answers wrongly: the parent says which check failed
    # and exits 1 (so that the tests above can trust its exit code 0).
    wrong = tmp_path / "wrong.py"
    wrong.write_text(
        "import os, actix_webworker as aww\n"
        "aww.run(aww.Worker, answers={os.environ['DEMO_MUL']: lambda w, r: 41})\n"
    )
    run = drive(python_parent, ["terminate"], command=[sys.executable, str(wrong)])
    assert run.returncode == 1
    assert "terminate: FAILED: expected 1, got 41" in run.stderr


def test_an_unknown_scenario_is_a_usage_error(python_parent: Path) -> None:
    run = drive(python_parent, ["nonsense"])
    assert run.returncode == 2
    assert "unknown scenario" in run.stderr
