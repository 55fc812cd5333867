/* The batch form off wasm: weir_publish refused inside weir_handle_batch with
 * the host's text, allowed when a single event runs as a batch of one. */
#include <stdio.h>
#include <string.h>

#include "weir.h"

static int failures;
#define CHECK(cond) \
    ((cond) ? (void)0 : (void)(fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond), failures++))

void weir_handle_batch(weir_batch *batch) {
    for (size_t i = 0; i < weir_batch_len(batch); i++) {
        const weir_event *e = weir_batch_event(batch, i);
        const char *refused = weir_publish(weir_event_to_message(e, "x"));
        if (refused) weir_batch_fail(batch, i, weir_reject("%s", refused));
        else weir_emit(weir_batch_outputs(batch, i), weir_message_text("seen", weir_config("greeting")));
    }
}

int main(void) {
    weir_test_set_config("greeting", "hi");
    const weir_event *events[] = {weir_test_event("a", "1"), weir_test_event("b", "2")};
    weir_result r[2];
    CHECK(weir_test_run_batch(events, 2, r) == 2);
    for (int i = 0; i < 2; i++) {
        CHECK(r[i].failure && !weir_failure_is_retry(r[i].failure));
        CHECK(strcmp(weir_failure_message(r[i].failure), WEIR_PUBLISH_IN_BATCH) == 0);
        CHECK(strstr(weir_failure_message(r[i].failure), "handle-batch") != NULL);
    }
    CHECK(weir_test_published_count() == 0);
    /* `handle` derived from the batch handler: a batch of one, where the host allows publish. */
    weir_result one = weir_test_run(weir_test_event("a", "1"));
    CHECK(one.failure == NULL && weir_outputs_count(one.outputs) == 1);
    CHECK(strcmp(weir_message_subject(weir_outputs_at(one.outputs, 0)), "seen") == 0);
    CHECK(weir_test_published_count() == 1);
    weir_test_reset();
    CHECK(weir_test_published_count() == 0 && weir_config("greeting") == NULL);
    if (failures) return 1;
    puts("sdk/c batch_test: ok");
    return 0;
}
