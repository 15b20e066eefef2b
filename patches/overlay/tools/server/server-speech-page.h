#pragma once

// The speech page (q3build overlay): GET /speech serves a plain HTML/JS/CSS page (speech-page/,
// embedded at configure time by speech-page/embed.cmake) that speaks text through
// POST /v1/audio/speech (SSE) and plays it with Web Audio. Served whether or not the web UI is built.

struct server_http_context;

void server_speech_page_register(const server_http_context & ctx_http);
