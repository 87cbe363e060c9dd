/* sync_client_events.h: the event API of sync-client, for C and C++.
 *
 * Includes sync_client.h (SyncEventData, SyncEventType, SyncEventCallback and the
 * functions). Callbacks run only inside sync_engine_process_events(), on the thread that
 * calls it: call it from your UI thread or a timer (see FRAMEWORK_INTEGRATION.md).
 *
 * For C++ this header also defines `SyncEngine`, an RAII engine whose callbacks may be
 * lambdas with captures. `get_event_name()` names an event type in both languages.
 */
#ifndef SYNC_CLIENT_EVENTS_H
#define SYNC_CLIENT_EVENTS_H

#include "sync_client.h"

/* The name of an event type ("document_created", …), or "unknown". */
static inline const char *get_event_name(int event_type) {
    switch (event_type) {
        case SYNC_EVENT_DOCUMENT_CREATED: return "document_created";
        case SYNC_EVENT_DOCUMENT_UPDATED: return "document_updated";
        case SYNC_EVENT_DOCUMENT_DELETED: return "document_deleted";
        case SYNC_EVENT_SYNC_STARTED: return "sync_started";
        case SYNC_EVENT_SYNC_COMPLETED: return "sync_completed";
        case SYNC_EVENT_SYNC_ERROR: return "sync_error";
        case SYNC_EVENT_CONFLICT_DETECTED: return "conflict_detected";
        case SYNC_EVENT_CONNECTION_LOST: return "connection_lost";
        case SYNC_EVENT_CONNECTION_ATTEMPTED: return "connection_attempted";
        case SYNC_EVENT_CONNECTION_SUCCEEDED: return "connection_succeeded";
        case SYNC_EVENT_DOCUMENT_SHARED: return "document_shared";
        case SYNC_EVENT_ACCESS_REVOKED: return "access_revoked";
        case SYNC_EVENT_APPLICATION_EVENT: return "application_event";
        default: return "unknown";
    }
}

#ifdef __cplusplus
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

/* An RAII engine for C++ event-driven code: destroys (pushing the outbox first) when it
 * goes out of scope; move-only; callbacks may capture state. Errors throw
 * std::runtime_error with sync_last_error(). */
class SyncEngine {
public:
    using Callback = std::function<void(const SyncEventData *, void *)>;

    SyncEngine(const std::string &database_url, const std::string &server_url, const std::string &email,
               const std::string &api_key, const char *api_secret)
        : engine_(sync_engine_create(database_url.c_str(), server_url.c_str(), email.c_str(), api_key.c_str(),
                                     api_secret)) {
        if (!engine_) throw std::runtime_error(std::string("sync_engine_create: ") + sync_last_error());
    }
    SyncEngine(const std::string &database_url, const std::string &server_url, const std::string &email,
               const std::string &api_key, const std::string &api_secret)
        : SyncEngine(database_url, server_url, email, api_key, api_secret.c_str()) {}
    /* With the options of sync_engine_create_with_options, e.g. R"({"collections":["tasks"]})". */
    SyncEngine(const std::string &database_url, const std::string &server_url, const std::string &email,
               const std::string &api_key, const char *api_secret, const std::string &options_json)
        : engine_(sync_engine_create_with_options(database_url.c_str(), server_url.c_str(), email.c_str(),
                                                  api_key.c_str(), api_secret, options_json.c_str())) {
        if (!engine_) throw std::runtime_error(std::string("sync_engine_create_with_options: ") + sync_last_error());
    }
    ~SyncEngine() { sync_engine_destroy(engine_); }
    SyncEngine(const SyncEngine &) = delete;
    SyncEngine &operator=(const SyncEngine &) = delete;
    SyncEngine(SyncEngine &&other) noexcept : engine_(other.engine_), callbacks_(std::move(other.callbacks_)) {
        other.engine_ = nullptr;
    }
    SyncEngine &operator=(SyncEngine &&other) noexcept {
        if (this != &other) {
            sync_engine_destroy(engine_);
            engine_ = other.engine_;
            callbacks_ = std::move(other.callbacks_);
            other.engine_ = nullptr;
        }
        return *this;
    }

    /* Registers a callback for every event (filter -1) or one type; `context` is handed
     * back as the callback's second argument. */
    void register_callback(Callback callback, void *context = nullptr, int event_filter = -1) {
        std::unique_ptr<Holder> holder(new Holder{std::move(callback), context});
        check(sync_engine_register_event_callback(engine_, &SyncEngine::trampoline, holder.get(), event_filter),
              "sync_engine_register_event_callback");
        callbacks_.push_back(std::move(holder));
    }

    /* Runs the callbacks of queued events on this thread; returns how many ran. */
    uint32_t process_events() {
        uint32_t processed = 0;
        check(sync_engine_process_events(engine_, &processed), "sync_engine_process_events");
        return processed;
    }

    /* The C handle, for the other sync_engine_* functions. */
    CSyncEngine *handle() const { return engine_; }

private:
    struct Holder {
        Callback callback;
        void *context;
    };
    static void trampoline(const SyncEventData *event, void *holder) {
        Holder *h = static_cast<Holder *>(holder);
        h->callback(event, h->context);
    }
    static void check(CSyncResult result, const char *what) {
        if (result != Success) throw std::runtime_error(std::string(what) + ": " + sync_last_error());
    }
    CSyncEngine *engine_;
    /* Heap-allocated so their addresses survive moves of the engine. */
    std::vector<std::unique_ptr<Holder>> callbacks_;
};
#endif /* __cplusplus */

#endif /* SYNC_CLIENT_EVENTS_H */
