#pragma once

// Counters of the speech service for llama-server's /metrics (Prometheus text, llama-server's naming:
// llamacpp:<name>). Counters grow for the life of the process; the gauges averaged over a window
// (real-time factor, time to first audio) cover the requests finished since the previous scrape, as
// llama-server's own throughput gauges do.

#include <cstdint>
#include <mutex>
#include <string>

class speech_metrics {
public:
    // frames generated (80 ms codec frames), counted as they are made
    void frames(int n);
    // a request handed its first audio to the HTTP layer (a stream's first chunk, a whole file)
    void first_audio(double seconds);
    // a request finished: audio seconds delivered, wall seconds from its arrival
    void done(double audio_s, double wall_s);
    // a request failed after it had a slot
    void failed();
    // one talker decode generated a frame for each of n requests
    void batch(int n);

    // the exposition text; slots/busy/waiting are the engine's occupancy now
    std::string prometheus(int n_slots, int n_busy, int n_waiting);

private:
    std::mutex mtx;
    int64_t n_frames = 0, n_requests = 0, n_failed = 0, n_first = 0;
    double  audio_s = 0, wall_s = 0, ttfa_s = 0;
    // since the previous scrape
    double  win_audio_s = 0, win_wall_s = 0, win_ttfa_s = 0;
    int64_t win_first = 0;
    // talker decodes by requests in them: 1, 2, 3-4, 5-8, more (a histogram's buckets)
    static constexpr int n_batch_buckets = 5;
    int64_t batch_buckets[n_batch_buckets] = {};
    int64_t n_decodes = 0, n_batch_frames = 0, n_batched_frames = 0;
};
