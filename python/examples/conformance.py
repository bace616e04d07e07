"""The Python twin of the Rust worker of `tests/workers/conformance.rs`:
the same messages, requests and failures, for the same scenarios.

The test starts it with the Rust names of the request types in the
environment (`CONF_MUL`, `CONF_BOOM`, `CONF_GREET`); `CONF_FINGERPRINT`
makes it claim other message types than the parent's.
"""

from __future__ import annotations

import os
from typing import Iterator

import actix_webworker as aww


class Failure(Exception):
    pass


class Conformance(aww.Worker):
    def on_message(self, data: aww.Json, fds: list[int]) -> None:
        for fd in fds:
            os.close(fd)
        # serde's JSON of `Job`: {"Variant": value}.
        (variant, value), = data.items()
        if variant == "Echo":
            self.parent.post({"Echoed": value})
        elif variant == "Add":
            a, b = value
            self.parent.post({"Sum": a + b})
        elif variant == "Fail":
            raise Failure(value)
        elif variant == "AskParent":
            try:
                answer = self.parent.ask(os.environ["CONF_GREET"], value)
            except aww.RemoteError as e:
                answer = f"failed: {e.failure}"
            self.parent.post({"Answered": answer})
        elif variant == "Shapes":
            self.parent.post({"Shapes": value})

    def on_close(self) -> None:
        self.parent.post("Closing")


def mul(worker: Conformance, request: aww.Json) -> int:
    a, b = request
    return int(a * b)


def boom(worker: Conformance, request: aww.Json) -> int:
    raise RuntimeError("boom")


def rows(worker: Conformance, request: aww.Json) -> Iterator[int]:
    """`0..n` (for ever when `n` is null), failing at `fail_at`."""
    n, fail_at = request["n"], request["fail_at"]
    i = 0
    while n is None or i < n:
        if i == fail_at:
            raise Failure(f"row {i} is bad")
        yield i
        i += 1


def data(worker: Conformance, request: aww.Json) -> aww.Json:
    """The worker's data (`WorkerBuilder::data`), as the parent gave it."""
    return worker.parent.data


fingerprint = os.environ.get("CONF_FINGERPRINT")
aww.run(
    Conformance,
    answers={os.environ["CONF_MUL"]: mul, os.environ["CONF_BOOM"]: boom, "conformance.data": data},
    fingerprint=int(fingerprint) if fingerprint else None,
    streams={"conformance.rows": rows},
)
