#pragma once

// Text segmentation, audio post-processing and encoders for the speech service.
// Pure functions on std containers: no llama/ggml dependency, so they are unit-tested on their own.

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace speech_audio {

//
// text
//

// number of Unicode code points; invalid UTF-8 counts one per byte
size_t utf8_length(const std::string & text);
// every byte belongs to a well-formed UTF-8 sequence
bool utf8_valid(const std::string & text);

// text without C0/C1 control characters (other than tab and line breaks) and invisible format
// characters (zero-width spaces and joiners, direction marks, BOM, soft hyphen, variation
// selectors): nothing a voice could speak, and NUL would end the text for C code downstream
std::string strip_invisible(const std::string & text);

// Splits text into segments of at most max_chars code points each, for synthesis one by one.
// Splits after sentence punctuation (. ! ? ; and the CJK 。！？；… plus newlines), merges short
// sentences up to the cap, and breaks an over-long sentence at a clause mark (, ， 、 ： :), then
// at a space, then between CJK characters, and only as a last resort mid-word.
// Never drops text: concatenating the segments gives the input minus whitespace at the cuts.
// Whitespace-only segments are not returned.
std::vector<std::string> split_text(const std::string & text, size_t max_chars);

//
// post-processing (mono float PCM in [-1, 1])
//

// Removes trailing samples below threshold_db (dBFS, absolute peak in 10 ms windows), keeping
// keep_ms of the quiet tail so the end is not clipped. Returns the number of samples removed.
size_t trim_trailing_silence(std::vector<float> & pcm, int sample_rate, float threshold_db = -45.0f,
                             float keep_ms = 120.0f);

// Scales so the absolute peak equals target_peak, with the gain capped at max_gain (so near
// silence is not blown up to full scale). Returns the gain applied (1.0 when pcm is empty/silent).
float peak_normalize(std::vector<float> & pcm, float target_peak = 0.95f, float max_gain = 8.0f);

// second-order Butterworth low-pass (biquad); the state carries across calls for streaming
struct lowpass_filter {
    lowpass_filter(int sample_rate, float cutoff_hz);
    void process(float * data, size_t n);
    void process(std::vector<float> & pcm) { process(pcm.data(), pcm.size()); }

    float b0, b1, b2, a1, a2;
    float z1 = 0.0f, z2 = 0.0f;
};

// Changes duration by 1/speed without changing pitch (WSOLA: overlap-add of windowed segments,
// each placed at the best-correlated offset). speed 1.0 returns the input unchanged.
// The output length is round(n / speed) (±1 analysis hop).
std::vector<float> time_stretch(const std::vector<float> & pcm, int sample_rate, float speed);

// ms of digital silence
std::vector<float> silence(int sample_rate, int ms);

// clamps to [-1, 1] and converts to signed 16-bit (round to nearest)
std::vector<int16_t> to_s16(const float * pcm, size_t n);

//
// encoders
//

// complete RIFF/WAVE, PCM s16le mono
std::string encode_wav(const std::vector<float> & pcm, int sample_rate);

// WAV header for a stream of unknown length (RIFF and data sizes 0xFFFFFFFF), followed by raw s16le
std::string wav_stream_header(int sample_rate);

// raw s16le mono, no header
std::string encode_pcm16(const float * pcm, size_t n);
inline std::string encode_pcm16(const std::vector<float> & pcm) { return encode_pcm16(pcm.data(), pcm.size()); }

// FLAC, 16-bit mono, fixed-predictor subframes with Rice-coded residuals (verbatim when smaller).
// Streamable: header() first, then encode() any number of times; the last call passes final = true
// so a partial block is flushed. total_samples = 0 in STREAMINFO means "unknown" (streaming).
class flac_encoder {
public:
    flac_encoder(int sample_rate, uint64_t total_samples = 0, int block_size = 4096);
    std::string header() const;                                  // "fLaC" + STREAMINFO
    std::string encode(const float * pcm, size_t n, bool final); // zero or more FLAC frames
private:
    std::string encode_frame(const int16_t * s, size_t n);
    int      sample_rate;
    uint64_t total_samples;
    int      block_size;
    uint64_t frame_number = 0;
    std::vector<int16_t> pending;
};

// whole-file convenience: header + all frames
std::string encode_flac(const std::vector<float> & pcm, int sample_rate);

//
// reference recordings (voice cloning)
//

struct reference_limits {
    double min_seconds  = 0.5;
    double max_seconds  = 60.0;
    int    min_rate     = 8000;
    int    max_rate     = 192000;
    int    max_channels = 2;
};

struct wav_info {
    int    sample_rate = 0;
    int    channels    = 0;
    int    bits        = 0;
    int    block_align = 0;
    bool   is_float    = false;
    size_t n_frames    = 0;
};

// Checks the bytes of a WAV file as a reference recording before any model code sees them:
// RIFF/WAVE with a PCM (8/16/24/32-bit) or IEEE float (32/64-bit) fmt chunk, channels and sample
// rate within lim, a duration within lim, every sample finite and not all of them zero.
// Returns an empty string when usable, else why not ("it is 0.0417 s long (1000 samples), ...").
std::string check_reference_wav(const std::string & bytes, const reference_limits & lim, wav_info & info);

} // namespace speech_audio
