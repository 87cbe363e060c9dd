/* sync_client.hpp: a header-only C++11 wrapper of the sync-client C API.
 *
 *   SyncClient::sync_engine engine("sqlite:app.db?mode=rwc", "ws://localhost:8080/ws",
 *                                  "me@example.com", "rpa_…", "rps_…");
 *   // or, syncing only some collections:
 *   // SyncClient::sync_engine engine(db, url, email, key, secret, R"({"collections":["tasks"]})");
 *   std::string id = engine.create_document(R"({"title":"Buy milk"})");
 *   engine.update_document(id, R"({"done":true})");
 *   engine.register_callback([&](const SyncEventData *e, void *) { ... });
 *   uint64_t sub = engine.subscribe("team.42.chat", [&](const SyncTopicEvent *e) { ... });
 *   engine.publish("team.42.chat", R"({"text":"hi"})");
 *   engine.process_events();   // from your UI thread or a timer: runs both kinds of callbacks
 *
 * RAII: the destructor destroys the engine (pushing the outbox for its grace period
 * first). Move-only. Every failure throws SyncClient::sync_exception with the message.
 */
#ifndef SYNC_CLIENT_HPP
#define SYNC_CLIENT_HPP

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "sync_client_events.h"

namespace SyncClient {

/* A failed call: the C result code and sync_last_error(). */
class sync_exception : public std::runtime_error {
public:
    sync_exception(CSyncResult code, const std::string &what) : std::runtime_error(what), code_(code) {}
    CSyncResult code() const noexcept { return code_; }

private:
    CSyncResult code_;
};

class sync_engine {
public:
    using callback = std::function<void(const SyncEventData *, void *)>;

    /* The five arguments of sync_engine_create; api_secret nullptr means api_key is a
     * bearer token or JWT. Throws sync_exception on failure. */
    sync_engine(const std::string &database_url, const std::string &server_url, const std::string &email,
                const std::string &api_key, const char *api_secret)
        : engine_(sync_engine_create(database_url.c_str(), server_url.c_str(), email.c_str(), api_key.c_str(),
                                     api_secret)) {
        if (!engine_) throw sync_exception(ErrorInvalidInput, std::string("sync_engine_create: ") + sync_last_error());
    }
    sync_engine(const std::string &database_url, const std::string &server_url, const std::string &email,
                const std::string &api_key, const std::string &api_secret)
        : sync_engine(database_url, server_url, email, api_key, api_secret.c_str()) {}
    /* With the options of sync_engine_create_with_options as a JSON object, e.g.
     * R"({"collections":["tasks"]})" for partial sync, R"({"tls_ca_file":"ca.pem"})" to
     * trust a private CA for wss://. Throws sync_exception on failure
     * (an unknown option or a bad collection name included). */
    sync_engine(const std::string &database_url, const std::string &server_url, const std::string &email,
                const std::string &api_key, const char *api_secret, const std::string &options_json)
        : engine_(sync_engine_create_with_options(database_url.c_str(), server_url.c_str(), email.c_str(),
                                                  api_key.c_str(), api_secret, options_json.c_str())) {
        if (!engine_)
            throw sync_exception(ErrorInvalidInput,
                                 std::string("sync_engine_create_with_options: ") + sync_last_error());
    }
    ~sync_engine() { sync_engine_destroy(engine_); }
    sync_engine(const sync_engine &) = delete;
    sync_engine &operator=(const sync_engine &) = delete;
    sync_engine(sync_engine &&other) noexcept
        : engine_(other.engine_), callbacks_(std::move(other.callbacks_)), topics_(std::move(other.topics_)) {
        other.engine_ = nullptr;
    }
    sync_engine &operator=(sync_engine &&other) noexcept {
        if (this != &other) {
            sync_engine_destroy(engine_);
            engine_ = other.engine_;
            callbacks_ = std::move(other.callbacks_);
            topics_ = std::move(other.topics_);
            other.engine_ = nullptr;
        }
        return *this;
    }

    /* The library version. */
    static std::string get_version() {
        char *v = sync_get_version();
        std::string out = v ? v : "";
        sync_string_free(v);
        return out;
    }

    /* Creates a document from JSON; returns its id. */
    std::string create_document(const std::string &json) {
        char id[64] = {0};
        check(sync_engine_create_document(engine_, json.c_str(), id), "create_document");
        return id;
    }

    /* Creates a document with a chosen id. */
    void create_document_with_id(const std::string &id, const std::string &json) {
        check(sync_engine_create_document_with_id(engine_, id.c_str(), json.c_str()), "create_document_with_id");
    }

    /* Merges a JSON object into the content (RFC 7396). */
    void update_document(const std::string &id, const std::string &json) {
        check(sync_engine_update_document(engine_, id.c_str(), json.c_str()), "update_document");
    }

    /* Applies an RFC 6902 patch (a JSON array). */
    void patch_document(const std::string &id, const std::string &json_patch) {
        check(sync_engine_patch_document(engine_, id.c_str(), json_patch.c_str()), "patch_document");
    }

    /* Deletes a document. */
    void delete_document(const std::string &id) {
        check(sync_engine_delete_document(engine_, id.c_str()), "delete_document");
    }

    /* A document as JSON ({id, collection, title, content, sync_revision, status, pending,
     * owner}); `owner` is another user's id for a document shared with this one. */
    std::string get_document(const std::string &id) {
        char *json = nullptr;
        check(sync_engine_get_document(engine_, id.c_str(), &json), "get_document");
        return take(json);
    }

    /* Every document as a JSON array. */
    std::string get_all_documents() {
        char *json = nullptr;
        check(sync_engine_get_all_documents(engine_, &json), "get_all_documents");
        return take(json);
    }

    /* Number of documents. */
    uint64_t count_documents() {
        uint64_t n = 0;
        check(sync_engine_count_documents(engine_, &n), "count_documents");
        return n;
    }

    /* Local changes waiting for the server. */
    uint64_t count_pending_sync() {
        uint64_t n = 0;
        check(sync_engine_count_pending_sync(engine_, &n), "count_pending_sync");
        return n;
    }

    /* The user id the server knows this user as; "" until the engine has connected once. */
    std::string get_user_id() {
        char *id = nullptr;
        check(sync_engine_get_user_id(engine_, &id), "get_user_id");
        return take(id);
    }

    /* Whether connected and authenticated. */
    bool is_connected() const { return sync_engine_is_connected(engine_); }

    /* Registers a callback (a lambda may capture); `context` is handed back to it. */
    void register_callback(callback cb, void *context = nullptr, int32_t event_filter = -1) {
        std::unique_ptr<holder> h(new holder{std::move(cb), context});
        check(sync_engine_register_event_callback(engine_, &sync_engine::trampoline, h.get(), event_filter),
              "register_callback");
        callbacks_.push_back(std::move(h));
    }

    /* Runs the callbacks of queued events and topic messages on this thread; returns how
     * many ran. */
    uint32_t process_events() {
        uint32_t processed = 0;
        CSyncResult result = sync_engine_process_events(engine_, &processed);
        retired_.clear();
        check(result, "process_events");
        return processed;
    }

    /* --- topics (issue 14) --- */
    using topic_callback = std::function<void(const SyncTopicEvent *)>;

    /* Subscribes to a topic name or pattern ("team.*.chat", "team.>"); the callback runs
     * in process_events() for each message (and gap). Waits for the server's answer when
     * connected; throws sync_exception on a refusal (ErrorRefused) or a bad name. Returns
     * the id for unsubscribe(). */
    uint64_t subscribe(const std::string &topic, topic_callback cb) {
        std::unique_ptr<topic_callback> h(new topic_callback(std::move(cb)));
        uint64_t id = 0;
        check(sync_engine_subscribe(engine_, topic.c_str(), &sync_engine::topic_trampoline, h.get(), &id), "subscribe");
        topics_[id] = std::move(h);
        return id;
    }

    /* Subscribes to this user's personal topic (user.<id>), which needs no server answer. */
    uint64_t subscribe_personal(topic_callback cb) {
        std::unique_ptr<topic_callback> h(new topic_callback(std::move(cb)));
        uint64_t id = 0;
        check(sync_engine_subscribe_personal(engine_, &sync_engine::topic_trampoline, h.get(), &id),
              "subscribe_personal");
        topics_[id] = std::move(h);
        return id;
    }

    /* Ends a subscription; its callback is not called again (also safe from inside it). */
    void unsubscribe(uint64_t id) {
        check(sync_engine_unsubscribe(engine_, id), "unsubscribe");
        /* Kept until the next process_events() returns: the callback may be running now. */
        retired_.push_back(std::move(topics_[id]));
        topics_.erase(id);
    }

    /* Publishes JSON on a topic name and waits for the server's answer; returns how many
     * sessions it was queued for. Throws when offline (ErrorNotConnected) or refused. */
    uint64_t publish(const std::string &topic, const std::string &json, bool echo = false) {
        uint64_t delivered = 0;
        check(sync_engine_publish(engine_, topic.c_str(), json.c_str(), echo, &delivered, nullptr), "publish");
        return delivered;
    }
    /* --- end topics --- */

    /* The C handle. */
    CSyncEngine *handle() const { return engine_; }

private:
    struct holder {
        callback cb;
        void *context;
    };
    static void trampoline(const SyncEventData *event, void *h) {
        holder *self = static_cast<holder *>(h);
        self->cb(event, self->context);
    }
    static std::string take(char *s) {
        std::string out = s ? s : "";
        sync_string_free(s);
        return out;
    }
    static void check(CSyncResult result, const char *what) {
        if (result != Success) throw sync_exception(result, std::string(what) + ": " + sync_last_error());
    }
    static void topic_trampoline(const SyncTopicEvent *event, void *h) { (*static_cast<topic_callback *>(h))(event); }
    CSyncEngine *engine_;
    std::vector<std::unique_ptr<holder>> callbacks_;
    /* Topic callbacks by subscription id, heap-allocated so their addresses survive moves. */
    std::map<uint64_t, std::unique_ptr<topic_callback>> topics_;
    std::vector<std::unique_ptr<topic_callback>> retired_;
};

}  // namespace SyncClient

#endif /* SYNC_CLIENT_HPP */
