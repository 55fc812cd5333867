/* A plugin with only weir_handle: weir_test_run_batch calls it per event, as the
 * host does, and publish works there. */
#include <stdio.h>
#include <string.h>

#include "weir.h"

static int failures;
#define CHECK(cond) \
    ((cond) ? (void)0 : (void)(fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond), failures++))

weir_failure *weir_handle(const weir_event *e, weir_outputs *out) {
    const char *refused = weir_publish(weir_event_to_message(e, "audit"));
    if (refused) return weir_retry("%s", refused);
    weir_info("seen %s", weir_event_subject(e));
    if (strcmp(weir_event_text(e, NULL), "bad") == 0) return weir_reject("bad");
    weir_emit(out, weir_event_to_message(e, "out"));
    return NULL;
}

int main(void) {
    const weir_event *events[] = {weir_test_event("a", "ok"), weir_test_event("b", "bad")};
    weir_result r[2];
    CHECK(weir_test_run_batch(events, 2, r) == 2);
    CHECK(r[0].failure == NULL && weir_outputs_count(r[0].outputs) == 1);
    CHECK(r[1].failure && strcmp(weir_failure_message(r[1].failure), "bad") == 0);
    CHECK(weir_test_published_count() == 2);
    weir_level level;
    CHECK(weir_test_log_count() == 2 && strcmp(weir_test_log(1, &level), "seen b") == 0 && level == WEIR_INFO);
    weir_test_reset();
    if (failures) return 1;
    puts("sdk/c handle_only_test: ok");
    return 0;
}
