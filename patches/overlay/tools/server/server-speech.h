#pragma once

#include "server-http.h"

#include <memory>
#include <string>

struct common_params;
struct llama_model;
class speech_engine;

// OpenAI-compatible speech endpoints for llama-server (carried by q3build as overlay sources).
//
// Synthesis runs in-process on libmtmd's Qwen3-TTS support (mtmd_helper_gen_audio, see
// server-speech-engine.h). A server started without a speech model still answers these routes,
// with 501 and an OpenAI-style error, so a client learns why instead of getting a bare 404.
struct server_speech {
    server_speech();
    ~server_speech();

    // before the HTTP server starts: an audio-generating mmproj is taken for speech (the server's chat
    // side cannot use it, so it does not load it too: no second copy of its weights, no second
    // warm-up), the write timeout becomes --tts-stream-timeout and, without -c, the server's own
    // (chat) context on the talker is made small, since speech runs on contexts of its own
    void prepare(common_params & params);

    // after the server loaded its model: enables speech when it is a Qwen3-TTS talker and --mmproj
    // generates audio; otherwise the routes keep answering 501. false (with the one-line reason logged)
    // when the server must not start: a --tts-voice-alias naming no voice of this server
    bool load(const common_params & params, const llama_model * model);

    // router mode (no -m): the speech routes go to the child serving the request's "model" (for
    // GET /v1/audio/voices the ?model= parameter), as the router's chat routes do
    void route_to_children(server_http_context::handler_t proxy_post, server_http_context::handler_t proxy_get);

    // a server with a model: /metrics (when --metrics is on) gains the speech counters and gauges,
    // /slots the speech slots; call before the routes are registered
    void extend_routes(server_http_context::handler_t & get_metrics, server_http_context::handler_t & get_slots);

    server_http_context::handler_t post_speech; // POST /v1/audio/speech
    server_http_context::handler_t get_voices;  // GET  /v1/audio/voices

    std::unique_ptr<speech_engine> engine;
    std::string mmproj_path; // the audio-generating mmproj prepare() took from the chat side
};

// registers the routes under /v1/audio/... and /audio/...; the handlers never throw
void server_speech_register(const server_http_context & ctx_http, server_speech & speech);
