"""The worker side of actix-webworker, in Python (standard library only).

A Rust parent starts this program as a worker with the JSON codec
(`WorkerBuilder::codec(Codec::Json)`); this package speaks the wire
protocol of `PROTOCOL.md` (version 8) over the UNIX socket the parent
hands over, or over TCP back to a remote parent (`Transport::plain_tcp`,
or `Transport::tls` with the certificate pinned), with the launch's
token::

    import actix_webworker as aww

    class Adder(aww.Worker):
        def on_message(self, data, fds):
            if "Add" in data:
                a, b = data["Add"]
                self.parent.post({"Sum": a + b})

        def on_close(self):
            self.parent.post("Closing")

    aww.run(Adder, answers={"my_crate::Mul": lambda w, req: req[0] * req[1]})

Messages are the JSON that serde writes for the Rust types (an enum
variant is `{"Variant": value}`, a unit variant `"Variant"`). Requests are
named by their wire name: the name the Rust protocol declares for them
(`declare.request::<Mul>().named("mul")`), else the Rust path of their
type (`actix_webworker::wire_name`). The worker's data
(`WorkerBuilder::data`, Node's `workerData`) is `parent.data`.

What it does, as the Rust worker runtime does:

- posts both ways (`Worker.on_message`, `Parent.post`), descriptors
  included;
- requests both ways: handlers answer the parent's by name, and
  `Parent.ask(name, value)` asks the parent (blocking; what arrives
  meanwhile is handled after the answer);
- answers that stream: `run(..., streams={name: generator})` sends what
  each generator yields as the parent's window allows, and closes it when
  the parent cancels (`_streams`);
- an exception in `on_message` is reported to the parent as an error
  event (message, file, line, traceback) and the worker goes on; one in a
  request handler fails that request only (`WorkerError::Panicked`), and
  is reported as an error event too;
- `Terminate` runs `on_close`, then the worker exits with code 0;
  `Parent.close()` closes it from inside; a parent that goes away does
  the same;
- the handshake: the parent's hello is checked (magic, version, codec),
  the fingerprint is echoed (the worker takes on reading and writing the
  parent's types), and the socket's other end must be the parent (or an
  ancestor, when a wrapper sits between).

Requests are answered one at a time, in order; a `Cancel` for one is
ignored (its answer has gone by then). Shared buffers (`SharedBytes`)
arrive as their JSON form with their descriptor among `fds`.

The modules, from the socket up: `_frames` (WebSocket frames and
descriptors), `_envelope` (message headers, batches, the hello),
`_payload` (the JSON codec, error reports, request tags), `_worker`
(`Worker`, `Parent`, the dispatch loop), `_streams` (streamed answers),
`_start` (`run`: environment, connection, handshake, the end), `_channel`
(`Channel`: an end of a channel between workers, received in a post).
"""

from ._channel import Channel, take_channel
from ._envelope import PROTOCOL_VERSION
from ._payload import Json, tag_of
from ._start import run
from ._worker import Parent, RemoteError, Worker

__all__ = [
    "Channel",
    "Json",
    "Parent",
    "PROTOCOL_VERSION",
    "RemoteError",
    "Worker",
    "run",
    "tag_of",
    "take_channel",
]
__version__ = "0.1.0"
