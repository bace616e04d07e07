"""Starting as a worker (PROTOCOL.md, sections 1 and 4): a real worker
process, with the test as its parent, over an inherited socketpair or a
TCP connection back; the test writes the parent's side by hand."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

import pytest

from actix_webworker import _envelope as env
from actix_webworker._frames import Closed, Connection
from actix_webworker._payload import decode, encode
from conftest import worker_env

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux only")

WORKER = """
import os
import actix_webworker as aww

class Echo(aww.Worker):
    def on_message(self, data, fds):
        self.parent.post(data)

    def on_close(self):
        self.parent.post("Closing")

fingerprint = os.environ.get("TEST_FINGERPRINT")
aww.run(Echo, entries=["echo"], fingerprint=int(fingerprint) if fingerprint else None)
"""

PATIENCE = 60


@pytest.fixture
def script(tmp_path: Path) -> Path:
    path = tmp_path / "echo_worker.py"
    path.write_text(WORKER)
    return path


def spawn(
    script: Path, env: Dict[str, str], pass_fds: Tuple[int, ...] = (), stdin: Optional[int] = None
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(script)],
        env={**worker_env(), "ACTIX_WEBWORKER_ENTRY": "echo", **env},
        pass_fds=pass_fds,
        stdin=stdin,
        stderr=subprocess.PIPE,
        text=True,
    )


class Spawned:
    """A worker process on the other end of a socketpair."""

    def __init__(self, script: Path, **env: str) -> None:
        ours, theirs = socket.socketpair()
        ours.settimeout(PATIENCE)
        self.proc = spawn(script, {"ACTIX_WEBWORKER_FD": str(theirs.fileno()), **env}, (theirs.fileno(),))
        theirs.close()
        self.sock = ours
        self.conn = Connection(ours, 1 << 20)

    def hello(self, version: int = env.PROTOCOL_VERSION, codec: int = env.CODEC_JSON, fingerprint: int = 77) -> None:
        fields = env.MAGIC + version.to_bytes(4, "little") + fingerprint.to_bytes(8, "little")
        fields += os.getpid().to_bytes(4, "little") + (bytes([codec]) if version >= 5 else b"")
        fields += bytes([0]) if version >= 6 else b""  # flags: no data follows
        self.conn.send(env.envelope(env.HELLO, 0, fields))

    def read(self) -> Tuple[int, bytes]:
        ((kind, _, rest),) = env.split(self.conn.read_message(), self.conn.max_frame)
        return kind, rest

    def end(self) -> Tuple[int, str]:
        """The exit code and what the worker said on stderr."""
        _, stderr = self.proc.communicate(timeout=PATIENCE)
        self.sock.close()
        return self.proc.returncode, stderr


@pytest.fixture
def workers() -> Iterator[List[Spawned]]:
    """Every worker a test starts is gone after it."""
    started: List[Spawned] = []
    yield started
    for w in started:
        if w.proc.poll() is None:
            w.proc.kill()
            w.proc.communicate()
        w.sock.close()


def test_not_started_as_a_worker(script: Path) -> None:
    proc = spawn(script, {})
    _, stderr = proc.communicate(timeout=PATIENCE)
    assert proc.returncode == 64
    assert "not started as a worker" in stderr


def test_handshake_messages_and_terminate(script: Path, workers: List[Spawned]) -> None:
    w = Spawned(script)
    workers.append(w)
    w.hello(fingerprint=0xDEADBEEF)
    kind, fields = w.read()
    ours = env.read_hello(b"\x01\x00" + fields)
    # The fingerprint echoed, the worker's own pid, JSON.
    assert (kind, ours) == (env.HELLO, env.Hello(env.PROTOCOL_VERSION, 0xDEADBEEF, w.proc.pid, env.CODEC_JSON))
    w.conn.send(env.envelope(env.POST, payload=encode({"Echo": [1, "two"]})))
    assert w.read() == (env.POST, encode({"Echo": [1, "two"]}))
    w.conn.send(env.envelope(env.TERMINATE))
    assert w.read() == (env.POST, b'"Closing"')
    with pytest.raises(Closed):
        w.read()  # the worker's close frame
    assert w.end() == (0, "")


def test_sigterm_runs_on_close_and_exits_143(script: Path, workers: List[Spawned]) -> None:
    # As the Rust runtime: a cluster's cancel or an operator's kill runs the
    # close hook, whose post still reaches the parent, then exits 143.
    w = Spawned(script)
    workers.append(w)
    w.hello()
    assert w.read()[0] == env.HELLO
    # Up and serving: an echo answered.
    w.conn.send(env.envelope(env.POST, payload=encode({"Echo": [1]})))
    assert w.read() == (env.POST, encode({"Echo": [1]}))
    w.proc.send_signal(signal.SIGTERM)
    assert w.read() == (env.POST, b'"Closing"')
    with pytest.raises(Closed):
        w.read()  # the worker's close frame
    code, stderr = w.end()
    assert code == 143, stderr
    assert "Traceback" not in stderr, stderr


@pytest.mark.parametrize(
    ("hello", "why"),
    [
        ({"codec": env.CODEC_BINCODE}, "writes bincode"),
        ({"version": 5}, "protocol version 5"),
        ({"version": 6}, "protocol version 6"),
        ({"version": 7}, "protocol version 7"),
        ({"version": 9}, "protocol version 9"),
    ],
)
def test_a_parent_it_cannot_serve_hears_its_hello_then_it_exits_78(
    script: Path, workers: List[Spawned], hello: Dict[str, int], why: str
) -> None:
    w = Spawned(script)
    workers.append(w)
    w.hello(**hello)
    kind, fields = w.read()
    assert kind == env.HELLO
    assert env.read_hello(b"\x01\x00" + fields).codec == env.CODEC_JSON
    code, stderr = w.end()
    assert code == 78
    assert why in stderr


def test_a_worker_of_other_types_says_so_then_exits_78(script: Path, workers: List[Spawned]) -> None:
    w = Spawned(script, TEST_FINGERPRINT="1")
    workers.append(w)
    w.hello(fingerprint=2)
    _, fields = w.read()
    assert env.read_hello(b"\x01\x00" + fields).fingerprint == 1
    assert w.end()[0] == 78


def test_an_unknown_entry_is_refused_in_json(script: Path, workers: List[Spawned]) -> None:
    w = Spawned(script, ACTIX_WEBWORKER_ENTRY="nope")
    workers.append(w)
    w.hello()
    kind, payload = w.read()
    assert (kind, decode(payload)) == (env.REFUSED, {"entry": "nope", "known": ["echo"]})
    code, stderr = w.end()
    assert code == 64
    assert "no entry 'nope'" in stderr


def test_a_parent_gone_before_the_handshake_is_a_clean_exit(script: Path, workers: List[Spawned]) -> None:
    w = Spawned(script)
    workers.append(w)
    w.sock.shutdown(socket.SHUT_RDWR)
    assert w.end()[0] == 0


def test_a_socket_made_by_another_process_is_refused(script: Path, tmp_path: Path) -> None:
    # A sibling makes the pair (SO_PEERCRED names the maker) and hands both
    # ends over; the worker's parent, this test, did not make it.
    maker = tmp_path / "maker.py"
    maker.write_text(
        "import socket, sys\n"
        "to_test = socket.socket(fileno=int(sys.argv[1]))\n"
        "a, b = socket.socketpair()\n"
        "socket.send_fds(to_test, [b'x'], [a.fileno(), b.fileno()])\n"
        "sys.stdin.read()\n"
    )
    to_maker, to_test = socket.socketpair()
    to_maker.settimeout(PATIENCE)
    sibling = subprocess.Popen(
        [sys.executable, str(maker), str(to_test.fileno())],
        pass_fds=(to_test.fileno(),),
        stdin=subprocess.PIPE,
    )
    try:
        to_test.close()
        _, (ours_fd, theirs_fd), _, _ = socket.recv_fds(to_maker, 1, 2)
        ours = socket.socket(fileno=ours_fd)
        ours.settimeout(PATIENCE)
        proc = spawn(script, {"ACTIX_WEBWORKER_FD": str(theirs_fd)}, (theirs_fd,))
        os.close(theirs_fd)
        conn = Connection(ours, 1 << 20)
        conn.send(env.hello(77, os.getpid()))
        _, stderr = proc.communicate(timeout=PATIENCE)
        assert proc.returncode == 64
        assert f"made by process {sibling.pid}" in stderr
        ours.close()
    finally:
        sibling.communicate(timeout=PATIENCE)
        to_maker.close()


@contextlib.contextmanager
def tcp_worker(script: Path, block: str) -> Iterator[Tuple[subprocess.Popen[str], socket.socket]]:
    """A worker told to connect back over TCP, given secrets `block` on its
    stdin: the process, and its connection (accepted, closed after)."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        server.settimeout(PATIENCE)
        port = server.getsockname()[1]
        env_ = {"ACTIX_WEBWORKER_CONNECT": f"127.0.0.1:{port}", "ACTIX_WEBWORKER_SECRETS": "stdin"}
        proc = spawn(script, env_, stdin=subprocess.PIPE)
        try:
            assert proc.stdin is not None
            proc.stdin.write(block)
            proc.stdin.flush()
            sock, _ = server.accept()
            sock.settimeout(PATIENCE)
            with sock:
                yield proc, sock
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()


def test_over_tcp_the_token_comes_first(script: Path) -> None:
    token = secrets.token_hex(32)
    with tcp_worker(script, f"ACTIX_WEBWORKER_TOKEN={token}\nSOMETHING_LATER=1\n\n") as (proc, sock):
        # One whole frame, its 7-bit length 66: Auth, no
        # descriptors, the 64 hex characters in ASCII.
        assert sock.recv(2, socket.MSG_WAITALL) == b"\x82\x42"
        assert sock.recv(66, socket.MSG_WAITALL) == b"\x0c\x00" + token.encode()
        conn = Connection(sock, 1 << 20, remote=True)
        conn.send(env.hello(5, os.getpid()))
        ((kind, _, _),) = env.split(conn.read_message(), conn.max_frame)
        assert kind == env.HELLO
        conn.send(env.envelope(env.TERMINATE))
        assert env.split(conn.read_message(), conn.max_frame) == [(env.POST, 0, b'"Closing"')]
        sock.close()
        _, stderr = proc.communicate(timeout=PATIENCE)
        assert proc.returncode == 0, stderr


def test_over_tcp_without_a_token_it_says_so(script: Path) -> None:
    env_ = {"ACTIX_WEBWORKER_CONNECT": "127.0.0.1:9", "ACTIX_WEBWORKER_SECRETS": "stdin"}
    proc = spawn(script, env_, stdin=subprocess.PIPE)
    _, stderr = proc.communicate("\n", timeout=PATIENCE)
    assert proc.returncode == 64
    assert "no token on stdin" in stderr


def test_over_tcp_a_worker_given_a_proof_serves_only_a_parent_that_sends_it(script: Path) -> None:
    token, proof = secrets.token_hex(32), secrets.token_hex(32)
    block = f"ACTIX_WEBWORKER_TOKEN={token}\nACTIX_WEBWORKER_PARENT_PROOF={proof}\n\n"
    for first, served in [(proof, True), (secrets.token_hex(32), False), (None, False)]:
        with tcp_worker(script, block) as (proc, sock):
            # Its token, asking the parent to prove itself (bit 0 of the
            # Auth message's second byte).
            assert sock.recv(2, socket.MSG_WAITALL) == b"\x82\x42"
            assert sock.recv(66, socket.MSG_WAITALL) == b"\x0c\x01" + token.encode()
            conn = Connection(sock, 1 << 20, remote=True)
            if first is not None:
                conn.send(env.envelope(env.AUTH, payload=first.encode()))
            # Without a proof first, a parent's hello (replayed by whoever
            # holds the port) is no proof.
            conn.send(env.hello(5, os.getpid()))
            if served:
                ((kind, _, _),) = env.split(conn.read_message(), conn.max_frame)
                assert kind == env.HELLO
                conn.send(env.envelope(env.TERMINATE))
                assert env.split(conn.read_message(), conn.max_frame) == [(env.POST, 0, b'"Closing"')]
            else:
                # Nothing at all comes back: the connection ends.
                assert sock.recv(1) == b""
            sock.close()
            _, stderr = proc.communicate(timeout=PATIENCE)
            if served:
                assert proc.returncode == 0, stderr
            else:
                assert proc.returncode == 64, stderr
                assert "did not prove itself this worker's parent" in stderr
