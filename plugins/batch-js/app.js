// `batch-js`: a batch handler (`handleBatch`) whose every event's outcome is
// chosen by its payload, `<kind>:<n>`; plugins/batch (Rust) in JavaScript:
//
// - `ok`: one output on `batched.ok`, the event's payload, header
//   `Batch-Attempt` = its attempt;
// - `retry`: a Retry on the first attempt, then as `ok`;
// - `reject`: rejected;
// - `trap`: handleBatch throws: the whole call traps;
// - `short`: the call returns one result fewer than it got events;
// - `busy`: as `ok`, but a batch holding one logs "busy batch of N" and
//   then spins for 1.5 s (a batch running when the host stops).
//
// It exports no `handle`: events that come alone run as a batch of one.

import { Message, Reject, Retry, info } from "weir";

function kind(event) {
  let text;
  try {
    text = event.text();
  } catch {
    text = "";
  }
  return text.split(":")[0];
}

function one(event) {
  switch (kind(event)) {
    case "ok":
    case "busy":
      break;
    case "retry":
      if (event.attempt === 1) return new Retry("retry once");
      break;
    case "reject":
      return new Reject("rejected by payload");
    default:
      return new Reject(`unknown kind ${JSON.stringify(kind(event))}`);
  }
  return [new Message("batched.ok", event.payload).header("Batch-Attempt", event.attempt)];
}

export function handleBatch(events) {
  if (events.some((e) => kind(e) === "trap")) throw new Error("trap requested by payload");
  if (events.some((e) => kind(e) === "busy")) {
    info(`busy batch of ${events.length}`);
    const until = Date.now() + 1500;
    while (Date.now() < until);
  }
  const results = events.map((e) => (kind(e) === "short" ? [] : one(e)));
  if (events.some((e) => kind(e) === "short")) results.pop();
  return results;
}
