// basic.cpp: the header-only C++ API (SyncClient::sync_engine), RAII and exceptions.
//
//   ./basic_cpp <database> <server-url> <email> <api-key> <api-secret|-> [wait-seconds]
#include <chrono>
#include <cstdlib>
#include <iostream>
#include <string>
#include <thread>

#include "sync_client.hpp"

int main(int argc, char **argv) {
    if (argc < 6) {
        std::cerr << "usage: " << argv[0] << " <database> <server-url> <email> <api-key> <api-secret|-> [wait]\n";
        return 64;
    }
    int wait_seconds = argc > 6 ? std::atoi(argv[6]) : 20;
    try {
        std::cout << "sync-client " << SyncClient::sync_engine::get_version() << std::endl;
        const char *secret = std::string(argv[5]) == "-" ? nullptr : argv[5];
        SyncClient::sync_engine engine(argv[1], argv[2], argv[3], argv[4], secret);
        int local_events = 0;
        engine.register_callback([&local_events](const SyncEventData *event, void *) {
            if (event->event_type == SYNC_EVENT_DOCUMENT_CREATED || event->event_type == SYNC_EVENT_DOCUMENT_UPDATED)
                ++local_events;
        });
        std::string id = engine.create_document(R"({"title":"from C++","count":1})");
        std::cout << "created " << id << std::endl;
        engine.update_document(id, R"({"count":2,"lang":"c++"})");
        engine.patch_document(id, R"([{"op":"add","path":"/tags","value":["cpp"]}])");
        try {
            engine.update_document("no-such-document", R"({})");
            std::cout << "missing document accepted?!" << std::endl;
            return 1;
        } catch (const SyncClient::sync_exception &e) {
            std::cout << "not found (" << e.code() << "): " << e.what() << std::endl;
        }
        try {
            SyncClient::sync_engine bad(argv[1], argv[2], argv[3], argv[4], secret, R"({"sync_everything":true})");
            std::cout << "unknown option accepted?!" << std::endl;
            return 1;
        } catch (const SyncClient::sync_exception &e) {
            std::cout << "bad options rejected (" << e.code() << "): " << e.what() << std::endl;
        }
        bool synced = false;
        for (int i = 0; i < wait_seconds * 20 && !synced; ++i) {
            engine.process_events();
            synced = engine.count_pending_sync() == 0 && engine.is_connected();
            if (!synced) std::this_thread::sleep_for(std::chrono::milliseconds(50));
        }
        std::cout << "document " << engine.get_document(id) << std::endl;
        std::cout << "events " << local_events << std::endl;
        std::cout << "user " << engine.get_user_id() << std::endl;
        std::cout << (synced ? "synced" : "not synced") << std::endl;
        if (synced) {
            // Topics: a message published with echo comes back to this session's subscription.
            std::string received;
            uint64_t sub = engine.subscribe("cpp.topic", [&received](const SyncTopicEvent *e) {
                if (e->kind == SYNC_TOPIC_MESSAGE) received = e->data;
            });
            uint64_t delivered = engine.publish("cpp.topic", R"({"from":"c++"})", true);
            for (int i = 0; i < wait_seconds * 20 && received.empty(); ++i) {
                engine.process_events();
                if (received.empty()) std::this_thread::sleep_for(std::chrono::milliseconds(50));
            }
            std::cout << "topic delivered " << delivered << " received " << received << std::endl;
            engine.unsubscribe(sub);
            try {
                engine.publish("cpp.*", "{}");
                std::cout << "wildcard publish accepted?!" << std::endl;
                return 1;
            } catch (const SyncClient::sync_exception &e) {
                std::cout << "bad topic rejected (" << e.code() << "): " << e.what() << std::endl;
            }
        }
        SyncClient::sync_engine moved = std::move(engine);  // move-only, still works
        std::cout << "documents " << moved.count_documents() << std::endl;
        return synced ? 0 : 2;
    } catch (const std::exception &e) {
        std::cerr << "error: " << e.what() << std::endl;
        return 1;
    }
}
