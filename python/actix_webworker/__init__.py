"""The worker side of actix-webworker, in Python (standard library only).

A Rust parent starts this program as a worker with the JSON codec
(`WorkerBuilder::codec(Codec::Json)`); this module speaks the wire protocol
of `PROTOCOL.md` (version 6) over the UNIX socket the parent hands over, or
over TCP back to a remote parent (`Transport::plain_tcp`, or
`Transport::tls` with the certificate pinned), with the launch's token:

    import actix_webworker as aww

    class Adder(aww.Worker):
        def on_message(self, data, fds):
            if "Add" in data:
                a, b = data["Add"]
                self.parent.post({"Sum": a + b})

        def on_close(self):
            self.parent.post("Closing")

    worker = aww.run(Adder, answers={"my_crate::Mul": lambda w, req: req[0] * req[1]})

Messages are the JSON that serde writes for the Rust types (an enum
variant is `{"Variant": value}`, a unit variant `"Variant"`). Requests are
named by their wire name: the name the Rust protocol declares for them
(`declare.request::<Mul>().named("mul")`), else the Rust path of their
type (`actix_webworker::wire_name`). The worker's data
(`WorkerBuilder::data`, Node's `workerData`) is `parent.data`, its JSON
value (`None` when the parent gave none).

What it does, as the Rust worker runtime does:

- posts both ways (`on_message`, `parent.post`), descriptors included;
- requests both ways: handlers answer the parent's by name, and
  `parent.ask(name, value)` asks the parent (blocking; what arrives
  meanwhile is handled after the answer);
- an exception in `on_message` is reported to the parent as an error event
  (message, file, line, traceback) and the worker goes on; one in a
  request handler fails that request only (`WorkerError::Panicked`), and
  is reported as an error event too;
- `Terminate` runs `on_close`, then the worker exits with code 0;
  `parent.close()` closes it from inside; a parent that goes away does the
  same;
- the handshake: the parent's hello is checked (magic, version, codec),
  the fingerprint is echoed (the worker takes on reading and writing the
  parent's types), and the socket's other end must be the parent.

Requests are answered one at a time, in order; a `Cancel` for one is
ignored (its answer has gone by then). Shared buffers (`SharedBytes`)
arrive as their JSON form with their descriptor among `fds`.
"""

import array
import json
import os
import socket
import struct
import sys
import traceback

__all__ = ["Worker", "Parent", "RemoteError", "run", "tag_of", "PROTOCOL_VERSION"]

PROTOCOL_VERSION = 6
MAGIC = b"AWW\x01"
CODEC_JSON = 1

# Envelope kinds (PROTOCOL.md, "The envelope").
(
    HELLO,
    POST,
    REQUEST,
    ANSWER,
    FAILED,
    ERROR,
    TERMINATE,
    CLOSING,
    BATCH,
    REFUSED,
    CANCEL,
    AUTH,
    PING,
    PONG,
    DATA,
) = range(1, 16)
# The hello's flag: the worker's data follows the hellos.
HELLO_DATA_FOLLOWS = 1
# WebSocket opcodes.
OP_CONTINUATION, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0, 1, 2, 8, 9, 10

MAX_FDS_PER_MESSAGE = 64
MAX_FDS_PER_SENDMSG = 253
MAX_UNCLAIMED_FDS = 506

# Exit codes of the Rust runtime, kept the same.
EXIT_NOT_A_WORKER = 64
EXIT_IO = 74
EXIT_MISMATCH = 78


def tag_of(name):
    """The tag of a request type: 64-bit FNV-1a of its Rust path."""
    h = 0xCBF29CE484222325
    for byte in name.encode():
        h ^= byte
        h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


class RemoteError(Exception):
    """A request to the parent failed: `failure` is the parent's `Failure`
    (`{"Panicked": report}`, `{"Unhandled": text}`, `{"Wire": text}` or
    `"Gone"`)."""

    def __init__(self, failure):
        super().__init__(failure)
        self.failure = failure


class _Closed(Exception):
    """The connection ended."""


class _Connection:
    """The socket: WebSocket frames in and out, descriptors queued."""

    def __init__(self, sock, max_message, remote=False):
        self.sock = sock
        self.max_frame = max_message + 64
        self.buf = bytearray()
        self.fds = []
        # Over TCP no descriptors cross.
        self.remote = remote

    def _fill(self, need):
        while len(self.buf) < need:
            if self.remote:
                # TCP (and TLS, which has no recvmsg): no descriptors.
                data, ancdata = self.sock.recv(1 << 16), []
            else:
                data, ancdata, _flags, _addr = self.sock.recvmsg(
                    1 << 16, socket.CMSG_SPACE(MAX_FDS_PER_SENDMSG * 4)
                )
            for level, kind, payload in ancdata:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    fds = array.array("i")
                    fds.frombytes(payload[: len(payload) - (len(payload) % fds.itemsize)])
                    self.fds.extend(fds)
            if len(self.fds) > MAX_UNCLAIMED_FDS:
                raise ValueError("too many descriptors received and not claimed")
            if not data:
                raise _Closed()
            self.buf += data

    def _take(self, n):
        self._fill(n)
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def read_message(self):
        """The next WebSocket message's bytes (fragments joined)."""
        message = b""
        while True:
            b0, b1 = self._take(2)
            fin, opcode = b0 & 0x80, b0 & 0x0F
            if b0 & 0x70:
                raise ValueError("a frame with reserved bits set")
            length = b1 & 0x7F
            if length == 126:
                (length,) = struct.unpack(">H", self._take(2))
            elif length == 127:
                (length,) = struct.unpack(">Q", self._take(8))
            mask = self._take(4) if b1 & 0x80 else None
            if length > self.max_frame:
                raise ValueError(f"a frame of {length} bytes, over the limit")
            payload = self._take(length)
            if mask:
                payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            if opcode == OP_CLOSE:
                raise _Closed()
            if opcode in (OP_PING, OP_PONG):
                continue
            if opcode == OP_TEXT:
                raise ValueError("a text frame")
            message += payload
            if fin:
                return message

    def take_fds(self, n):
        if n > len(self.fds):
            raise ValueError(f"a message claims {n} descriptors, {len(self.fds)} came")
        taken, self.fds = self.fds[:n], self.fds[n:]
        return taken

    def send(self, message, fds=()):
        n = len(message)
        if n < 126:
            head = bytes([0x80 | OP_BINARY, n])
        elif n < 1 << 16:
            head = bytes([0x80 | OP_BINARY, 126]) + struct.pack(">H", n)
        else:
            head = bytes([0x80 | OP_BINARY, 127]) + struct.pack(">Q", n)
        data = head + message
        if fds and self.remote:
            raise ValueError("descriptors cannot cross to a remote parent")
        if fds:
            # The descriptors go with the first bytes of their message.
            anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes())]
            sent = self.sock.sendmsg([data], anc)
            data = data[sent:]
        if data:
            self.sock.sendall(data)

    def close(self):
        try:
            self.sock.sendall(bytes([0x80 | OP_CLOSE, 0]))
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass


def _envelope(kind, nfds=0, fields=b"", payload=b""):
    return bytes([kind, nfds]) + fields + payload


def _json(value):
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


def _report(exc):
    """An `ErrorReport` for exception `exc`: where it was raised."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = frames[-1] if frames else None
    return {
        "message": f"{type(exc).__name__}: {exc}",
        "file": where.filename if where else None,
        "line": where.lineno if where else None,
        "column": None,
        "backtrace": "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
    }


class Parent:
    """The parent, as seen from the worker."""

    def __init__(self, runtime):
        self._rt = runtime
        self.data = runtime.data

    def post(self, value, fds=()):
        """Posts `value` (JSON-able) to the parent, with descriptors `fds`
        (at most 64), which stay open here."""
        if len(fds) > MAX_FDS_PER_MESSAGE:
            raise ValueError(f"at most {MAX_FDS_PER_MESSAGE} descriptors per message")
        self._rt.send(_envelope(POST, len(fds), payload=_json(value)), fds)

    def ask(self, name, value):
        """Asks the parent request `name` (its wire name) and returns the
        answer, or raises `RemoteError`."""
        return self._rt.ask(name, value)

    def close(self):
        """Closes the worker: `on_close` runs, the parent hears that it is
        closing, and it exits with code 0 after this handler returns."""
        self._rt.closing = True


class Worker:
    """Subclass it: `on_message`, `on_close`; `self.parent` posts and asks."""

    def __init__(self, parent):
        self.parent = parent

    def on_message(self, data, fds):
        """A post from the parent: its JSON value and its descriptors."""

    def on_close(self):
        """Terminate, `parent.close()`, or the parent went away."""


class _Runtime:
    def __init__(self, conn, answers, data=None):
        self.conn = conn
        self.data = data
        self.answers = {tag_of(name): f for name, f in answers.items()}
        self.next_id = 0
        self.backlog = []
        self.closing = False
        self.worker = None

    def send(self, message, fds=()):
        self.conn.send(message, fds)

    def ask(self, name, value):
        rid = self.next_id
        self.next_id += 1
        fields = struct.pack("<QQ", rid, tag_of(name))
        self.send(_envelope(REQUEST, 0, fields, _json(value)))
        while True:
            for kind, nfds, rest in self._read():
                if kind == PING:
                    self.send(_envelope(PONG))
                    continue
                if kind in (ANSWER, FAILED) and struct.unpack("<Q", rest[:8])[0] == rid:
                    # Its descriptors are closed: answers here carry none.
                    for fd in self.conn.take_fds(nfds):
                        os.close(fd)
                    value = json.loads(rest[8:])
                    if kind == FAILED:
                        raise RemoteError(value)
                    return value
                self.backlog.append((kind, nfds, rest))

    def _read(self):
        """The messages of the next WebSocket message (a batch: several)."""
        message = self.conn.read_message()
        if len(message) < 2:
            raise ValueError("a message shorter than its header")
        kind, nfds = message[0], message[1]
        if kind != BATCH:
            return [(kind, nfds, message[2:])]
        out, at = [], 2
        while at < len(message):
            (n,) = struct.unpack("<I", message[at : at + 4])
            inner = message[at + 4 : at + 4 + n]
            if len(inner) != n or n < 2:
                raise ValueError("a broken batch")
            out.append((inner[0], inner[1], inner[2:]))
            at += 4 + n
        return out

    def handle(self, kind, nfds, rest):
        """Handles one message; False once the worker is to end."""
        if kind == POST:
            fds = self.conn.take_fds(nfds)
            try:
                self.worker.on_message(json.loads(rest), fds)
            except Exception as exc:  # noqa: BLE001 - reported to the parent
                self.send(_envelope(ERROR, payload=_json(_report(exc))))
        elif kind == REQUEST:
            rid, tag = struct.unpack("<QQ", rest[:16])
            fds = self.conn.take_fds(nfds)
            for fd in fds:
                os.close(fd)
            self._answer(rid, self.answers.get(tag), tag, rest[16:])
        elif kind == TERMINATE:
            return False
        elif kind == PING:
            self.send(_envelope(PONG))
        elif kind in (ANSWER, FAILED):
            pass  # to a request nobody waits for any more
        elif kind == CANCEL:
            pass  # answered already: requests run one at a time
        else:
            raise ValueError(f"unexpected message kind {kind}")
        return not self.closing

    def _answer(self, rid, handler, tag, payload):
        fields = struct.pack("<Q", rid)
        if handler is None:
            failure = {"Unhandled": f"request type with tag {tag:016x}"}
            self.send(_envelope(FAILED, 0, fields, _json(failure)))
            return
        try:
            answer = handler(self.worker, json.loads(payload))
        except Exception as exc:  # noqa: BLE001 - the request fails, not the worker
            # As a panic in a Rust handler: the request fails with the
            # report, and the parent hears of it as of any uncaught error.
            report = _report(exc)
            self.send(_envelope(FAILED, 0, fields, _json({"Panicked": report})))
            self.send(_envelope(ERROR, payload=_json(report)))
            return
        self.send(_envelope(ANSWER, 0, fields, _json(answer)))

    def serve(self):
        """Handles messages until Terminate, a close or the end."""
        try:
            while True:
                while self.backlog:
                    if not self.handle(*self.backlog.pop(0)):
                        return
                for item in self._read():
                    self.backlog.append(item)
        except _Closed:
            return


def _tls(sock, pin):
    """`sock` inside TLS, to a parent whose certificate's SHA-256 is `pin`
    (and no other: no authority, no host name)."""
    import hashlib
    import ssl

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # checked below, against the pin
    tls = context.wrap_socket(sock, server_hostname="actix-webworker")
    der = tls.getpeercert(binary_form=True) or b""
    if hashlib.sha256(der).hexdigest() != pin.lower():
        print("actix_webworker: the parent's certificate is not the one pinned", file=sys.stderr)
        tls.close()
        sys.exit(EXIT_NOT_A_WORKER)
    return tls


def _read_secrets():
    """The token and TLS pin of a remote worker, from the secrets block on
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
    token, pin = "", None
    for line in block.decode("utf-8", "replace").split("\n"):
        if not line:
            break
        key, _, value = line.partition("=")
        if key == "ACTIX_WEBWORKER_TOKEN":
            token = value
        elif key == "ACTIX_WEBWORKER_TLS_PIN":
            pin = value
    if not token:
        print(
            "actix_webworker: no token on stdin (ACTIX_WEBWORKER_SECRETS=stdin): "
            "a launcher must pass its stdin on (not `ssh -n`)",
            file=sys.stderr,
        )
        sys.exit(EXIT_NOT_A_WORKER)
    return token, pin


def _handshake(conn, sock, fingerprint, remote):
    """Reads the parent's hello, answers with ours, and reads the worker's
    data when the parent's hello says it follows; returns the data (its
    JSON value, or None). Raises SystemExit with the runtime's code when
    the two hellos do not match."""
    message = conn.read_message()
    if len(message) < 23 or message[0] != HELLO or message[2:6] != MAGIC:
        raise SystemExit(EXIT_MISMATCH)
    version, theirs, _pid = struct.unpack("<IQI", message[6:22])
    codec = message[22] if len(message) > 22 else None
    flags = message[23] if len(message) > 23 else 0
    ours = theirs if fingerprint is None else fingerprint
    fields = MAGIC + struct.pack("<IQI", PROTOCOL_VERSION, ours, os.getpid())
    fields += bytes([CODEC_JSON, 0])
    conn.send(_envelope(HELLO, 0, fields))
    if version != PROTOCOL_VERSION or codec != CODEC_JSON or ours != theirs:
        conn.close()
        raise SystemExit(EXIT_MISMATCH)
    if not remote:
        # The other end must be our parent (over TCP, the token said who
        # we are).
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        peer, _uid, _gid = struct.unpack("3i", creds)
        if peer != os.getppid():
            raise SystemExit(EXIT_NOT_A_WORKER)
    if not flags & HELLO_DATA_FOLLOWS:
        return None
    data = conn.read_message()
    if len(data) < 10 or data[0] != DATA:
        raise SystemExit(EXIT_MISMATCH)
    return json.loads(data[10:])


def run(worker, answers=None, entries=None, fingerprint=None):
    """Runs this process as a worker and exits.

    `worker`: the `Worker` subclass to run (or a factory taking the
    `Parent`). `answers`: request handlers by the wire name of the request
    type, each called with the worker and the request's JSON value, whose
    return value is the answer. `entries`: the entry names this worker
    runs as (default: any); another is refused, as a Rust worker refuses
    an entry it does not have. `fingerprint`: what to say in the hello
    (default: the parent's, echoed)."""
    fd = os.environ.pop("ACTIX_WEBWORKER_FD", None)
    connect = os.environ.pop("ACTIX_WEBWORKER_CONNECT", None)
    on_stdin = os.environ.pop("ACTIX_WEBWORKER_SECRETS", None) == "stdin"
    token, pin = _read_secrets() if connect is not None and on_stdin else ("", None)
    entry = os.environ.pop("ACTIX_WEBWORKER_ENTRY", None)
    max_message = int(os.environ.pop("ACTIX_WEBWORKER_MAX_MESSAGE", 64 << 20))
    if connect is not None:
        # A remote parent (`Transport::PlainTcp`): connect back, and present
        # the launch's token before anything else.
        host, port = connect.rsplit(":", 1)
        try:
            sock = socket.create_connection((host.strip("[]"), int(port)), timeout=10)
        except OSError as e:
            print(f"actix_webworker: could not connect to {connect}: {e}", file=sys.stderr)
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
        conn = _Connection(sock, max_message, remote=True)
        conn.send(_envelope(AUTH, payload=token.encode()))
    elif fd is not None:
        sock = socket.socket(fileno=int(fd))
        conn = _Connection(sock, max_message)
    else:
        print("actix_webworker: not started as a worker", file=sys.stderr)
        sys.exit(EXIT_NOT_A_WORKER)
    if entries is not None and entry not in entries:
        # Instead of a hello: the refusal, in the codec the parent named.
        conn.read_message()
        refusal = {"entry": entry or "", "known": sorted(entries)}
        conn.send(_envelope(REFUSED, payload=_json(refusal)))
        conn.close()
        sys.exit(EXIT_NOT_A_WORKER)
    try:
        data = _handshake(conn, sock, fingerprint, conn.remote)
    except _Closed:
        sys.exit(0)
    runtime = _Runtime(conn, answers or {}, data)
    runtime.worker = worker(Parent(runtime))
    runtime.serve()
    if runtime.closing:
        runtime.send(_envelope(CLOSING))
    try:
        runtime.worker.on_close()
    except Exception as exc:  # noqa: BLE001 - reported, then the exit
        runtime.send(_envelope(ERROR, payload=_json(_report(exc))))
    conn.close()
    sys.exit(0)
