"""A Python worker that holds an end of a channel (`MessageChannel`): the
parent posts it `{"Echo": {"end": ...}}`; it sends every post of that
channel back on it until the other end closes, then tells the parent how
the channel ended. Run by `tests/workers/channels.rs` (the `Piped`
protocol, over JSON); the Rust end is opened with the JSON codec.
"""

from __future__ import annotations

import os

import actix_webworker as aww


class Echo(aww.Worker):
    def on_message(self, data: aww.Json, fds: list[int]) -> None:
        # serde's JSON of `Job`: {"Variant": value}, or a unit variant's name.
        if data == "Pid":
            self.parent.post({"Pid": os.getpid()})
            return
        (variant, value), = data.items()
        if variant == "Echo":
            channel = aww.take_channel(value["end"], fds)
            while (got := channel.recv()) is not None:
                item, item_fds = got
                for fd in item_fds:
                    os.close(fd)
                channel.post(item)
            self.parent.post(
                {
                    "Closed": {
                        "why": channel.why,
                        "sent": channel.sent,
                        "unsent": 0,
                        "in_doubt": 0,
                        "received": channel.received,
                        "accepted": channel.sent,
                    }
                }
            )


aww.run(Echo)
