#include "server-speech.h"

#include "server-common.h"

#include <memory>
#include <string>

// OpenAI error body: {"error": {"message", "type", "param", "code"}}
static server_http_res_ptr speech_error(int status, const std::string & type, const std::string & code,
                                        const std::string & message) {
    auto res = std::make_unique<server_http_res>();
    res->status = status;
    res->data   = json {
        {"error", json {
            {"message", message},
            {"type",    type},
            {"param",   nullptr},
            {"code",    code},
        }},
    }.dump();
    return res;
}

static server_http_res_ptr speech_not_enabled(const server_http_req &) {
    return speech_error(501, "not_supported_error", "speech_not_enabled",
                        "speech synthesis is not enabled on this server: start llama-server with a "
                        "Qwen3-TTS talker model (-m) and its mmproj (--mmproj)");
}

server_speech_routes server_speech_routes_init() {
    return server_speech_routes {
        /* post_speech */ speech_not_enabled,
        /* get_voices  */ speech_not_enabled,
    };
}

void server_speech_register(const server_http_context & ctx_http, const server_speech_routes & routes) {
    ctx_http.post("/v1/audio/speech", routes.post_speech);
    ctx_http.post("/audio/speech",    routes.post_speech);
    ctx_http.get ("/v1/audio/voices", routes.get_voices);
    ctx_http.get ("/audio/voices",    routes.get_voices);
}
