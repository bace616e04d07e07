"""Starting as a worker (PROTOCOL.md, sections 1 and 4): the environment
the parent sets, the socket it hands over or the TCP connection back to
it (with the launch's token, in the clear or inside pinned TLS), the
handshake, and the end.
"""

from __future__ import annotations

import os
import signal
import socket
import struct
import sys
from typing import Callable, Iterable, Iterator, Mapping, NoReturn, Optional, Tuple, TypeVar

from . import _envelope as env
from ._frames import Closed, Connection
from ._payload import Json, decode, encode
from ._worker import Parent, Worker, _Runtime

W = TypeVar("W", bound=Worker)

# Exit codes, the Rust worker runtime's (PROTOCOL.md, section 7).
EXIT_NOT_A_WORKER = 64
EXIT_IO = 74
EXIT_MISMATCH = 78
EXIT_SIGTERM = 143


class _Terminated(BaseException):
    """SIGTERM came (a cluster's cancel, an operator's `kill`): the worker
    ends as the Rust runtime does, its `on_close` run, with code 143. Not
    an `Exception`: a handler's own `except Exception` does not take it
    for an error of its own."""


def _on_sigterm(signum: int, frame: object) -> None:
    raise _Terminated()

DEFAULT_MAX_MESSAGE = 64 << 20


def _say(text: str) -> None:
    print(f"actix_webworker: {text}", file=sys.stderr, flush=True)


def run(
    worker: Callable[[Parent], W],
    answers: Optional[Mapping[str, Callable[[W, Json], Json]]] = None,
    entries: Optional[Iterable[str]] = None,
    fingerprint: Optional[int] = None,
    streams: Optional[Mapping[str, Callable[[W, Json], Iterable[Json]]]] = None,
) -> NoReturn:
    """Runs this process as a worker of the parent that started it, and
    exits when the worker ends (with code 0 after a clean end).

    - `worker`: the `Worker` subclass to run (or any callable that takes
      the `Parent` and returns a `Worker`).
    - `answers`: the handlers of the parent's requests, by their wire
      name: the name the Rust protocol declares for the request
      (`declare.request::<Mul>().named("mul")`), else the Rust path of its
      type (`wire_name::<P, R>()`). Each is called with the worker and the
      request's value and returns the answer's value.
    - `entries`: the entry names this worker runs as (default: any). When
      the parent asks for another, the worker refuses it, as a Rust worker
      refuses an entry it does not have, and exits with code 64.
    - `fingerprint`: what to say in the hello (default: the parent's,
      echoed: the worker takes on reading and writing the parent's types).
    - `streams`: the handlers of the parent's streamed requests
      (`declare.stream::<Rows>().named("rows")` in Rust), by wire name.
      Each is called with the worker and the request's value and returns
      (or is a generator of) the items' values, sent as the parent's
      window allows; a cancel from the parent closes it (PROTOCOL.md,
      section 9).

    Exits with code 64 when not started by a parent (or by another
    process than the socket's maker), 74 when the connection cannot be
    made, 78 when the handshake fails."""
    fd = os.environ.pop("ACTIX_WEBWORKER_FD", None)
    connect = os.environ.pop("ACTIX_WEBWORKER_CONNECT", None)
    on_stdin = os.environ.pop("ACTIX_WEBWORKER_SECRETS", None) == "stdin"
    entry = os.environ.pop("ACTIX_WEBWORKER_ENTRY", None)
    max_message = int(os.environ.pop("ACTIX_WEBWORKER_MAX_MESSAGE", DEFAULT_MAX_MESSAGE))
    if connect is not None:
        token, pin, proof = _read_secrets() if on_stdin else ("", None, None)
        conn = _connect(connect, (token, pin, proof), max_message)
    elif fd is not None:
        conn = Connection(socket.socket(fileno=int(fd)), max_message)
    else:
        _say("not started as a worker (no ACTIX_WEBWORKER_FD or ACTIX_WEBWORKER_CONNECT)")
        sys.exit(EXIT_NOT_A_WORKER)
    if entries is not None:
        known = sorted(entries)
        if entry not in known:
            _refuse(conn, entry or "", known)
    try:
        data = _handshake(conn, fingerprint)
    except Closed:
        sys.exit(0)  # the parent went away before we were up
    except env.ProtocolError as e:
        _say(f"handshake with the parent failed: {e}")
        conn.close()
        sys.exit(EXIT_MISMATCH)
    sys.exit(_serve(conn, worker, answers or {}, data, streams or {}))


def _serve(
    conn: Connection,
    make: Callable[[Parent], W],
    answers: Mapping[str, Callable[[W, Json], Json]],
    data: Json = None,
    streams: Mapping[str, Callable[[W, Json], Iterable[Json]]] = {},
) -> int:
    """Runs the worker until its end, then `on_close`; the exit code (143
    after SIGTERM)."""
    code = 0
    runtime = _Runtime(conn, make, answers, data, streams)
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        runtime.serve()
        if runtime.closing:
            runtime.send(env.CLOSING)
    except _Terminated:
        code = EXIT_SIGTERM
    except env.ProtocolError as e:
        # As the Rust runtime does: broken framing from the parent ends
        # the worker as a Terminate would (the parent kills it anyway).
        _say(f"the parent broke the protocol: {e}")
    except OSError as e:
        _say(f"the connection to the parent failed: {e}")
    # A second SIGTERM during the close hook is the default's: the end.
    signal.signal(signal.SIGTERM, previous)
    try:
        runtime.worker.on_close()
    except Exception as exc:  # noqa: BLE001 - reported, then the exit
        try:
            runtime.report(exc)
        except OSError:
            pass
    conn.close()
    return code


def _refuse(conn: Connection, entry: str, known: list[str]) -> NoReturn:
    """Instead of a hello: the refusal, in the codec the parent named."""
    try:
        conn.read_message()
        refusal = {"entry": entry, "known": known}
        conn.send(env.envelope(env.REFUSED, payload=encode(refusal)))
    except (Closed, OSError, env.ProtocolError):
        pass
    conn.close()
    _say(f"no entry {entry!r} here (this worker runs {', '.join(known) or 'none'})")
    sys.exit(EXIT_NOT_A_WORKER)


def _handshake(conn: Connection, fingerprint: Optional[int]) -> Json:
    """Reads the parent's hello and answers with ours (whatever we make of
    theirs, so that both can say what is wrong), then the worker's data
    when the parent's hello says it follows; returns the data (its JSON
    value, or None). Exits with the runtime's code when the hellos do not
    match, or when the socket's other end is not our parent."""
    theirs = env.read_hello(conn.read_message())
    ours = theirs.fingerprint if fingerprint is None else fingerprint
    conn.send(env.hello(ours, os.getpid()))
    if theirs.version != env.PROTOCOL_VERSION:
        _mismatch(conn, f"the parent speaks protocol version {theirs.version}, this worker {env.PROTOCOL_VERSION}")
    if theirs.codec != env.CODEC_JSON:
        _mismatch(conn, "the parent writes bincode; this worker writes JSON only (Codec::Json)")
    if ours != theirs.fingerprint:
        _mismatch(conn, "this worker was told to claim other message types than the parent's")
    if not conn.remote:  # over TCP, the token said who we are
        creds = conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        peer, _uid, _gid = struct.unpack("3i", creds)
        if peer not in _ancestors():
            _say(f"the socket was made by process {peer}, not by this worker's parent or an ancestor")
            conn.close()
            sys.exit(EXIT_NOT_A_WORKER)
    if not theirs.flags & env.HELLO_DATA_FOLLOWS:
        return None
    return decode(env.read_data(conn.read_message()))


def _mismatch(conn: Connection, why: str) -> NoReturn:
    _say(why)
    conn.close()
    sys.exit(EXIT_MISMATCH)


def _ancestors() -> Iterator[int]:
    """This process's parent, its parent, and so on: a wrapper (`env`, a
    shell, a debugger) may sit between the worker and the process that
    started it and made the socket."""
    pid = os.getppid()
    for _ in range(64):
        if pid <= 0:
            return
        yield pid
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            return
        # `pid (comm) state ppid ...`; comm may hold spaces and parentheses.
        pid = int(stat.rsplit(b")", 1)[1].split()[1])


def _connect(
    address: str, secrets: Tuple[str, Optional[str], Optional[str]], max_message: int
) -> Connection:
    """The connection back to a remote parent (`Transport::plain_tcp`,
    `Transport::tls`): TCP with keepalive, TLS if pinned, and the token
    first; in the clear, given a proof, the parent's proof next, or the
    worker serves nobody (PROTOCOL.md, section 1)."""
    token, pin, proof = secrets
    host, _, port = address.rpartition(":")
    try:
        sock = socket.create_connection((host.strip("[]"), int(port)), timeout=10)
    except (OSError, ValueError) as e:
        _say(f"could not connect to {address}: {e}")
        sys.exit(EXIT_IO)
    sock.settimeout(None)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    # A parent whose host is gone is noticed within 25 s of its last
    # packet, as by a Rust worker (PROTOCOL.md, section 1).
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 5)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 3)
    if pin is not None:
        sock = _tls(sock, pin)
    conn = Connection(sock, max_message, remote=True)
    asks = proof is not None and pin is None
    conn.send(env.envelope(env.AUTH, 1 if asks else 0, payload=token.encode()))
    if asks:
        _await_proof(conn, sock, proof or "")
    return conn


def _await_proof(conn: Connection, sock: socket.socket, proof: str) -> None:
    """Reads the parent's first message, which must be an Auth holding
    `proof`: whoever holds the port without it (another user who bound it
    once the parent gave this launch up) learns the token, which is worth
    nothing then, and is served nothing. Exits with 64 otherwise."""
    import hmac

    sock.settimeout(10)
    try:
        first = conn.read_messages()
    except (OSError, Closed, env.ProtocolError) as e:
        first, why = [], str(e)
    else:
        why = "its first message is no proof"
    sock.settimeout(None)
    if len(first) == 1 and first[0][0] == env.AUTH and first[0][1] == 0:
        if hmac.compare_digest(first[0][2], proof.encode()):
            return
        why = "another proof than this launch's"
    _say(f"the peer did not prove itself this worker's parent: {why}")
    sys.exit(EXIT_NOT_A_WORKER)


def _tls(sock: socket.socket, pin: str) -> socket.socket:
    """`sock` inside TLS, to a parent whose certificate's SHA-256 is `pin`
    (and no other: no authority, no host name)."""
    import hashlib
    import ssl

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # checked below, against the pin
    try:
        tls = context.wrap_socket(sock, server_hostname="actix-webworker")
    except (OSError, ssl.SSLError) as e:
        _say(f"TLS with the parent failed: {e}")
        sys.exit(EXIT_IO)
    der = tls.getpeercert(binary_form=True) or b""
    if hashlib.sha256(der).hexdigest() != pin.lower():
        _say("the parent's certificate is not the one pinned")
        tls.close()
        sys.exit(EXIT_NOT_A_WORKER)
    return tls


def _read_secrets() -> Tuple[str, Optional[str], Optional[str]]:
    """The token, TLS pin and parent's proof of a remote worker, from the secrets block on
    stdin (PROTOCOL.md, section 1): `KEY=value` lines up to an empty line,
    read byte by byte so that nothing after it is taken, within 10 s. Then
    stdin becomes /dev/null. The secrets never come in the environment or
    the arguments, which other users of the host can read."""
    import select
    import time

    block = b""
    deadline = time.monotonic() + 10
    while not block.endswith(b"\n\n") and block != b"\n" and len(block) < 4096:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([0], [], [], left)[0]:
            break
        byte = os.read(0, 1)
        if not byte:
            break
        block += byte
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    token, pin, proof = "", None, None
    for line in block.decode("utf-8", "replace").split("\n"):
        if not line:
            break
        key, _, value = line.partition("=")
        if key == "ACTIX_WEBWORKER_TOKEN":
            token = value
        elif key == "ACTIX_WEBWORKER_TLS_PIN":
            pin = value
        elif key == "ACTIX_WEBWORKER_PARENT_PROOF":
            proof = value
    if not token:
        _say(
            "no token on stdin (ACTIX_WEBWORKER_SECRETS=stdin): "
            "a launcher must pass its stdin on (not `ssh -n`)"
        )
        sys.exit(EXIT_NOT_A_WORKER)
    return token, pin, proof
