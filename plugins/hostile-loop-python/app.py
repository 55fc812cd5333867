"""`hostile-loop-python`: never returns. The host's timeout (epoch interruption)
must end it, as it ends plugins/hostile-loop (Rust). The payload `raise` makes
it raise instead: an uncaught exception traps like a Rust panic."""

import weir_sdk as weir


def handle(event: weir.Event) -> list[weir.Message]:
    if event.payload == b"raise":
        raise RuntimeError("boom from Python")
    n = 0
    while True:
        n += 1
