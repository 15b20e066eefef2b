#pragma once

// Compressed responses of the speech service on well-kept libraries found at build time:
//   mp3  LAME (libmp3lame), MPEG-2 Layer III at the model's 24 kHz, mono, CBR
//   opus libopus + libogg, Ogg Opus (RFC 7845); libopus takes 24 kHz input itself, no resampling
// A format whose library the build did not find is absent (available() false); the HTTP layer then
// refuses it with a 400 naming it, and GET /v1/audio/voices lists what this build serves.
// Built with Q3_SPEECH_MP3 / Q3_SPEECH_OPUS defined by server-speech-codecs.cmake.

#include <cstddef>
#include <memory>
#include <string>
#include <vector>

namespace speech_codecs {

// "mp3" or "opus"
bool available(const std::string & format);
// names of the compressed formats this build serves, in a fixed order
std::vector<std::string> compiled();
// the library versions behind them, for the voices listing ("LAME 3.100", "libopus 1.3.1")
std::vector<std::string> versions();

// Streaming encoder of mono float PCM in [-1, 1]. encode() returns the bytes complete so far (Ogg
// pages, MP3 frames); the call with final = true flushes the rest. finish_whole() is for a whole
// file, after the final encode(): it patches what only the end knows into the start of the file
// (MP3: the LAME/Info tag with the encoder delay and padding, so gapless decoders trim exactly).
class encoder {
public:
    virtual ~encoder() = default;
    virtual std::string encode(const float * pcm, size_t n, bool final) = 0;
    virtual void finish_whole(std::string & file) { (void) file; }
    // set when the library failed on some audio (the bytes so far are not a valid file)
    std::string error;
};

// nullptr with err set when the format is not compiled in or the library refuses the settings;
// whole = true: a whole file (MP3 reserves its first frame for the LAME tag)
std::unique_ptr<encoder> make_encoder(const std::string & format, int sample_rate, bool whole, std::string & err);

// whole-file convenience
bool encode_file(const std::string & format, const std::vector<float> & pcm, int sample_rate, std::string & out,
                 std::string & err);

} // namespace speech_codecs
