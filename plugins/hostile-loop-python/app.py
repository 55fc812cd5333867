"""`hostile-loop-python`: never returns. The host's timeout (epoch interruption)
must end it, as it ends plugins/hostile-loop (Rust)."""

import weir_sdk as weir


def handle(event: weir.Event) -> list[weir.Message]:
    n = 0
    while True:
        n += 1
