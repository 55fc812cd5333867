// `echo-js`: every event on `demo.echo.<rest>` comes back on `demo.echoed.<rest>`
// with the same payload and headers; a request also gets the same as its reply.
// The twin of plugins/echo (Rust).

import { Reject } from "weir";

const PREFIX = "demo.echo.";

export function handle(event) {
  if (!event.subject.startsWith(PREFIX)) {
    throw new Reject(`echo: unexpected subject ${event.subject}`);
  }
  const echoed = event.toMessage("demo.echoed." + event.subject.slice(PREFIX.length));
  if (event.replyTo == null) return [echoed];
  return [echoed, event.toMessage(event.replyTo)];
}
