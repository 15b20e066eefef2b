// C entry points over speech_audio for the ctypes tests in test_speech_audio.py.
// Results of unknown size come back in a malloc'd buffer that the caller releases with sa_free.

#include "server-speech-audio.h"

#include <cstdlib>
#include <cstring>

using namespace speech_audio;

static void give(const void * data, size_t size, char ** out, size_t * out_size) {
    *out = (char *) std::malloc(size ? size : 1);
    if (size) {
        std::memcpy(*out, data, size);
    }
    *out_size = size;
}

static void give(const std::string & s, char ** out, size_t * out_size) {
    give(s.data(), s.size(), out, out_size);
}

extern "C" {

void sa_free(void * p) {
    std::free(p);
}

size_t sa_utf8_length(const char * text, size_t n) {
    return utf8_length(std::string(text, n));
}

void sa_strip_invisible(const char * text, size_t n, char ** out, size_t * out_size) {
    give(strip_invisible(std::string(text, n)), out, out_size);
}

// the reason a WAV file cannot be a reference recording (empty: usable), at the server's limits
void sa_check_reference_wav(const char * data, size_t n, char ** out, size_t * out_size) {
    wav_info info;
    give(check_reference_wav(std::string(data, n), reference_limits{0.5, 60.0, 8000, 192000, 2}, info), out, out_size);
}

// segments, each as a 4-byte little-endian length followed by its bytes
void sa_split_text(const char * text, size_t n, size_t max_chars, char ** out, size_t * out_size) {
    std::string packed;
    for (const auto & seg : split_text(std::string(text, n), max_chars)) {
        const auto len = (uint32_t) seg.size();
        for (int i = 0; i < 4; ++i) {
            packed.push_back((char) ((len >> (8 * i)) & 0xFF));
        }
        packed += seg;
    }
    give(packed, out, out_size);
}

// trims in place (the kept samples are copied back to the front of pcm); returns the number removed
size_t sa_trim_trailing_silence(float * pcm, size_t n, int sample_rate, float threshold_db, float keep_ms) {
    std::vector<float> v(pcm, pcm + n);
    const size_t removed = trim_trailing_silence(v, sample_rate, threshold_db, keep_ms);
    std::copy(v.begin(), v.end(), pcm);
    return removed;
}

float sa_peak_normalize(float * pcm, size_t n, float target_peak, float max_gain) {
    std::vector<float> v(pcm, pcm + n);
    const float gain = peak_normalize(v, target_peak, max_gain);
    std::copy(v.begin(), v.end(), pcm);
    return gain;
}

void * sa_lowpass_new(int sample_rate, float cutoff_hz) {
    return new lowpass_filter(sample_rate, cutoff_hz);
}

void sa_lowpass_process(void * filter, float * pcm, size_t n) {
    static_cast<lowpass_filter *>(filter)->process(pcm, n);
}

void sa_lowpass_delete(void * filter) {
    delete static_cast<lowpass_filter *>(filter);
}

void sa_time_stretch(const float * pcm, size_t n, int sample_rate, float speed, char ** out, size_t * out_size) {
    const auto r = time_stretch(std::vector<float>(pcm, pcm + n), sample_rate, speed);
    give(r.data(), r.size() * sizeof(float), out, out_size);
}

void sa_silence(int sample_rate, int ms, char ** out, size_t * out_size) {
    const auto s = silence(sample_rate, ms);
    give(s.data(), s.size() * sizeof(float), out, out_size);
}

void sa_to_s16(const float * pcm, size_t n, int16_t * out) {
    const auto s = to_s16(pcm, n);
    std::copy(s.begin(), s.end(), out);
}

void sa_encode_wav(const float * pcm, size_t n, int sample_rate, char ** out, size_t * out_size) {
    give(encode_wav(std::vector<float>(pcm, pcm + n), sample_rate), out, out_size);
}

void sa_wav_stream_header(int sample_rate, char ** out, size_t * out_size) {
    give(wav_stream_header(sample_rate), out, out_size);
}

void sa_encode_pcm16(const float * pcm, size_t n, char ** out, size_t * out_size) {
    give(encode_pcm16(pcm, n), out, out_size);
}

void sa_encode_flac(const float * pcm, size_t n, int sample_rate, char ** out, size_t * out_size) {
    give(encode_flac(std::vector<float>(pcm, pcm + n), sample_rate), out, out_size);
}

void * sa_flac_new(int sample_rate, uint64_t total_samples, int block_size) {
    return new flac_encoder(sample_rate, total_samples, block_size);
}

void sa_flac_header(void * enc, char ** out, size_t * out_size) {
    give(static_cast<flac_encoder *>(enc)->header(), out, out_size);
}

void sa_flac_encode(void * enc, const float * pcm, size_t n, int final, char ** out, size_t * out_size) {
    give(static_cast<flac_encoder *>(enc)->encode(pcm, n, final != 0), out, out_size);
}

void sa_flac_delete(void * enc) {
    delete static_cast<flac_encoder *>(enc);
}

} // extern "C"
