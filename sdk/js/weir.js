// weir SDK for JavaScript: write an event handler as a plain function over an event.
//
// A plugin is a module `app.js` that exports `handle(event)`, returning the messages
// to publish (an array of `Message`, or nothing) or throwing `Retry` (transient: the
// host retries by the plugin's policy) or `Reject` (permanent: dead-lettered at once):
//
//   import { Message, Reject, info } from "weir";
//
//   export function handle(event) {
//     const order = event.json();                  // bad JSON is a Reject
//     if (!order.id) throw new Reject("field `id` is missing");
//     info(`order ${order.id}`);
//     return [Message.json("orders.seen", order).header("content-type", "application/json")];
//   }
//
// Batches: a plugin whose subscription has `batch = { max_events = N }` may export
// `handleBatch(events)` (an array of `Event`, 1 to N) instead of, or besides,
// `handle`. It returns one entry per event, in order: that event's messages (an
// array of `Message`, one `Message`, or null/undefined for none) or its failure,
// a `Retry` or `Reject` *returned*, not thrown. Each event is settled on its own.
// Inside handleBatch `publish` is refused (it throws `PublishError`): a message
// leaves with the `ok` of the event whose entry carries it. A throw out of
// handleBatch fails the whole call (it traps; the host splits the batch and runs
// the halves again); `eachEvent` turns a per-event function's thrown failures
// into entries. An entry of any other type rejects that event (logged):
//
//   import { Message, Reject, eachEvent } from "weir";
//
//   export function handleBatch(events) {
//     return eachEvent(events, (event) => {
//       const order = event.json();                // a thrown Reject: this event's entry
//       if (!order.id) return new Reject("field `id` is missing");
//       return Message.json("orders.seen", order);
//     });
//   }
//
// Without `handle`, events that come alone run as a batch of one.
//
// Host calls: publish, config, log and trace/debug/info/warn/error. Effects are
// transactional: messages returned *and* published leave the host only if `handle`
// returns normally. Build with `scripts/build-guest.sh DIR` (componentize-js
// underneath), which resolves the `"weir"` import to this file.
//
// This module imports nothing: inside a component, the generated entry module
// binds the component's `weir:plugin/host` imports (`_bindHost`) before any
// plugin module runs. Anywhere else (plain node) the host calls are served
// in-process, and `weir/testing` (testing.js) sets config and takes back what
// was published and logged, so `handle` unit-tests like any function.

/** What the in-process host calls keep, for `weir/testing`. Internal. */
export const _standIn = { config: new Map(), published: [], logs: [], inBatch: false };

/** What `publish` answers inside `handleBatch`, as the host does. */
export const PUBLISH_IN_BATCH =
  "host.publish is not available inside handle-batch: " +
  "return each event's messages in its result, so they leave with that event's ok";

let host = {
  log: (level, text) => void _standIn.logs.push([level, text]),
  publish: (msg) => {
    if (_standIn.inBatch) throw { payload: PUBLISH_IN_BATCH };
    _standIn.published.push(msg);
  },
  config: (key) => _standIn.config.get(key),
};

/** Serve the host calls with the component's imports. Internal: the entry
 * module the build generates calls it. */
export function _bindHost(imports) {
  host = imports;
}

const hostLog = (level, text) => host.log(level, text);
const hostPublish = (msg) => host.publish(msg);
const hostConfig = (key) => host.config(key);

const encoder = new TextEncoder();
const strictDecoder = new TextDecoder("utf-8", { fatal: true });

/** The log levels, lowest first. */
export const LEVELS = ["trace", "debug", "info", "warn", "error"];

/** Why a handler did not succeed: throw a `Retry` or a `Reject`. */
export class Failure extends Error {
  constructor(kind, message) {
    super(String(message));
    this.kind = kind;
    this.name = kind === "retry" ? "Retry" : "Reject";
  }
}

/** Transient: the host retries the event by the plugin's retry policy. */
export class Retry extends Failure {
  constructor(message) {
    super("retry", message);
  }
}

/** Permanent: the host dead-letters the event at once. */
export class Reject extends Failure {
  constructor(message) {
    super("reject", message);
  }
}

/** The host refused a published message (too many or too large outputs, a
 * forbidden subject); the event fails whatever the handler does. */
export class PublishError extends Error {
  constructor(message) {
    super(String(message));
    this.name = "PublishError";
  }
}

function toBytes(payload) {
  if (payload === undefined || payload === null) return new Uint8Array(0);
  if (typeof payload === "string") return encoder.encode(payload);
  if (payload instanceof Uint8Array) return payload;
  if (payload instanceof ArrayBuffer) return new Uint8Array(payload);
  if (ArrayBuffer.isView(payload)) {
    return new Uint8Array(payload.buffer, payload.byteOffset, payload.byteLength);
  }
  throw new TypeError(`a payload is a string or bytes, not ${typeof payload}`);
}

function pairs(headers) {
  if (!headers) return [];
  const list = Array.isArray(headers) ? headers : Object.entries(headers);
  return list.map(([k, v]) => [String(k), String(v)]);
}

/** The verified producer of an event: the claims of its `Authorization: Bearer` token. */
export class Principal {
  constructor(subject, issuer, claims) {
    this.subject = subject;
    this.issuer = issuer;
    this.claims = claims;
  }

  /** The claims decoded from JSON; bad JSON is a `Reject`. */
  claimsJson() {
    try {
      return JSON.parse(this.claims);
    } catch (e) {
      throw new Reject(`invalid principal claims: ${e.message}`);
    }
  }
}

/** A message to publish: return it from `handle`, or give it to `publish`. */
export class Message {
  /** `headers`: pairs `[[name, value], ...]` or an object `{name: value}`. */
  constructor(subject, payload, headers) {
    this.subject = String(subject);
    this.payload = toBytes(payload);
    this.headers = pairs(headers);
  }

  /** A message whose payload is `value` as JSON; a value JSON cannot hold is a
   * `Reject`. Adds no header. */
  static json(subject, value) {
    let text;
    try {
      text = JSON.stringify(value);
    } catch (e) {
      throw new Reject(`invalid JSON: ${e.message}`);
    }
    if (text === undefined) throw new Reject(`invalid JSON: cannot encode ${typeof value}`);
    return new Message(subject, text);
  }

  /** Appends a header (a name may repeat); returns the message. */
  header(name, value) {
    this.headers.push([String(name), String(value)]);
    return this;
  }
}

/** One event delivered to the handler. */
export class Event {
  constructor(subject, payload, { headers, replyTo, attempt = 1, principal, id = "test" } = {}) {
    this.id = id;
    this.subject = subject;
    this.payload = toBytes(payload);
    this.headers = pairs(headers);
    this.replyTo = replyTo ?? null;
    this.attempt = attempt;
    this.principal = principal ?? null;
  }

  static fromRaw(e) {
    const p = e.principal;
    const ev = new Event(e.subject, e.payload, {
      replyTo: e.replyTo,
      attempt: e.attempt,
      id: e.id,
      principal: p ? new Principal(p.subject, p.issuer, p.claims) : null,
    });
    ev.headers = e.headers;
    return ev;
  }

  /** The payload as UTF-8 text; invalid UTF-8 is a `Reject`. */
  text() {
    try {
      return strictDecoder.decode(this.payload);
    } catch (e) {
      throw new Reject(`payload is not valid UTF-8: ${e.message}`);
    }
  }

  /** The payload decoded from JSON; invalid JSON (or UTF-8), and numbers out
   * of range, are a `Reject`. `reviver` is passed on to `JSON.parse`. */
  json(reviver) {
    let text;
    try {
      text = strictDecoder.decode(this.payload);
    } catch (e) {
      throw new Reject(`invalid JSON payload: not UTF-8: ${e.message}`);
    }
    const strict = function (key, value, context) {
      if (typeof value === "number" && !Number.isFinite(value)) {
        throw new Reject("invalid JSON payload: number out of range");
      }
      return reviver ? reviver.call(this, key, value, context) : value;
    };
    try {
      return JSON.parse(text, strict);
    } catch (e) {
      if (e instanceof Failure) throw e;
      throw new Reject(`invalid JSON payload: ${e.message}`);
    }
  }

  /** The first value of header `name` (ASCII case-insensitive), or `undefined`. */
  header(name) {
    const want = name.toLowerCase();
    for (const [k, v] of this.headers) if (k.toLowerCase() === want) return v;
    return undefined;
  }

  /** Every value of header `name`, in order (ASCII case-insensitive). */
  headerAll(name) {
    const want = name.toLowerCase();
    return this.headers.filter(([k]) => k.toLowerCase() === want).map(([, v]) => v);
  }

  /** A message carrying `payload` to the reply subject, or `null` when the
   * producer did not ask for a reply. */
  reply(payload) {
    return this.replyTo == null ? null : new Message(this.replyTo, payload);
  }

  /** A message on `subject` with the event's payload and headers. */
  toMessage(subject) {
    const m = new Message(subject, this.payload);
    m.headers = this.headers.slice();
    return m;
  }
}

/** Queues `msg`; it leaves the host only if `handle` succeeds. Throws
 * `PublishError` with the host's reason when refused. */
export function publish(msg) {
  if (!(msg instanceof Message)) throw new TypeError("publish takes a Message");
  // Refused in the batch form even when it runs as `handle` (a batch of
  // one), as the host refuses it inside handle-batch.
  if (inBatchCall) throw new PublishError(PUBLISH_IN_BATCH);
  try {
    hostPublish(msg);
  } catch (e) {
    throw new PublishError(typeof e === "object" && e !== null && "payload" in e ? e.payload : e);
  }
}

/** A value from the `[config]` table of plugin.toml, or `fallback`. */
export function config(key, fallback = undefined) {
  const v = hostConfig(key);
  return v === undefined || v === null ? fallback : v;
}

/** Writes a line to the host's log at `level` (one of `LEVELS`). */
export function log(level, text) {
  if (!LEVELS.includes(level)) {
    throw new TypeError(`log level ${level} is not one of ${LEVELS.join(", ")}`);
  }
  hostLog(level, String(text));
}

export const trace = (text) => log("trace", text);
export const debug = (text) => log("debug", text);
export const info = (text) => log("info", text);
export const warn = (text) => log("warn", text);
export const error = (text) => log("error", text);

/** Rounds like Rust's `f64::round` (halves away from zero) at `digits` decimals. */
export function roundHalfAway(x, digits = 0) {
  const scale = 10 ** digits;
  const y = x * scale;
  let t = Math.trunc(y);
  if (Math.abs(y - t) >= 0.5) t += Math.sign(y);
  return t / scale;
}

/** Runs the author's `handle` on a raw event (used by the generated entry module). */
export function dispatch(handle, raw) {
  let out;
  try {
    out = handle(Event.fromRaw(raw));
  } catch (e) {
    if (e instanceof Failure) {
      // componentize-js lifts a thrown object's `payload` as the export's error.
      throw { payload: { tag: e.kind, val: e.message } };
    }
    // Anything else traps the instance (like a Rust panic): say why first.
    hostLog("error", `uncaught ${e}${e && e.stack ? `\n${e.stack}` : ""}`);
    throw e;
  }
  return _outputs(out);
}

/** What `handle` returned as the list of messages the host publishes: nothing,
 * one `Message` or an iterable of them. Internal (dispatch, weir/testing). */
export function _outputs(out) {
  if (out === undefined || out === null) return [];
  if (out instanceof Message) return [out];
  const list = Array.from(out);
  for (const m of list) {
    if (!(m instanceof Message)) {
      hostLog("error", "handle must return Message objects");
      throw new TypeError("handle must return Message objects");
    }
  }
  return list;
}

/** Maps `fn` over `events` for a `handleBatch`: each event's entry is what `fn`
 * returned for it, or the `Retry` or `Reject` it threw. Anything else thrown
 * still fails the whole call. */
export function eachEvent(events, fn) {
  return Array.from(events, (event) => {
    try {
      return fn(event);
    } catch (e) {
      if (e instanceof Failure) return e;
      throw e;
    }
  });
}

/** One entry of what `handleBatch` returned, as the host's `result`: `{tag: "ok",
 * val: messages}` or `{tag: "err", val: failure}`. An entry of another type (or
 * an array holding a non-Message) rejects that event, and is logged. Internal
 * (dispatchBatch, weir/testing). */
export function _batchEntry(entry, index) {
  if (entry instanceof Failure) return { tag: "err", val: { tag: entry.kind, val: entry.message } };
  if (entry === undefined || entry === null) return { tag: "ok", val: [] };
  if (entry instanceof Message) return { tag: "ok", val: [entry] };
  if (Array.isArray(entry) && entry.every((m) => m instanceof Message)) {
    return { tag: "ok", val: entry };
  }
  const a = (word) => `${/^[aeiou]/i.test(word) ? "an" : "a"} ${word}`;
  const what = Array.isArray(entry)
    ? "an array holding something other than Message objects"
    : entry instanceof Error
      ? `${a(entry.name)} (only Retry and Reject are failures)`
      : typeof entry === "object"
        ? a(entry.constructor && entry.constructor !== Object ? entry.constructor.name : "plain object")
        : a(typeof entry);
  const reason = `handleBatch result ${index} is ${what}: an entry is Message(s), null, a Retry or a Reject`;
  hostLog("error", reason);
  return { tag: "err", val: { tag: "reject", val: reason } };
}

/** Runs the author's `handleBatch` on raw events and returns its entries as
 * the list of results the host takes (used by the generated entry module).
 * Anything thrown traps the call; the length is left for the host to judge. */
/** Whether a `handleBatch` runs now (`publish` refuses). */
let inBatchCall = false;

export function dispatchBatch(handleBatch, raws) {
  let out;
  try {
    inBatchCall = true;
    try {
      out = handleBatch(Array.from(raws, Event.fromRaw));
    } finally {
      inBatchCall = false;
    }
    if (out === undefined || out === null || typeof out === "string" || !out[Symbol.iterator]) {
      throw new TypeError(`handleBatch must return an array (one entry per event), not ${out === null ? "null" : typeof out}`);
    }
    out = Array.from(out);
  } catch (e) {
    // Alone (after the host's splits, or as `handle`), a thrown failure is
    // this event's own, as in the Python SDK.
    if (e instanceof Failure && raws.length === 1) return [_batchEntry(e, 0)];
    const hint = e instanceof Failure
      ? ` (a ${e.name} thrown out of handleBatch fails the whole call: return it as that event's entry)`
      : "";
    hostLog("error", `uncaught ${e}${hint}${e && e.stack ? `\n${e.stack}` : ""}`);
    throw e;
  }
  return out.map(_batchEntry);
}

/** One raw event through the author's `handleBatch`, as a batch of one: the
 * generated `handle` when app.js exports only `handleBatch`. */
export function dispatchOne(handleBatch, raw) {
  const results = dispatchBatch(handleBatch, [raw]);
  if (results.length !== 1) {
    throw {
      payload: {
        tag: "reject",
        val: `the batch handler returned ${results.length} results for one event`,
      },
    };
  }
  const [result] = results;
  if (result.tag === "err") throw { payload: result.val };
  return result.val;
}
