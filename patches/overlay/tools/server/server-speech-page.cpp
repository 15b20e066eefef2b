#include "server-speech-page.h"

#include "server-http.h"
#include "server-speech-page-assets.h"

#include <memory>
#include <string>

void server_speech_page_register(const server_http_context & ctx_http) {
    for (const speech_page_asset & a : speech_page_assets) {
        ctx_http.get(a.route, [&a](const server_http_req &) {
            auto res = std::make_unique<server_http_res>();
            res->content_type = std::string(a.type) + "; charset=utf-8";
            res->data.assign(reinterpret_cast<const char *>(a.data), a.size);
            res->headers["Cache-Control"] = "no-cache";
            return res;
        });
    }
}
