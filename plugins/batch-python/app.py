"""`batch-python`: a batch handler whose every event's outcome is chosen by its
payload, ``<kind>:<n>``; the twin of plugins/batch (Rust):

- ``ok``: one output on ``batched.ok``, the event's payload, header
  ``Batch-Attempt`` = its attempt;
- ``retry``: a Retry on the first attempt, then as ``ok``;
- ``reject``: a Reject;
- ``trap``: ``handle_batch`` raises: the whole call fails;
- ``short``: the call returns one outcome fewer than it got events;
- ``busy``: as ``ok``, but a batch holding one logs "busy batch of N" and then
  spins for 1.5 s (a batch running when the host stops).

The tests of batches (issue 17) drive it."""

import time

import weir_sdk as weir


def kind(event: weir.Event) -> str:
    return event.payload.split(b":", 1)[0].decode("utf-8", "replace")


def one(event: weir.Event):
    k = kind(event)
    if k == "retry" and event.attempt == 1:
        return weir.Retry("retry once")
    if k == "reject":
        return weir.Reject("rejected by payload")
    if k not in ("ok", "busy", "retry"):
        return weir.Reject(f"unknown kind {k!r}")
    return [weir.Message("batched.ok", event.payload).header("Batch-Attempt", str(event.attempt))]


def handle_batch(events: list[weir.Event]) -> list:
    kinds = [kind(e) for e in events]
    if "trap" in kinds:
        raise RuntimeError("trap requested by payload")
    if "busy" in kinds:
        weir.info(f"busy batch of {len(events)}")
        until = time.monotonic() + 1.5
        while time.monotonic() < until:
            pass
    results = [[] if k == "short" else one(e) for k, e in zip(kinds, events)]
    if "short" in kinds:
        results.pop()
    return results
