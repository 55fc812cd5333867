"""Native stand-ins for the host calls, to unit-test handlers with plain CPython.

Off WebAssembly, :func:`weir_sdk.config` reads values set with :func:`set_config`,
:func:`weir_sdk.publish` collects messages for :func:`take_published`, and
:func:`weir_sdk.log` collects lines for :func:`take_logs`::

    from weir_sdk import Event, testing
    import app

    testing.reset()
    testing.set_config("currency", "EUR")
    out = app.handle(Event("orders.created.eu", b'{"id": "o-1", ...}'))
"""

_config = {}
_published = []
_logs = []


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
    _config.clear()
    _published.clear()
    _logs.clear()
