#include "server-speech-metrics.h"

#include <algorithm>
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

void speech_metrics::batch(int n) {
    if (n <= 0) {
        return;
    }
    std::lock_guard<std::mutex> lock(mtx);
    n_decodes++;
    n_batch_frames += n;
    n_batched_frames += n > 1 ? n : 0;
    batch_buckets[n <= 1 ? 0 : n <= 2 ? 1 : n <= 4 ? 2 : n <= 8 ? 3 : 4]++;
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
            {"speech_talker_decodes_total", "Number of talker decodes that generated frames (one per batch)", (double) n_decodes},
            {"speech_batched_frames_total", "Number of frames generated in a talker decode shared with other requests", (double) n_batched_frames},
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
    int64_t buckets[n_batch_buckets];
    int64_t decodes = 0, batch_frames = 0;
    {
        std::lock_guard<std::mutex> lock(mtx);
        std::copy(batch_buckets, batch_buckets + n_batch_buckets, buckets);
        decodes      = n_decodes;
        batch_frames = n_batch_frames;
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
    // requests per talker decode, cumulative buckets as Prometheus histograms have them
    static const char * les[n_batch_buckets] = {"1", "2", "4", "8", "+Inf"};
    out << "# HELP llamacpp:speech_batch_size Requests whose frames one talker decode generated\n"
        << "# TYPE llamacpp:speech_batch_size histogram\n";
    int64_t cum = 0;
    for (int i = 0; i < n_batch_buckets; i++) {
        cum += buckets[i];
        out << "llamacpp:speech_batch_size_bucket{le=\"" << les[i] << "\"} " << cum << "\n";
    }
    out << "llamacpp:speech_batch_size_sum " << batch_frames << "\n"
        << "llamacpp:speech_batch_size_count " << decodes << "\n";
    return out.str();
}
