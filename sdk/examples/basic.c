/* basic.c: create, merge, patch, read and delete documents from C.
 *
 *   ./basic <database> <server-url> <email> <api-key> <api-secret|-> [wait-seconds]
 *
 * "-" as the secret means the api-key argument is a bearer token or JWT. Prints what it
 * does, waits until every change reached the server, and exits 0 (2 if not in sync). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sync_client.h"

static int fail(const char *what) {
    fprintf(stderr, "%s failed: %s\n", what, sync_last_error());
    return 1;
}

int main(int argc, char **argv) {
    if (argc < 6) {
        fprintf(stderr, "usage: %s <database> <server-url> <email> <api-key> <api-secret|-> [wait-seconds]\n", argv[0]);
        return 64;
    }
    int wait_seconds = argc > 6 ? atoi(argv[6]) : 20;
    char *version = sync_get_version();
    printf("sync-client %s\n", version);
    sync_string_free(version);

    const char *secret = strcmp(argv[5], "-") == 0 ? NULL : argv[5];
    struct CSyncEngine *engine = sync_engine_create(argv[1], argv[2], argv[3], argv[4], secret);
    if (!engine) return fail("sync_engine_create");

    char id[37];
    if (sync_engine_create_document(engine, "{\"title\":\"from C\",\"count\":1,\"tags\":[\"c\"]}", id) != Success)
        return fail("create_document");
    printf("created %s\n", id);
    if (sync_engine_update_document(engine, id, "{\"count\":2}") != Success) return fail("update_document");
    if (sync_engine_patch_document(engine, id, "[{\"op\":\"add\",\"path\":\"/tags/-\",\"value\":\"sdk\"}]") != Success)
        return fail("patch_document");

    char doomed[37];
    if (sync_engine_create_document(engine, "{\"title\":\"to delete from C\"}", doomed) != Success)
        return fail("create_document");
    if (sync_engine_delete_document(engine, doomed) != Success) return fail("delete_document");
    printf("deleted %s\n", doomed);

    /* Bad input is refused with a message, and nothing changes. */
    if (sync_engine_update_document(engine, NULL, "{}") != ErrorInvalidInput) return fail("NULL check");
    printf("null rejected: %s\n", sync_last_error());
    if (sync_engine_update_document(engine, id, "{not json") != ErrorInvalidInput) return fail("JSON check");
    printf("bad json rejected: %s\n", sync_last_error());
    char *missing = NULL;
    if (sync_engine_get_document(engine, "no-such-document", &missing) != ErrorNotFound) return fail("not-found check");
    /* So are bad options: no engine, and the reason names the option. */
    if (sync_engine_create_with_options(argv[1], argv[2], argv[3], argv[4], secret, "{\"collections\":[\"No Caps\"]}"))
        return fail("options check");
    printf("bad options rejected: %s\n", sync_last_error());

    char *json = NULL;
    if (sync_engine_get_document(engine, id, &json) != Success) return fail("get_document");
    printf("document %s\n", json);
    sync_string_free(json);

    int synced = 0;
    for (int i = 0; i < wait_seconds * 20 && !synced; i++) {
        uint64_t pending = 1;
        uint32_t processed = 0;
        if (sync_engine_process_events(engine, &processed) != Success) return fail("process_events");
        if (sync_engine_count_pending_sync(engine, &pending) != Success) return fail("count_pending_sync");
        synced = pending == 0 && sync_engine_is_connected(engine);
        if (!synced) usleep(50 * 1000);
    }
    char *user_id = NULL;
    if (sync_engine_get_user_id(engine, &user_id) != Success) return fail("get_user_id");
    printf("user %s\n", user_id ? user_id : "(not connected yet)");
    sync_string_free(user_id);
    uint64_t count = 0;
    if (sync_engine_count_documents(engine, &count) != Success) return fail("count_documents");
    char *all = NULL;
    if (sync_engine_get_all_documents(engine, &all) != Success) return fail("get_all_documents");
    printf("documents %llu %s\n", (unsigned long long)count, all);
    sync_string_free(all);
    printf(synced ? "synced\n" : "not synced\n");
    fflush(stdout);
    sync_engine_destroy(engine);
    return synced ? 0 : 2;
}
