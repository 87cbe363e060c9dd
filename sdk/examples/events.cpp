// events.cpp: C++ lambdas with captures as callbacks (SyncEngine from sync_client_events.h).
//
//   ./events_cpp <database> <server-url> <email> <api-key> <api-secret|-> <seconds>
#include <chrono>
#include <cstdlib>
#include <iostream>
#include <map>
#include <string>
#include <thread>

#include "sync_client_events.h"

int main(int argc, char **argv) {
    if (argc < 7) {
        std::cerr << "usage: " << argv[0] << " <database> <server-url> <email> <api-key> <api-secret|-> <seconds>\n";
        return 64;
    }
    try {
        const char *secret = std::string(argv[5]) == "-" ? nullptr : argv[5];
        SyncEngine engine(argv[1], argv[2], argv[3], argv[4], secret);
        std::map<std::string, int> counts;
        std::string tag = "cpp";
        engine.register_callback([&counts, tag](const SyncEventData *event, void *) {
            counts[get_event_name(event->event_type)]++;
            std::cout << "EVENT " << get_event_name(event->event_type) << " id="
                      << (event->document_id ? event->document_id : "-")
                      << " title=" << (event->title ? event->title : "-") << " remote=" << event->boolean_data
                      << " via=" << tag;
            if (event->event_type == SYNC_EVENT_APPLICATION_EVENT) {
                std::cout << " action=" << event->action << " payload=" << (event->content ? event->content : "null");
            }
            std::cout << std::endl;
        });
        int seconds = std::atoi(argv[6]);
        for (int i = 0; i < seconds * 20; ++i) {
            engine.process_events();
            std::this_thread::sleep_for(std::chrono::milliseconds(50));
        }
        engine.process_events();
        for (const auto &entry : counts) std::cout << "count " << entry.first << "=" << entry.second << std::endl;
        return 0;
    } catch (const std::exception &e) {
        std::cerr << "error: " << e.what() << std::endl;
        return 1;
    }
}
