/* topics.c: live messages on topics from C, with callbacks run on this thread by
 * sync_engine_process_events().
 *
 *   ./topics <database> <server-url> <email> <api-key> <api-secret|-> <seconds> <topic>
 *
 * Waits until connected, subscribes to <topic> and to the user's personal topic, and
 * prints one line per topic event. Every message on <topic> is answered on <topic>.reply
 * with {"echo": <its data>}; a message {"stop": true} ends the subscription and the
 * program. Runs at most <seconds>. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sync_client.h"

struct app {
    struct CSyncEngine *engine;
    char reply_topic[300];
    uint64_t topic_subscription;
    int stop;
};

static const char *kind_name(SyncTopicEventKind kind) {
    switch (kind) {
        case SYNC_TOPIC_MESSAGE: return "message";
        case SYNC_TOPIC_GAP: return "gap";
        case SYNC_TOPIC_REFUSED: return "refused";
        default: return "unknown";
    }
}

static void on_personal(const SyncTopicEvent *event, void *user_data) {
    (void)user_data;
    printf("TOPIC personal %s topic=%s from=%s data=%s\n", kind_name(event->kind), event->topic ? event->topic : "-",
           event->from ? event->from : "-", event->data ? event->data : "-");
    fflush(stdout);
}

static void on_topic(const SyncTopicEvent *event, void *user_data) {
    struct app *app = user_data;
    printf("TOPIC %s sub=%s topic=%s from=%s offset=%llu missed=%llu data=%s\n", kind_name(event->kind),
           event->subscription, event->topic ? event->topic : "-",
           event->from ? event->from : "-", (unsigned long long)event->offset, (unsigned long long)event->missed,
           event->data ? event->data : "-");
    if (event->kind != SYNC_TOPIC_MESSAGE) return;
    if (strstr(event->data, "\"stop\":true")) {
        /* From inside a callback: no callback of this subscription runs after this. */
        CSyncResult r = sync_engine_unsubscribe(app->engine, app->topic_subscription);
        printf("unsubscribed %d\n", r);
        printf("unsubscribe again: %d\n", sync_engine_unsubscribe(app->engine, app->topic_subscription));
        app->stop = 1;
        fflush(stdout);
        return;
    }
    /* Publishing waits for the server's answer (a round trip). */
    size_t size = strlen(event->data) + 16;
    char *reply = malloc(size);
    snprintf(reply, size, "{\"echo\":%s}", event->data);
    uint64_t delivered = 0, offset = 0;
    CSyncResult r = sync_engine_publish(app->engine, app->reply_topic, reply, false, &delivered, &offset);
    free(reply);
    if (r == Success)
        printf("replied delivered=%llu offset=%llu\n", (unsigned long long)delivered, (unsigned long long)offset);
    else
        printf("reply failed (%d): %s\n", r, sync_last_error());
    fflush(stdout);
}

int main(int argc, char **argv) {
    if (argc < 8) {
        fprintf(stderr, "usage: %s <database> <server-url> <email> <api-key> <api-secret|-> <seconds> <topic>\n",
                argv[0]);
        return 64;
    }
    const char *secret = strcmp(argv[5], "-") == 0 ? NULL : argv[5];
    struct app app = {0};
    app.engine = sync_engine_create(argv[1], argv[2], argv[3], argv[4], secret);
    if (!app.engine) {
        fprintf(stderr, "sync_engine_create failed: %s\n", sync_last_error());
        return 1;
    }
    snprintf(app.reply_topic, sizeof app.reply_topic, "%s.reply", argv[7]);
    int ticks = atoi(argv[6]) * 20;

    /* The personal topic needs no server and no user id yet. */
    uint64_t personal = 0;
    if (sync_engine_subscribe_personal(app.engine, on_personal, NULL, &personal) != Success) {
        fprintf(stderr, "subscribe_personal failed: %s\n", sync_last_error());
        return 1;
    }
    /* Refused locally: a wildcard in a name to publish to, a bad pattern, no callback.
     * (sync_last_error() is read after the call: C leaves the order of arguments open.) */
    CSyncResult r = sync_engine_publish(app.engine, "news.*", "{}", false, NULL, NULL);
    printf("bad publish rejected (%d): %s\n", r, sync_last_error());
    r = sync_engine_subscribe(app.engine, "a..b", on_topic, &app, NULL);
    printf("bad pattern rejected (%d): %s\n", r, sync_last_error());
    r = sync_engine_subscribe(app.engine, argv[7], NULL, NULL, NULL);
    printf("null callback rejected (%d)\n", r);

    int i = 0;
    for (; i < ticks && !sync_engine_is_connected(app.engine); i++) {
        sync_engine_process_events(app.engine, NULL);
        usleep(50 * 1000);
    }
    /* Connected: this waits for the server's answer. */
    if (sync_engine_subscribe(app.engine, argv[7], on_topic, &app, &app.topic_subscription) != Success) {
        fprintf(stderr, "subscribe failed: %s\n", sync_last_error());
        return 1;
    }
    printf("subscribed %s id=%llu personal=%llu\n", argv[7], (unsigned long long)app.topic_subscription,
           (unsigned long long)personal);
    fflush(stdout);
    for (; i < ticks && !app.stop; i++) {
        sync_engine_process_events(app.engine, NULL);
        usleep(50 * 1000);
    }
    sync_engine_unsubscribe(app.engine, personal);
    sync_engine_destroy(app.engine);
    printf("%s\n", app.stop ? "stopped" : "timed out");
    return app.stop ? 0 : 2;
}
