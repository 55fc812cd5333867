// The JavaScript SDK under plain node: host calls served in-process, read and
// reset through weir/testing.
//
// Run: node --import sdk/js/register.js --test sdk/js/tests/
// (the integration suite does, see tests/integration/languages.rs).

import assert from "node:assert/strict";
import { beforeEach, describe, test } from "node:test";

import {
  Event,
  Message,
  PublishError,
  Reject,
  Retry,
  config,
  dispatch,
  dispatchBatch,
  dispatchOne,
  eachEvent,
  error,
  info,
  log,
  publish,
  roundHalfAway,
} from "weir";
import * as testing from "weir/testing";

const bytes = (text) => new TextEncoder().encode(text);

describe("Event", () => {
  test("headers are case-insensitive and keep their order", () => {
    const e = new Event("a", "x", {
      headers: [["Fail-Times", "2"], ["fail-times", "3"], ["o", "1"]],
    });
    assert.equal(e.header("FAIL-TIMES"), "2");
    assert.deepEqual(e.headerAll("fail-times"), ["2", "3"]);
    assert.equal(e.header("missing"), undefined);
    assert.deepEqual(new Event("a", "x", { headers: { k: "v" } }).headers, [["k", "v"]]);
  });

  test("json is strict and its failures are rejects", () => {
    assert.deepEqual(new Event("a", '{"n": 2.5}').json(), { n: 2.5 });
    for (const bad of ["{", "NaN", "[1e400]", new Uint8Array([0xff])]) {
      assert.throws(() => new Event("a", bad).json(), (e) => {
        assert.ok(e instanceof Reject, `${bad}: ${e}`);
        assert.match(e.message, /^invalid JSON payload/);
        return true;
      });
    }
    assert.throws(() => new Event("a", new Uint8Array([0xff])).text(), Reject);
  });

  test("reply, toMessage and the defaults of a test event", () => {
    const plain = new Event("a", "x");
    assert.equal(plain.reply("y"), null);
    assert.equal(plain.attempt, 1);
    const e = new Event("a", "x", { headers: [["h", "v"]], replyTo: "_INBOX.1", attempt: 3 });
    assert.deepEqual(e.reply("y"), new Message("_INBOX.1", "y"));
    assert.deepEqual(e.toMessage("b"), new Message("b", "x", [["h", "v"]]));
    assert.equal(e.attempt, 3);
  });
});

describe("Message", () => {
  test("json is compact and headers append", () => {
    const m = Message.json("s", { a: [1, 2.5], "é": null }).header("k", "v").header("k", "w");
    assert.deepEqual(m.payload, bytes('{"a":[1,2.5],"é":null}'));
    assert.deepEqual(m.headers, [["k", "v"], ["k", "w"]]);
  });

  test("values JSON cannot hold are rejects; payloads are text or bytes", () => {
    assert.throws(() => Message.json("s", 10n), Reject);
    assert.throws(() => Message.json("s", undefined), Reject);
    assert.throws(() => new Message("s", 5), TypeError);
    assert.deepEqual(new Message("s", new Uint8Array([1, 2])).payload, new Uint8Array([1, 2]));
  });
});

describe("host calls under node (weir/testing)", () => {
  beforeEach(() => testing.reset());

  test("config, publish and logs are served in-process", () => {
    testing.setConfig("k", "v");
    assert.equal(config("k"), "v");
    assert.equal(config("missing", "d"), "d");
    testing.removeConfig("k");
    assert.equal(config("k", "gone"), "gone");

    publish(new Message("s", "p"));
    assert.deepEqual(testing.takePublished(), [new Message("s", "p")]);
    assert.deepEqual(testing.takePublished(), []);
    assert.throws(() => publish({ subject: "s" }), TypeError);

    info("hello");
    error("oops");
    assert.deepEqual(testing.takeLogs(), [["info", "hello"], ["error", "oops"]]);
    assert.throws(() => log("loud", "x"), TypeError);
  });

  test("reset forgets config, published messages and logs", () => {
    testing.setConfig("k", "v");
    publish(new Message("s", "p"));
    info("x");
    testing.reset();
    assert.equal(config("k"), undefined);
    assert.deepEqual(testing.takePublished(), []);
    assert.deepEqual(testing.takeLogs(), []);
  });

  test("run gives what the host gets from handle", () => {
    const one = new Message("a", "1");
    assert.deepEqual(testing.run(() => one, new Event("x", "")), [one]);
    assert.deepEqual(testing.run(() => undefined, new Event("x", "")), []);
    assert.deepEqual(testing.run(() => new Set([one, one]), new Event("x", "")), [one]);
    assert.throws(() => testing.run(() => [{ subject: "a" }], new Event("x", "")), TypeError);
    assert.deepEqual(testing.takeLogs(), [["error", "handle must return Message objects"]]);
    assert.throws(() => testing.run(() => { throw new Retry("busy"); }, new Event("x", "")), Retry);
  });

  test("dispatch maps failures as componentize-js lifts them, and logs a crash", () => {
    const raw = { id: "e1", subject: "x", payload: bytes("p"), headers: [], attempt: 2 };
    assert.deepEqual(dispatch((e) => [e.toMessage("y")], raw), [new Message("y", "p")]);
    assert.throws(
      () => dispatch(() => { throw new Reject("no"); }, raw),
      (thrown) => {
        assert.deepEqual(thrown, { payload: { tag: "reject", val: "no" } });
        return true;
      },
    );
    assert.throws(() => dispatch(() => { throw new RangeError("bug"); }, raw), RangeError);
    const [[level, text]] = testing.takeLogs();
    assert.equal(level, "error");
    assert.match(text, /^uncaught RangeError: bug/);
  });

  test("a PublishError carries the host's reason", () => {
    const e = new PublishError("too many outputs");
    assert.equal(e.name, "PublishError");
    assert.equal(e.message, "too many outputs");
  });
});

describe("batches (handleBatch)", () => {
  beforeEach(() => testing.reset());

  const raw = (payload, attempt = 1) => ({
    id: `e-${payload}`, subject: "b", payload: bytes(payload), headers: [], attempt,
  });

  test("runBatch gives one entry per event: messages or its failure", () => {
    const one = new Message("a", "1");
    const out = testing.runBatch(
      (events) => events.map((e) => {
        switch (e.text()) {
          case "many": return [one, one];
          case "one": return one;
          case "none": return null;
          case "retry": return new Retry("later");
          default: return new Reject(`bad ${e.text()}`);
        }
      }),
      ["many", "one", "none", "retry", "x"].map((p) => new Event("b", p)),
    );
    assert.deepEqual(out.slice(0, 3), [[one, one], [one], []]);
    assert.ok(out[3] instanceof Retry);
    assert.equal(out[3].message, "later");
    assert.ok(out[4] instanceof Reject);
  });

  test("runBatch refuses publish as the host does, and only meanwhile", () => {
    let refused;
    testing.runBatch(
      (events) => events.map((e) => {
        try {
          publish(e.toMessage("x"));
        } catch (err) {
          refused = err;
        }
        return [];
      }),
      [new Event("b", "p")],
    );
    assert.deepEqual(testing.takePublished(), []);
    assert.ok(refused instanceof PublishError);
    assert.equal(refused.message, testing.PUBLISH_IN_BATCH);
    assert.match(refused.message, /handle-batch/);
    assert.throws(() => testing.runBatch(() => { throw new RangeError("bug"); }, []), RangeError);
    publish(new Message("s", "p"));
    assert.deepEqual(testing.takePublished(), [new Message("s", "p")]);
  });

  test("runBatch throws on a result count other than the events'", () => {
    const events = [new Event("b", "1"), new Event("b", "2")];
    assert.throws(
      () => testing.runBatch((es) => es.slice(1).map(() => []), events),
      { message: "the batch handler returned 1 results for 2 events" },
    );
    assert.throws(() => testing.runBatch(() => undefined, events), TypeError);
  });

  test("an entry of another type rejects that event alone, logged", () => {
    const out = testing.runBatch(
      () => [[new Message("a", "1")], { subject: "a" }, [new Message("a", "2"), "x"], new Error("e")],
      [1, 2, 3, 4].map((n) => new Event("b", String(n))),
    );
    assert.deepEqual(out[0], [new Message("a", "1")]);
    for (const [i, what] of [[1, /result 1 is a plain object/], [2, /result 2 is an array/], [3, /result 3 is an Error \(only/]]) {
      assert.ok(out[i] instanceof Reject, `${i}`);
      assert.match(out[i].message, what);
    }
    assert.equal(testing.takeLogs().length, 3);
  });

  test("eachEvent turns thrown failures into entries; other throws escape", () => {
    const out = testing.runBatch(
      (events) => eachEvent(events, (e) => e.toMessage(`n.${e.json().n}`)),
      [new Event("b", '{"n": 1}'), new Event("b", "{")],
    );
    assert.deepEqual(out[0], [new Message("n.1", '{"n": 1}')]);
    assert.ok(out[1] instanceof Reject);
    assert.throws(() => eachEvent([1], () => { throw new RangeError("bug"); }), RangeError);
  });

  test("dispatchBatch lifts entries as componentize-js expects; a throw traps", () => {
    const handler = (events) => events.map((e) =>
      e.text() === "ok" ? [e.toMessage("y")] : new Retry(`r${e.attempt}`));
    assert.deepEqual(dispatchBatch(handler, [raw("ok"), raw("no", 2)]), [
      { tag: "ok", val: [new Message("y", "ok")] },
      { tag: "err", val: { tag: "retry", val: "r2" } },
    ]);
    // The length is the host's to judge (it splits the batch).
    assert.equal(dispatchBatch(() => [], [raw("a")]).length, 0);
    // Alone, a thrown failure is that event's; in a bigger batch it traps.
    assert.deepEqual(dispatchBatch(() => { throw new Retry("one"); }, [raw("a")]), [
      { tag: "err", val: { tag: "retry", val: "one" } },
    ]);
    assert.throws(() => dispatchBatch(() => { throw new Retry("all"); }, [raw("a"), raw("b")]), Retry);
    const [[level, text]] = testing.takeLogs();
    assert.equal(level, "error");
    assert.match(text, /^uncaught Retry: all \(a Retry thrown out of handleBatch fails the whole call/);
  });

  test("publish is refused in the batch form, also as a batch of one", () => {
    const publishing = (events) => events.map((e) => {
      try {
        publish(e.toMessage("x"));
        return [];
      } catch (err) {
        return new Reject(err.message);
      }
    });
    const [one] = dispatchBatch(publishing, [raw("a")]);
    assert.equal(one.tag, "err");
    assert.match(one.val.val, /handle-batch/);
    publish(new Message("y", "")); // allowed again afterwards
    assert.equal(testing.takePublished().length, 1);
  });

  test("dispatchOne runs one event as a batch of one", () => {
    const handler = (events) => events.map((e) =>
      e.text() === "ok" ? e.toMessage("y") : new Reject("no"));
    assert.deepEqual(dispatchOne(handler, raw("ok")), [new Message("y", "ok")]);
    assert.throws(() => dispatchOne(handler, raw("bad")), (thrown) => {
      assert.deepEqual(thrown, { payload: { tag: "reject", val: "no" } });
      return true;
    });
    assert.throws(() => dispatchOne(() => [], raw("ok")), (thrown) => {
      assert.deepEqual(thrown, {
        payload: { tag: "reject", val: "the batch handler returned 0 results for one event" },
      });
      return true;
    });
  });
});

test("rounding is Rust's (halves away from zero)", () => {
  assert.equal(roundHalfAway(2.5), 3);
  assert.equal(roundHalfAway(-2.5), -3);
  assert.equal(roundHalfAway(0.49999999999999994), 0);
  assert.equal(roundHalfAway(0.125, 2), 0.13);
});
