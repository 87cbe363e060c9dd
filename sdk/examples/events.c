/* events.c: plain C callbacks, run on this thread by sync_engine_process_events().
 *
 *   ./events <database> <server-url> <email> <api-key> <api-secret|-> <seconds> [options-json]
 *
 * Prints one line per event for <seconds>, then how many documents were created.
 * [options-json] goes to sync_engine_create_with_options, e.g. '{"collections":["tasks"]}'
 * to sync only the tasks collection. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sync_client_events.h"

static void on_event(const SyncEventData *event, void *context) {
    (void)context;
    printf("EVENT %s id=%s title=%s remote=%d n=%llu", get_event_name(event->event_type),
           event->document_id ? event->document_id : "-", event->title ? event->title : "-",
           event->boolean_data ? 1 : 0, (unsigned long long)event->numeric_data);
    /* An application event (POST /events): its action, who recorded it, its payload. */
    if (event->event_type == SYNC_EVENT_APPLICATION_EVENT) {
        printf(" action=%s author=%s payload=%s", event->action, event->author ? event->author : "-",
               event->content ? event->content : "null");
    }
    printf("\n");
    fflush(stdout);
}

static void count_created(const SyncEventData *event, void *context) {
    (void)event;
    (*(int *)context)++;
}

int main(int argc, char **argv) {
    if (argc < 7) {
        fprintf(stderr, "usage: %s <database> <server-url> <email> <api-key> <api-secret|-> <seconds> [options-json]\n",
                argv[0]);
        return 64;
    }
    const char *secret = strcmp(argv[5], "-") == 0 ? NULL : argv[5];
    const char *options = argc > 7 ? argv[7] : NULL;
    struct CSyncEngine *engine = sync_engine_create_with_options(argv[1], argv[2], argv[3], argv[4], secret, options);
    if (!engine) {
        fprintf(stderr, "sync_engine_create_with_options failed: %s\n", sync_last_error());
        return 1;
    }
    int created = 0;
    if (sync_engine_register_event_callback(engine, on_event, NULL, -1) != Success ||
        sync_engine_register_event_callback(engine, count_created, &created, SYNC_EVENT_DOCUMENT_CREATED) != Success) {
        fprintf(stderr, "register failed: %s\n", sync_last_error());
        return 1;
    }
    if (sync_engine_register_event_callback(engine, on_event, NULL, 42) != ErrorInvalidInput) return 1;
    char id[37];
    sync_engine_create_document(engine, "{\"title\":\"events from C\"}", id);
    int ticks = atoi(argv[6]) * 20;
    for (int i = 0; i < ticks; i++) {
        uint32_t processed = 0;
        sync_engine_process_events(engine, &processed);
        usleep(50 * 1000);
    }
    sync_engine_process_events(engine, NULL);
    printf("created-count=%d\n", created);
    fflush(stdout);
    sync_engine_destroy(engine);
    return 0;
}
