#include "server-speech-metrics.h"

#include <sstream>
#include <vector>

void speech_metrics::frames(int n) {
    std::lock_guard<std::mutex> lock(mtx);
    n_frames += n;
}

void speech_metrics::first_audio(double seconds) {
    std::lock_guard<std::mutex> lock(mtx);
    n_first++;
    ttfa_s += seconds;
    win_first++;
    win_ttfa_s += seconds;
}

void speech_metrics::done(double a, double w) {
    std::lock_guard<std::mutex> lock(mtx);
    n_requests++;
    audio_s += a;
    wall_s  += w;
    win_audio_s += a;
    win_wall_s  += w;
}

void speech_metrics::failed() {
    std::lock_guard<std::mutex> lock(mtx);
    n_failed++;
}

std::string speech_metrics::prometheus(int n_slots, int n_busy, int n_waiting) {
    struct item { const char * name; const char * help; double value; };
    std::vector<item> counters, gauges;
    {
        std::lock_guard<std::mutex> lock(mtx);
        counters = {
            {"speech_requests_total",       "Number of speech requests answered to the end", (double) n_requests},
            {"speech_requests_failed_total", "Number of speech requests that failed after they had a slot", (double) n_failed},
            {"speech_frames_total",         "Number of 80 ms codec frames generated", (double) n_frames},
            {"speech_audio_seconds_total",  "Seconds of audio delivered by finished requests", audio_s},
            {"speech_seconds_total",        "Wall seconds of finished requests, from arrival to their last audio", wall_s},
            {"speech_ttfa_seconds_total",   "Sum of the times to first audio (arrival to first audio bytes)", ttfa_s},
            {"speech_ttfa_requests_total",  "Number of requests in speech_ttfa_seconds_total", (double) n_first},
        };
        gauges = {
            {"speech_slots",                "Number of speech slots (requests synthesized side by side)", (double) n_slots},
            {"speech_requests_processing",  "Number of speech requests on a slot", (double) n_busy},
            {"speech_requests_deferred",    "Number of speech requests waiting for a slot", (double) n_waiting},
            {"speech_real_time_factor",     "Wall seconds per audio second of the requests finished since the previous scrape (0: none)",
                                            win_audio_s > 0 ? win_wall_s / win_audio_s : 0.0},
            {"speech_ttfa_seconds",         "Average time to first audio of the requests started since the previous scrape (0: none)",
                                            win_first > 0 ? win_ttfa_s / (double) win_first : 0.0},
        };
        win_audio_s = win_wall_s = win_ttfa_s = 0;
        win_first = 0;
    }
    std::ostringstream out;
    auto add = [&](const char * type, const std::vector<item> & items) {
        for (const auto & it : items) {
            out << "# HELP llamacpp:" << it.name << " " << it.help << "\n"
                << "# TYPE llamacpp:" << it.name << " " << type << "\n"
                << "llamacpp:" << it.name << " " << it.value << "\n";
        }
    };
    add("counter", counters);
    add("gauge", gauges);
    return out.str();
}
