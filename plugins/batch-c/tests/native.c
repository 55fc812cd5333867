/*
 * Native unit tests of plugins/batch-c, with the C SDK's in-process stand-ins:
 *
 *     plugins/batch-c/tests/run.sh
 */
#include <stdio.h>
#include <string.h>

#include "weir.h"

static int failures;
#define CHECK(cond)                                                   \
    do {                                                              \
        if (!(cond)) {                                                \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
            failures++;                                               \
        }                                                             \
    } while (0)

static bool payload_is(const weir_message *m, const char *text) {
    size_t len;
    const uint8_t *p = weir_message_payload(m, &len);
    return len == strlen(text) && memcmp(p, text, len) == 0;
}

static void each_event_gets_its_own_outcome(void) {
    const weir_event *events[] = {
        weir_test_event("batch.c.1", "ok:1"),
        weir_test_event("batch.c.2", "retry:2"),
        weir_test_event_with_attempt(weir_test_event("batch.c.3", "retry:3"), 2),
        weir_test_event("batch.c.4", "reject:4"),
    };
    weir_result r[4];
    CHECK(weir_test_run_batch(events, 4, r) == 4);
    CHECK(r[0].failure == NULL && weir_outputs_count(r[0].outputs) == 1);
    const weir_message *m = weir_outputs_at(r[0].outputs, 0);
    CHECK(strcmp(weir_message_subject(m), "batched.ok") == 0);
    CHECK(payload_is(m, "ok:1"));
    CHECK(strcmp(weir_message_get_header(m, "batch-attempt"), "1") == 0);
    CHECK(r[1].failure && weir_failure_is_retry(r[1].failure));
    CHECK(r[2].failure == NULL &&
          strcmp(weir_message_get_header(weir_outputs_at(r[2].outputs, 0), "Batch-Attempt"), "2") == 0);
    CHECK(r[3].failure && !weir_failure_is_retry(r[3].failure));
    CHECK(strcmp(weir_failure_message(r[3].failure), "rejected by payload") == 0);
    weir_test_reset();
}

static void short_returns_one_result_fewer(void) {
    const weir_event *events[] = {weir_test_event("batch.c.1", "ok:1"), weir_test_event("batch.c.2", "short:2"),
                                  weir_test_event("batch.c.3", "ok:3")};
    weir_result r[3];
    CHECK(weir_test_run_batch(events, 3, r) == 2);
    weir_test_reset();
}

static void a_single_event_is_a_batch_of_one(void) {
    weir_result r = weir_test_run(weir_test_event("batch.c.1", "ok:1"));
    CHECK(r.failure == NULL && weir_outputs_count(r.outputs) == 1);
    r = weir_test_run(weir_test_event("batch.c.1", "short:1"));
    CHECK(r.failure && strstr(weir_failure_message(r.failure), "one result for one event"));
    r = weir_test_run(weir_test_event("batch.c.1", "nope:1"));
    CHECK(r.failure && strcmp(weir_failure_message(r.failure), "unknown kind \"nope\"") == 0);
    weir_test_reset();
}

int main(void) {
    each_event_gets_its_own_outcome();
    short_returns_one_result_fewer();
    a_single_event_is_a_batch_of_one();
    if (failures) return 1;
    puts("batch-c native tests: ok");
    return 0;
}
