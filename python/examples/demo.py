"""The Python worker of `examples/python_parent.rs`, the crate's example
of a Rust parent with a Python worker: every feature of the package once.

The parent's messages are serde's JSON of its `Job` enum (`{"Echo":
"hi"}`, `{"Add": [2, 3]}`, `"Close"`); this worker posts its `Done`
enum back the same way. The parent passes the Rust names of its request
types in the environment (`DEMO_MUL`, `DEMO_BOOM`, `DEMO_GREET`): a
request's tag on the wire is a hash of its name (`request_name::<R>()`
in Rust, e.g. `python_parent::Mul`).
"""

from __future__ import annotations

import os

import actix_webworker as aww


class Failure(Exception):
    """What the `Fail` job raises."""


class Demo(aww.Worker):
    def on_message(self, data: aww.Json, fds: list[int]) -> None:
        if data == "Close":
            self.parent.close()
            return
        if data == "AskNobody":
            try:
                self.parent.ask("demo::Nobody", None)
            except aww.RemoteError as e:
                self.parent.post({"Answered": f"failed: {e.failure}"})
            return
        ((variant, value),) = data.items()
        if variant == "Echo":
            self.parent.post({"Echoed": value})
        elif variant == "Add":
            a, b = value
            self.parent.post({"Sum": a + b})
        elif variant == "Shapes":
            self.parent.post({"Shapes": value})
        elif variant == "AskParent":
            self.parent.post({"Answered": self.parent.ask(os.environ["DEMO_GREET"], value)})
        elif variant == "Write":
            # The descriptor is this handler's: write, then close it.
            (fd,) = fds
            with os.fdopen(fd, "wb") as out:
                out.write(value.encode())
            self.parent.post({"Wrote": len(value.encode())})
        elif variant == "Pipe":
            read, write = os.pipe()
            os.write(write, value.encode())
            os.close(write)
            self.parent.post("Piped", fds=[read])
            os.close(read)  # the parent has its own copy now
        elif variant == "Fail":
            raise Failure(value)
        elif variant == "Exit":
            os._exit(value)

    def on_close(self) -> None:
        self.parent.post("Closing")


def mul(worker: Demo, request: aww.Json) -> int:
    a, b = request
    return int(a * b)


def boom(worker: Demo, request: aww.Json) -> int:
    raise RuntimeError("boom")


aww.run(
    Demo,
    answers={os.environ["DEMO_MUL"]: mul, os.environ["DEMO_BOOM"]: boom},
    entries=["demo"],
)
