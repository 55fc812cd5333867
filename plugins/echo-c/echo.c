/*
 * `echo-c`: every event on `demo.echo.<rest>` comes back on `demo.echoed.<rest>`
 * with the same payload and headers; a request also gets the same as its reply.
 * The twin of plugins/echo (Rust).
 */
#include <string.h>

#include "weir.h"

#define PREFIX "demo.echo."

weir_failure *weir_handle(const weir_event *event, weir_outputs *out) {
    const char *subject = weir_event_subject(event);
    if (strncmp(subject, PREFIX, strlen(PREFIX)) != 0)
        return weir_reject("echo: unexpected subject %s", subject);
    const char *echoed = weir_sprintf("demo.echoed.%s", subject + strlen(PREFIX));
    weir_emit(out, weir_event_to_message(event, echoed));
    const char *reply_to = weir_event_reply_to(event);
    if (reply_to) weir_emit(out, weir_event_to_message(event, reply_to));
    return NULL;
}
