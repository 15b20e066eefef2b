// C entry points over server-speech-codecs.{h,cpp} for tests/integration/test_speech_codecs.py (ctypes).
#include "server-speech-codecs.h"

#include <cstdlib>
#include <cstring>
#include <string>

static void give(const std::string & s, void ** out, size_t * n) {
    *n   = s.size();
    *out = std::malloc(s.size() ? s.size() : 1);
    if (!s.empty()) {
        std::memcpy(*out, s.data(), s.size());
    }
}

extern "C" {

void sc_free(void * p) { std::free(p); }

int sc_available(const char * format) { return speech_codecs::available(format) ? 1 : 0; }

// whole = 1: encode_file; else a stream fed in chunks of `chunk` samples, the last one final.
// Returns 0 and the bytes, or -1 and the error text.
int sc_encode(const char * format, const float * pcm, size_t n, int rate, int whole, size_t chunk, void ** out,
              size_t * out_n) {
    std::string bytes, err;
    if (whole) {
        std::vector<float> v(pcm, pcm + n);
        if (!speech_codecs::encode_file(format, v, rate, bytes, err)) {
            give(err, out, out_n);
            return -1;
        }
    } else {
        auto enc = speech_codecs::make_encoder(format, rate, false, err);
        if (!enc) {
            give(err, out, out_n);
            return -1;
        }
        size_t off = 0;
        do {
            const size_t m = n - off < chunk ? n - off : chunk;
            bytes += enc->encode(pcm + off, m, off + m == n);
            off += m;
        } while (off < n);
        if (!enc->error.empty()) {
            give(enc->error, out, out_n);
            return -1;
        }
    }
    give(bytes, out, out_n);
    return 0;
}

}
