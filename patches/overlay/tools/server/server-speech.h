#pragma once

#include "server-http.h"

// OpenAI-compatible speech endpoints for llama-server (carried by q3build as overlay sources).
//
// Synthesis runs in-process on libmtmd's Qwen3-TTS support (mtmd_helper_gen_audio). A server
// started without a speech model still answers these routes, with 501 and an OpenAI-style error,
// so a client learns why instead of getting a bare 404.

struct server_speech_routes {
    server_http_context::handler_t post_speech; // POST /v1/audio/speech
    server_http_context::handler_t get_voices;  // GET  /v1/audio/voices
};

server_speech_routes server_speech_routes_init();

// registers the routes under /v1/audio/... and /audio/...; the handlers never throw
void server_speech_register(const server_http_context & ctx_http, const server_speech_routes & routes);
