"""`echo-python`: every event on `demo.echo.<rest>` comes back on
`demo.echoed.<rest>` with the same payload and headers; a request also gets the
same as its reply. The twin of plugins/echo (Rust)."""

import weir_sdk as weir

PREFIX = "demo.echo."


def handle(event: weir.Event) -> list[weir.Message]:
    if not event.subject.startswith(PREFIX):
        raise weir.Reject(f"echo: unexpected subject {event.subject}")
    echoed = event.to_message("demo.echoed." + event.subject[len(PREFIX):])
    if event.reply_to is None:
        return [echoed]
    return [echoed, event.to_message(event.reply_to)]
