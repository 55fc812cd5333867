"""Native stand-ins for the host calls, to unit-test handlers with plain CPython.

Off WebAssembly, :func:`weir_sdk.config` reads values set with :func:`set_config`,
:func:`weir_sdk.publish` collects messages for :func:`take_published`, and
:func:`weir_sdk.log` collects lines for :func:`take_logs`::

    from weir_sdk import Event, testing
    import app

    testing.reset()
    testing.set_config("currency", "EUR")
    out = app.handle(Event("orders.created.eu", b'{"id": "o-1", ...}'))

A batch handler runs with :func:`run_batch`, as the host would run it.
"""

from . import _PUBLISH_IN_BATCH

_config = {}
_published = []
_logs = []
_in_batch = False

#: What :func:`weir_sdk.publish` raises inside a batch, as the host answers.
PUBLISH_IN_BATCH = _PUBLISH_IN_BATCH


def run_batch(handle_batch, events: list) -> list:
    """Run ``handle_batch`` over ``events`` as the host would, and return one
    outcome per event: a list of :class:`weir_sdk.Message`, or the
    :class:`weir_sdk.Retry` / :class:`weir_sdk.Reject` returned for it (an entry
    of another type comes back as a Reject naming it). Meanwhile
    :func:`weir_sdk.publish` raises PublishError. An exception out of
    ``handle_batch`` propagates; a list of another length than the events is
    an AssertionError naming both (the host would split the batch)."""
    from . import _outcome

    global _in_batch
    _in_batch = True
    try:
        results = handle_batch(list(events))
    finally:
        _in_batch = False
    if not isinstance(results, (list, tuple)):
        raise TypeError(f"handle_batch must return a list, not {type(results).__name__}")
    if len(results) != len(events):
        raise AssertionError(f"handle_batch returned {len(results)} results for {len(events)} events")
    return [_outcome(i, out) for i, out in enumerate(results)]


def set_config(key: str, value: str) -> None:
    _config[key] = value


def remove_config(key: str) -> None:
    _config.pop(key, None)


def take_published() -> list:
    out = list(_published)
    _published.clear()
    return out


def take_logs() -> list:
    """``(level, text)`` pairs logged since the last call."""
    out = list(_logs)
    _logs.clear()
    return out


def reset() -> None:
    global _in_batch
    _in_batch = False
    _config.clear()
    _published.clear()
    _logs.clear()
