"""Write weir event handlers in Python: a plain function over an event.

A plugin is a module ``app.py`` with a function ``handle(event)`` that returns the
messages to publish (a list of :class:`Message`, or ``None`` for none), or raises
:class:`Retry` (transient: the host retries by the plugin's policy) or
:class:`Reject` (permanent: dead-lettered at once)::

    import weir_sdk as weir

    def handle(event: weir.Event) -> list[weir.Message]:
        order = event.json()                       # bad JSON is a Reject
        if not order.get("id"):
            raise weir.Reject("field `id` is missing")
        weir.info(f"order {order['id']}")
        return [weir.Message.json("orders.seen", order).header("content-type", "application/json")]

Host calls: :func:`publish`, :func:`config`, :func:`log` and :func:`trace`,
:func:`debug`, :func:`info`, :func:`warn`, :func:`error`. Effects are transactional:
messages returned *and* messages given to :func:`publish` leave the host only if
``handle`` returns normally.

Batches: a subscription with ``batch = { max_events = 100 }`` in plugin.toml
hands the plugin up to 100 events in one call. Define ``handle_batch(events)``
in ``app.py`` returning one outcome per event, in order: its messages (a list of
:class:`Message`, one :class:`Message`, or ``None``) or a :class:`Retry` /
:class:`Reject` *returned*, not raised. Each event is then settled on its own::

    def handle_batch(events: list[weir.Event]) -> list:
        out = []
        for event in events:
            if not event.payload:
                out.append(weir.Reject("empty payload"))
            else:
                out.append([event.to_message("seen")])
        return out

:func:`each_event` maps a per-event function and turns the Retry or Reject it
raises into that event's outcome.

Inside ``handle_batch``, :func:`publish` raises :class:`PublishError` (a message
belongs to the event whose outcome carries it). An exception out of
``handle_batch`` fails the whole call: the host splits the batch and runs the
halves again until the event that causes it runs alone (where a raised
:class:`Retry` or :class:`Reject` is that event's outcome). With
``handle_batch`` and no ``handle``, an event that comes alone is a batch of
one. :func:`weir_sdk.testing.run_batch` runs one off WebAssembly.

Build with ``scripts/build-guest.sh DIR`` (componentize-py underneath). Off
WebAssembly (plain CPython, e.g. under pytest) the host calls are served by
:mod:`weir_sdk.testing`, so a handler is an ordinary function to unit-test.
"""

import json as _json
import math as _math
import traceback as _traceback  # imported at build time: no files to import from at run time

__all__ = [
    "Event",
    "Message",
    "Principal",
    "Failure",
    "Retry",
    "Reject",
    "PublishError",
    "each_event",
    "LEVELS",
    "publish",
    "config",
    "log",
    "trace",
    "debug",
    "info",
    "warn",
    "error",
]

#: The log levels, lowest first.
LEVELS = ("trace", "debug", "info", "warn", "error")

try:  # inside the component: componentize-py's generated bindings
    from wit_world.imports import host as _host  # type: ignore[import-not-found]
    from wit_world.imports import types as _types  # type: ignore[import-not-found]
    from componentize_py_types import Err as _Err  # type: ignore[import-not-found]
    from componentize_py_types import Ok as _Ok  # type: ignore[import-not-found]

    _LEVEL = {name: _host.Level(i) for i, name in enumerate(LEVELS)}
    ON_WASM = True
except ImportError:  # plain CPython: weir_sdk.testing serves the host calls
    _host = _types = _Err = _Ok = None
    _LEVEL = {}
    ON_WASM = False


class Failure(Exception):
    """Why a handler did not succeed: raise :class:`Retry` or :class:`Reject`."""

    kind = ""

    def __init__(self, message: str):
        super().__init__(str(message))
        self.message = str(message)

    def __repr__(self):
        return f"{type(self).__name__}({self.message!r})"


class Retry(Failure):
    """Transient: the host retries the event by the plugin's retry policy."""

    kind = "retry"


class Reject(Failure):
    """Permanent: the host dead-letters the event at once."""

    kind = "reject"


class PublishError(Exception):
    """The host refused a message given to :func:`publish` (too many or too large
    outputs, a forbidden subject); the event fails whatever the handler does."""


def _to_bytes(payload) -> bytes:
    if isinstance(payload, str):
        return payload.encode("utf-8")
    if isinstance(payload, (bytes, bytearray, memoryview)):
        return bytes(payload)
    raise TypeError(f"a payload is str or bytes, not {type(payload).__name__}")


def _dumps(value) -> bytes:
    try:
        text = _json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise Reject(f"invalid JSON: {e}") from None
    return text.encode("utf-8")


def _no_constant(name):
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text):
    value = float(text)
    if _math.isinf(value):
        raise ValueError("number out of range")
    return value


def _finite_int(text):
    value = int(text)
    if abs(value) >= _FLOAT_LIMIT:
        raise ValueError("number out of range")
    return value


_FLOAT_LIMIT = 2**1024  # the first integer a float cannot hold


def loads(data):
    """Strict JSON decoding, as the Rust SDK's: no NaN/Infinity literals, no
    number out of float range; errors are ValueError."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        data = bytes(data).decode("utf-8")
    try:
        return _json.loads(
            data, parse_constant=_no_constant, parse_float=_finite_float, parse_int=_finite_int
        )
    except RecursionError:
        raise ValueError("recursion limit exceeded") from None


class Principal:
    """The verified producer of an event: the claims of its ``Authorization: Bearer`` token."""

    __slots__ = ("subject", "issuer", "claims")

    def __init__(self, subject: str, issuer: str, claims: str):
        self.subject = subject  #: the token's ``sub`` claim
        self.issuer = issuer  #: the token's ``iss`` claim
        self.claims = claims  #: every claim, as a JSON object (text)

    def claims_json(self):
        """The claims decoded from JSON; bad JSON is a :class:`Reject`."""
        try:
            return loads(self.claims)
        except ValueError as e:
            raise Reject(f"invalid principal claims: {e}") from None


class Message:
    """A message to publish: return it from ``handle``, or give it to :func:`publish`."""

    __slots__ = ("subject", "payload", "headers")

    def __init__(self, subject: str, payload=b"", headers=None):
        self.subject = subject
        self.payload = _to_bytes(payload)
        self.headers = [(str(k), str(v)) for k, v in (headers or [])]

    @classmethod
    def json(cls, subject: str, value) -> "Message":
        """A message whose payload is ``value`` as compact JSON; a value that JSON
        cannot hold is a :class:`Reject`. Adds no header."""
        return cls(subject, _dumps(value))

    def header(self, name: str, value: str) -> "Message":
        """Append a header (a name may repeat); returns the message."""
        self.headers.append((str(name), str(value)))
        return self

    def __eq__(self, other):
        return isinstance(other, Message) and (self.subject, self.payload, self.headers) == (
            other.subject,
            other.payload,
            other.headers,
        )

    def __repr__(self):
        return f"Message({self.subject!r}, {self.payload!r}, {self.headers!r})"

    def _raw(self):
        return _types.Message(self.subject, self.payload, self.headers)


class Event:
    """One event delivered to the handler."""

    __slots__ = ("id", "subject", "payload", "headers", "reply_to", "attempt", "principal")

    def __init__(
        self,
        subject: str,
        payload=b"",
        headers=None,
        reply_to=None,
        attempt: int = 1,
        principal=None,
        id: str = "test",
    ):
        self.id = id  #: unique per event, stable across redeliveries
        self.subject = subject
        self.payload = _to_bytes(payload)
        self.headers = [(str(k), str(v)) for k, v in (headers or [])]  #: in order; names may repeat
        self.reply_to = reply_to  #: the subject to answer on, for requests
        self.attempt = attempt  #: 1 on the first delivery, 2 on the first retry...
        self.principal = principal  #: the verified producer, with ``[auth]``

    def text(self) -> str:
        """The payload as UTF-8 text; invalid UTF-8 is a :class:`Reject`."""
        try:
            return self.payload.decode("utf-8")
        except UnicodeDecodeError as e:
            raise Reject(f"payload is not valid UTF-8: {e}") from None

    def json(self):
        """The payload decoded from JSON; invalid JSON is a :class:`Reject`."""
        try:
            return loads(self.payload)
        except ValueError as e:  # UnicodeDecodeError and JSONDecodeError included
            raise Reject(f"invalid JSON payload: {e}") from None

    def header(self, name: str, default=None):
        """The first value of header ``name`` (ASCII case-insensitive), or ``default``."""
        name = name.lower()
        for k, v in self.headers:
            if k.lower() == name:
                return v
        return default

    def header_all(self, name: str) -> list:
        """Every value of header ``name``, in order (ASCII case-insensitive)."""
        name = name.lower()
        return [v for k, v in self.headers if k.lower() == name]

    def reply(self, payload):
        """A message carrying ``payload`` to the reply subject, or ``None`` when the
        producer did not ask for a reply."""
        if self.reply_to is None:
            return None
        return Message(self.reply_to, payload)

    def to_message(self, subject: str) -> Message:
        """A message on ``subject`` with the event's payload and headers."""
        msg = Message(subject, self.payload)
        msg.headers = list(self.headers)
        return msg

    @classmethod
    def _from_raw(cls, e):
        ev = cls.__new__(cls)
        ev.id = e.id
        ev.subject = e.subject
        ev.payload = e.payload
        ev.headers = e.headers
        ev.reply_to = e.reply_to
        ev.attempt = e.attempt
        p = e.principal
        ev.principal = None if p is None else Principal(p.subject, p.issuer, p.claims)
        return ev


def publish(msg: Message) -> None:
    """Queue ``msg``; it leaves the host only if ``handle`` succeeds. Raises
    :class:`PublishError` with the host's reason when refused."""
    if not isinstance(msg, Message):
        raise TypeError(f"publish takes a weir_sdk.Message, not {type(msg).__name__}")
    if _in_batch_call:
        # Refused in the batch form even when it runs as ``handle`` (a batch
        # of one), as the host refuses it inside handle-batch.
        raise PublishError(_PUBLISH_IN_BATCH)
    if not ON_WASM:
        from . import testing

        if testing._in_batch:
            raise PublishError(_PUBLISH_IN_BATCH)
        testing._published.append(msg)
        return
    try:
        _host.publish(msg._raw())
    except _Err as e:
        raise PublishError(e.value) from None


def config(key: str, default=None):
    """A value from the ``[config]`` table of plugin.toml, or ``default``."""
    if not ON_WASM:
        from . import testing

        return testing._config.get(key, default)
    value = _host.config(key)
    return default if value is None else value


def log(level: str, text: str) -> None:
    """Write a line to the host's log at ``level`` (one of :data:`LEVELS`)."""
    if level not in LEVELS:
        raise ValueError(f"log level {level!r} is not one of {', '.join(LEVELS)}")
    if not ON_WASM:
        from . import testing

        testing._logs.append((level, str(text)))
        return
    _host.log(_LEVEL[level], str(text))


def trace(text: str) -> None:
    log("trace", text)


def debug(text: str) -> None:
    log("debug", text)


def info(text: str) -> None:
    log("info", text)


def warn(text: str) -> None:
    log("warn", text)


def error(text: str) -> None:
    log("error", text)


def round_half_away(x: float, digits: int = 0) -> float:
    """Round like Rust's ``f64::round`` (halves away from zero), not Python's
    banker's ``round``: ``round_half_away(2.5) == 3.0``."""
    scale = 10.0**digits
    y = x * scale
    t = float(_math.trunc(y))
    if abs(y - t) >= 0.5:
        t += _math.copysign(1.0, y)
    return t / scale


def each_event(events, fn) -> list:
    """Map ``fn`` over ``events`` for a ``handle_batch``: each event's outcome is
    what ``fn`` returned for it, or the :class:`Retry` / :class:`Reject` it
    raised (such as the Reject of ``event.json()`` on bad JSON). Any other
    exception still fails the whole call."""
    out = []
    for event in events:
        try:
            out.append(fn(event))
        except Failure as f:
            out.append(f)
    return out


def _raw_messages(out) -> list:
    """A handler's messages (a list, one Message, or None) as raw WIT messages;
    TypeError for anything else."""
    if out is None:
        return []
    if isinstance(out, Message):
        return [out._raw()]
    if not isinstance(out, (list, tuple)):
        raise TypeError(f"messages are a list of weir_sdk.Message, not {type(out).__name__}")
    raw = []
    for m in out:
        if not isinstance(m, Message):
            raise TypeError(f"handle must return weir_sdk.Message objects, got {type(m).__name__}")
        raw.append(m._raw())
    return raw


def _outcome(index: int, out):
    """One entry of ``handle_batch``'s list, as :func:`weir_sdk.testing.run_batch`
    returns it: a list of Message, or a Failure. An entry of another type is
    that event's Reject, naming the type (the neighbours are unaffected)."""
    if isinstance(out, Failure):
        return out
    if out is None:
        return []
    if isinstance(out, Message):
        return [out]
    if isinstance(out, (list, tuple)) and all(isinstance(m, Message) for m in out):
        return list(out)
    return Reject(
        f"handle_batch result {index} is a {type(out).__name__}: expected a list of"
        " weir_sdk.Message, a Message, None, a Retry or a Reject"
    )


def _raw_failure(f: Failure):
    if isinstance(f, Retry):
        return _types.Failure_Retry(f.message)
    return _types.Failure_Reject(f.message)


def _log_uncaught(e: BaseException) -> None:
    """Tell the host why the instance is about to trap, so the dead letter's
    Weir-Error names it."""
    text = f"uncaught {type(e).__name__}: {e}"
    try:
        text += "\n" + "".join(_traceback.format_tb(e.__traceback__)[-4:])
    except BaseException:  # a traceback is a bonus, never a second failure
        pass
    _host.log(_LEVEL["error"], text)


_PUBLISH_IN_BATCH = (
    "host.publish is not available inside handle-batch:"
    " return each event's messages in its result, so they leave with that event's ok"
)
_in_batch_call = False


def _dispatch_batch(handle_batch, raw_events):
    """Run the author's ``handle_batch``; used by weir_sdk.batch_component.
    A list of another length than the events goes back as it is: the host
    reports it and splits the batch."""
    global _in_batch_call
    events = [Event._from_raw(e) for e in raw_events]
    try:
        _in_batch_call = True
        try:
            results = handle_batch(events)
        finally:
            _in_batch_call = False
        if not isinstance(results, (list, tuple)):
            raise TypeError(f"handle_batch must return a list, not {type(results).__name__}")
    except Failure as f:
        if len(events) == 1:  # alone, a raised failure is this event's own
            return [_Err(_raw_failure(f))]
        _host.log(
            _LEVEL["error"],
            f"handle_batch raised {f!r} for a batch of {len(events)}: the host splits the"
            " batch; return a Retry or Reject in the event's place instead",
        )
        raise
    except BaseException as e:
        _log_uncaught(e)
        raise
    raw = []
    for i, out in enumerate(results):
        out = _outcome(i, out)
        if isinstance(out, Failure):
            raw.append(_Err(_raw_failure(out)))
        else:
            raw.append(_Ok([m._raw() for m in out]))
    return raw


def _dispatch_one(handle_batch, raw_event):
    """One event through ``handle_batch`` (a batch of one), as ``handle``."""
    results = _dispatch_batch(handle_batch, [raw_event])
    if len(results) != 1:
        raise _Err(_types.Failure_Reject(f"handle_batch returned {len(results)} results for 1 event"))
    if isinstance(results[0], _Err):
        raise results[0]
    return results[0].value


def _dispatch(handle, raw_event):
    """Run the author's ``handle`` on a raw event; used by weir_sdk.component."""
    try:
        return _raw_messages(handle(Event._from_raw(raw_event)))
    except Failure as f:
        raise _Err(_raw_failure(f)) from None
    except BaseException as e:
        # An uncaught exception traps the instance (like a Rust panic).
        _log_uncaught(e)
        raise
