#include "server-speech.h"

#include "server-common.h"
#include "server-speech-audio.h"
#include "server-speech-codecs.h"
#include "server-speech-engine.h"

#include "base64.hpp"
#include "gguf.h"
#include "log.h"

#include <algorithm>
#include <limits>
#include <cctype>
#include <cmath>
#include <memory>
#include <string>
#include <vector>

namespace {

// what went wrong with a request, as an OpenAI error body: {"error": {message, type, param, code}}
struct speech_error {
    int         status = 400;
    std::string code;
    std::string param;   // the request field at fault, empty if none
    std::string message;
    std::string type = "invalid_request_error";
};

server_http_res_ptr error_response(const speech_error & e) {
    auto res = std::make_unique<server_http_res>();
    res->status = e.status;
    if (e.status == 503) {
        res->headers["Retry-After"] = "1"; // a slot frees as soon as one request ends
    }
    res->data   = json {
        {"error", json {
            {"message", e.message},
            {"type",    e.type},
            {"param",   e.param.empty() ? json(nullptr) : json(e.param)},
            {"code",    e.code},
        }},
    }.dump();
    return res;
}

server_http_res_ptr not_enabled(const server_http_req &) {
    return error_response({501, "speech_not_enabled", "",
                           "speech synthesis is not enabled on this server: start llama-server with a "
                           "Qwen3-TTS talker model (-m) and its mmproj (--mmproj)", "not_supported_error"});
}

// a client-supplied string as it appears in an error message: at most 64 characters
std::string quote_value(const std::string & value) {
    const size_t max_chars = 64;
    if (speech_audio::utf8_length(value) <= max_chars) {
        return "'" + value + "'";
    }
    // cut on a code point boundary
    size_t cut = 0;
    for (size_t n = 0; cut < value.size() && n < max_chars; n++) {
        cut++;
        while (cut < value.size() && ((unsigned char) value[cut] & 0xC0) == 0x80) {
            cut++;
        }
    }
    return "'" + value.substr(0, cut) + "...' (" + std::to_string(value.size()) + " bytes)";
}

// a streamed request answers with a status once its first chunk is ready, so anything that fails
// up to then is a proper error response; a failure later ends the stream visibly
constexpr size_t max_body_bytes_min = 64 * 1024;

// bounds for the short text fields (characters); input and instructions have options
constexpr size_t max_name_chars = 256;

enum class audio_format { wav, pcm, flac, mp3, opus };
enum class stream_mode  { none, audio, sse };

struct speech_request {
    std::string              model;
    std::vector<std::string> segments;
    speech_gen_params        gen;
    float                    speed  = 1.0f;
    audio_format             format = audio_format::wav;
    stream_mode              stream = stream_mode::none;
};

const char * content_type_of(audio_format f) {
    switch (f) {
        case audio_format::wav:  return "audio/wav";
        case audio_format::pcm:  return "audio/pcm";
        case audio_format::flac: return "audio/flac";
        case audio_format::mp3:  return "audio/mpeg";
        case audio_format::opus: return "audio/ogg";   // Ogg Opus, as OpenAI's opus
    }
    return "application/octet-stream";
}

const char * name_of(audio_format f) {
    switch (f) {
        case audio_format::wav:  return "wav";
        case audio_format::pcm:  return "pcm";
        case audio_format::flac: return "flac";
        case audio_format::mp3:  return "mp3";
        case audio_format::opus: return "opus";
    }
    return "";
}

// the response formats this build serves (mp3 and opus only when their libraries were found at
// build time), and those of them that stream
std::vector<std::string> response_formats() {
    std::vector<std::string> out = {"wav", "pcm", "flac"};
    for (const auto & f : speech_codecs::compiled()) {
        out.push_back(f);
    }
    return out;
}

std::vector<std::string> stream_formats() {
    std::vector<std::string> out;
    for (const auto & f : response_formats()) {
        if (f != "flac") {
            out.push_back(f);
        }
    }
    return out;
}

std::string joined(const std::vector<std::string> & names, const char * last = ", ") {
    std::string out;
    for (size_t i = 0; i < names.size(); i++) {
        out += (i == 0 ? "" : i + 1 == names.size() ? last : ", ") + names[i];
    }
    return out;
}

std::string header_value(const server_http_req & req, const std::string & name) {
    for (const auto & [key, value] : req.headers) {
        if (key.size() == name.size() &&
            std::equal(key.begin(), key.end(), name.begin(), [](char a, char b) {
                return std::tolower((unsigned char) a) == std::tolower((unsigned char) b);
            })) {
            return value;
        }
    }
    return "";
}

//
// request parsing: every field is checked before any work starts, and each failure names its field
//

class request_parser {
public:
    request_parser(speech_engine & engine, const json & body) : engine(engine), body(body) {}

    bool parse(speech_request & out, speech_error & err);

private:
    bool fail(speech_error & err, const std::string & param, const std::string & code, const std::string & msg) {
        err = {400, code, param, msg};
        return false;
    }
    bool opt_string(const char * key, std::string & out, speech_error & err, size_t max_chars = max_name_chars);
    bool opt_number(const char * key, double lo, double hi, double & out, bool & present, speech_error & err);
    bool opt_int(const char * key, int64_t lo, int64_t hi, int64_t & out, bool & present, speech_error & err);
    bool opt_bool(const char * key, bool & out, speech_error & err);

    bool parse_input(speech_request & out, speech_error & err);
    void fit_text_tokens(const std::string & seg, std::vector<std::string> & out) const;
    bool parse_voice(speech_request & out, speech_error & err);
    bool parse_language(speech_request & out, speech_error & err);
    bool parse_formats(speech_request & out, speech_error & err);
    bool parse_sampling(speech_request & out, speech_error & err);
    bool parse_instructions(speech_request & out, speech_error & err);

    speech_engine & engine;
    const json & body;
};

bool request_parser::opt_string(const char * key, std::string & out, speech_error & err, size_t max_chars) {
    if (!body.contains(key) || body.at(key).is_null()) {
        return true;
    }
    if (!body.at(key).is_string()) {
        return fail(err, key, "invalid_type", std::string("'") + key + "' must be a string");
    }
    std::string value = body.at(key).get<std::string>();
    if (!is_valid_utf8(value)) {
        return fail(err, key, "invalid_utf8", std::string("'") + key + "' is not valid UTF-8");
    }
    const size_t n_chars = speech_audio::utf8_length(value);
    if (n_chars > max_chars) {
        return fail(err, key, "string_above_max_length",
                    string_format("'%s' has %zu characters, this server accepts at most %zu", key, n_chars, max_chars));
    }
    out = std::move(value);
    return true;
}

bool request_parser::opt_number(const char * key, double lo, double hi, double & out, bool & present, speech_error & err) {
    present = body.contains(key) && !body.at(key).is_null();
    if (!present) {
        return true;
    }
    if (!body.at(key).is_number()) {
        return fail(err, key, "invalid_type", std::string("'") + key + "' must be a number");
    }
    out = body.at(key).get<double>();
    if (!(out >= lo && out <= hi)) {
        return fail(err, key, "out_of_range", string_format("'%s' must be between %g and %g, got %g", key, lo, hi, out));
    }
    return true;
}

bool request_parser::opt_int(const char * key, int64_t lo, int64_t hi, int64_t & out, bool & present, speech_error & err) {
    present = body.contains(key) && !body.at(key).is_null();
    if (!present) {
        return true;
    }
    const json & v = body.at(key);
    if (!v.is_number_integer() && !(v.is_number_float() && std::floor(v.get<double>()) == v.get<double>())) {
        return fail(err, key, "invalid_type", std::string("'") + key + "' must be an integer");
    }
    const double d = v.get<double>();
    if (d < (double) lo || d > (double) hi) {
        return fail(err, key, "out_of_range",
                    string_format("'%s' must be between %lld and %lld", key, (long long) lo, (long long) hi));
    }
    out = (int64_t) d;
    return true;
}

bool request_parser::opt_bool(const char * key, bool & out, speech_error & err) {
    if (!body.contains(key) || body.at(key).is_null()) {
        return true;
    }
    if (!body.at(key).is_boolean()) {
        return fail(err, key, "invalid_type", std::string("'") + key + "' must be true or false");
    }
    out = body.at(key).get<bool>();
    return true;
}

// A slot has room for max_text_tokens() of text per segment (2 per character of a full segment): a
// segment that takes more (rare scripts, emoji: up to 4 tokens a character) is split again into shorter
// ones until each fits. A single character (at most 4 tokens) always fits.
void request_parser::fit_text_tokens(const std::string & seg, std::vector<std::string> & out) const {
    const size_t n_chars = speech_audio::utf8_length(seg);
    if (n_chars <= 1 || engine.n_tokens(seg) <= engine.max_text_tokens()) {
        out.push_back(seg);
        return;
    }
    const auto parts = speech_audio::split_text(seg, (n_chars + 1) / 2);
    if (parts.size() < 2) {
        out.push_back(seg);
        return;
    }
    for (const auto & p : parts) {
        fit_text_tokens(p, out);
    }
}

bool request_parser::parse_input(speech_request & out, speech_error & err) {
    if (!body.contains("input") || body.at("input").is_null()) {
        return fail(err, "input", "missing_required_parameter", "'input' is required: the text to speak");
    }
    if (!body.at("input").is_string()) {
        return fail(err, "input", "invalid_type", "'input' must be a string");
    }
    std::string input;
    if (!opt_string("input", input, err, (size_t) engine.params().tts_max_input)) {
        return false;
    }
    // NUL, other controls and zero-width characters say nothing; input made only of them is empty
    for (const auto & seg : speech_audio::split_text(speech_audio::strip_invisible(input),
                                                     (size_t) engine.params().tts_segment_chars)) {
        fit_text_tokens(seg, out.segments);
    }
    if (out.segments.empty()) {
        return fail(err, "input", "empty_input",
                    "'input' is empty: there is nothing to speak (whitespace, control and zero-width characters only)");
    }
    return true;
}

bool request_parser::parse_voice(speech_request & out, speech_error & err) {
    std::string voice;
    if (body.contains("voice") && !body.at("voice").is_null()) {
        const json & v = body.at("voice");
        if (v.is_string()) {
            voice = v.get<std::string>();
        } else if (v.is_object() && v.contains("id") && v.at("id").is_string()) {
            voice = v.at("id").get<std::string>();
        } else {
            return fail(err, "voice", "invalid_type", "'voice' must be a voice name or an object {\"id\": name}");
        }
    }
    if (voice.size() > max_name_chars) {
        return fail(err, "voice", "voice_not_found",
                    "unknown voice " + quote_value(voice) + ": voice names are at most " + std::to_string(max_name_chars) + " bytes");
    }
    if (voice.empty() || voice == "default") {
        // an unknown --tts-speaker was reported at start-up; such a server speaks with no speaker
        engine.find_voice(engine.default_voice(), out.gen.voice);
        return true;
    }
    // --tts-voice-alias: a client's name (alloy, ...) for one of this server's voices
    std::string target;
    const bool aliased = engine.alias_of(voice, target);
    if (!engine.find_voice(aliased ? target : voice, out.gen.voice)) {
        std::string names;
        for (const auto & v : engine.voices()) {
            if (v.reason.empty()) {
                names += (names.empty() ? "" : ", ") + v.id;
            }
        }
        for (const auto & [name, v] : engine.aliases()) {
            names += (names.empty() ? "" : ", ") + name;
        }
        return fail(err, "voice", "voice_not_found",
                    "unknown voice " + quote_value(voice) + "; this server has: " + (names.empty() ? "no voices (omit 'voice')" : names));
    }
    if (!out.gen.voice.reason.empty()) {
        return fail(err, "voice", "voice_unusable",
                    "voice " + quote_value(voice) + " cannot be used: " +
                    (out.gen.voice.reason.rfind("its transcript", 0) == 0 ? out.gen.voice.reason
                        : "its recording " + voice + ".wav: " + out.gen.voice.reason));
    }
    return true;
}

bool request_parser::parse_language(speech_request & out, speech_error & err) {
    std::string lang = engine.params().tts_lang.empty() ? "auto" : engine.params().tts_lang;
    if (!opt_string("language", lang, err, 64)) {
        return false;
    }
    out.gen.language = engine.resolve_language(lang);
    if (out.gen.language.empty()) {
        std::string names = "auto";
        for (const auto & l : engine.languages()) {
            names += ", " + l;
        }
        return fail(err, "language", "unsupported_language",
                    "unsupported language " + quote_value(lang) + "; use an ISO 639-1 code or one of: " + names);
    }
    return true;
}

bool request_parser::parse_formats(speech_request & out, speech_error & err) {
    std::string fmt = "wav";
    if (!opt_string("response_format", fmt, err)) {
        return false;
    }
    if      (fmt == "wav")  out.format = audio_format::wav;
    else if (fmt == "pcm")  out.format = audio_format::pcm;
    else if (fmt == "flac") out.format = audio_format::flac;
    else if (fmt == "mp3")  out.format = audio_format::mp3;
    else if (fmt == "opus") out.format = audio_format::opus;
    else {
        return fail(err, "response_format", "unsupported_response_format",
                    "response_format " + quote_value(fmt) + " is not supported by this server; use one of: " +
                    joined(response_formats()));
    }
    if ((out.format == audio_format::mp3 || out.format == audio_format::opus) && !speech_codecs::available(fmt)) {
        return fail(err, "response_format", "unsupported_response_format",
                    "response_format '" + fmt + "' is not available: this llama-server was built without " +
                    (fmt == "mp3" ? "LAME (libmp3lame)" : "libopus and libogg") + "; use one of: " +
                    joined(response_formats()));
    }
    std::string stream;
    if (!opt_string("stream_format", stream, err)) {
        return false;
    }
    if      (stream.empty())   out.stream = stream_mode::none;
    else if (stream == "audio") out.stream = stream_mode::audio;
    else if (stream == "sse")   out.stream = stream_mode::sse;
    else {
        return fail(err, "stream_format", "invalid_value", "stream_format must be 'audio' or 'sse', got " + quote_value(stream));
    }
    // a FLAC stream's header (STREAMINFO: total samples, MD5) is written before the audio exists, and
    // libsndfile refuses one left open; as OpenAI-compatible servers do, FLAC is whole files only
    if (out.stream != stream_mode::none && out.format == audio_format::flac) {
        return fail(err, "stream_format", "unsupported_stream_format",
                    "response_format 'flac' cannot be streamed; stream " + joined(stream_formats(), " or ") +
                    ", or omit stream_format for a whole FLAC file");
    }
    double speed = 1.0;
    bool present = false;
    if (!opt_number("speed", 0.25, 4.0, speed, present, err)) {
        return false;
    }
    out.speed = (float) speed;
    return true;
}

bool request_parser::parse_sampling(speech_request & out, speech_error & err) {
    const common_params_sampling & def = engine.params().sampling;
    speech_gen_params & g = out.gen;
    g.temperature        = def.temp;
    g.top_k              = def.top_k;
    g.top_p              = def.top_p;
    g.repetition_penalty = def.penalty_repeat;
    g.seed               = LLAMA_DEFAULT_SEED;

    // a cloned voice is cloned in context when it has a transcript, unless the request asks for its
    // x-vector alone; the official clone default is the streaming text layout, the other modes' the full one
    const bool cloned = g.voice.type == "cloned";
    std::string mode;
    if (!opt_string("clone_mode", mode, err, 16)) return false;
    if (!mode.empty() && mode != "xvector" && mode != "icl") {
        return fail(err, "clone_mode", "invalid_value", "clone_mode must be 'xvector' or 'icl'");
    }
    if (!mode.empty() && !cloned) {
        return fail(err, "clone_mode", "invalid_value", "clone_mode applies to cloned voices, voice " +
                    quote_value(g.voice.id.empty() ? std::string("(none)") : g.voice.id) + " is not one");
    }
    if (mode == "icl" && g.voice.mode != "icl") {
        return fail(err, "clone_mode", "voice_without_transcript", "voice " + quote_value(g.voice.id) +
                    " has no transcript for clone_mode 'icl' (" +
                    (g.voice.note.empty() ? "no " + g.voice.id + ".txt beside " + g.voice.id + ".wav" : g.voice.note) + ")");
    }
    g.icl            = cloned && (mode.empty() ? g.voice.mode == "icl" : mode == "icl");
    g.streaming_text = cloned ? true : engine.params().tts_streaming_text;

    double  d = 0;
    int64_t i = 0;
    bool    present = false;
    if (!opt_int("seed", 0, (int64_t) LLAMA_DEFAULT_SEED - 1, i, present, err)) return false;
    if (present) g.seed = (uint32_t) i;
    if (!opt_number("temperature", 0.0, 2.0, d, present, err)) return false;
    if (present) g.temperature = (float) d;
    if (!opt_int("top_k", 0, 100000, i, present, err)) return false;
    if (present) g.top_k = (int32_t) i;
    if (!opt_number("top_p", 1e-6, 1.0, d, present, err)) return false;
    if (present) g.top_p = (float) d;
    if (!opt_number("repetition_penalty", 0.5, 2.0, d, present, err)) return false;
    if (present) g.repetition_penalty = (float) d;
    if (!opt_int("max_frames", 1, 100000, i, present, err)) return false;
    if (present) g.max_frames = (int32_t) i;
    if (!opt_bool("ignore_eos", g.ignore_eos, err)) return false;

    std::string layout;
    if (!opt_string("text_layout", layout, err)) return false;
    if (layout == "streaming") g.streaming_text = true;
    else if (layout == "full") g.streaming_text = false;
    else if (!layout.empty()) {
        return fail(err, "text_layout", "invalid_value", "text_layout must be 'full' or 'streaming'");
    }
    return true;
}

bool request_parser::parse_instructions(speech_request & out, speech_error & err) {
    if (!opt_string("instructions", out.gen.instructions, err, (size_t) engine.params().tts_max_instructions)) {
        return false;
    }
    if (out.gen.instructions.empty()) {
        return true;
    }
    if (!engine.takes_instructions()) {
        return fail(err, "instructions", "unsupported_parameter",
                    "this model (" + engine.describe() + ") does not take 'instructions'; "
                    "VoiceDesign and the 1.7B CustomVoice models do");
    }
    // the slot's context has room for this many; characters of rare scripts can take several tokens each
    const int32_t n_tok = engine.n_tokens(out.gen.instructions);
    if (n_tok > engine.max_instruction_tokens()) {
        return fail(err, "instructions", "string_above_max_length",
                    string_format("'instructions' are %d tokens long, this server accepts at most %d",
                                  n_tok, engine.max_instruction_tokens()));
    }
    return true;
}

bool request_parser::parse(speech_request & out, speech_error & err) {
    if (!body.is_object()) {
        return fail(err, "", "invalid_request_body", "the request body must be a JSON object");
    }
    return opt_string("model", out.model, err) && parse_input(out, err) && parse_voice(out, err) &&
           parse_language(out, err) && parse_formats(out, err) && parse_sampling(out, err) &&
           parse_instructions(out, err);
}

//
// one request on a slot: segments in order, audio handed out as it is decoded
//

class speech_job {
public:
    speech_job(speech_engine & engine, std::unique_ptr<speech_slot_lease> lease, speech_request req)
        : engine(engine), lease(std::move(lease)), req(std::move(req)), t_start_us(ggml_time_us()) {
        const auto & p = engine.params();
        if (p.tts_lowpass > 0.0f) {
            lowpass = std::make_unique<speech_audio::lowpass_filter>(engine.sample_rate(), p.tts_lowpass);
        }
    }

    bool streaming() const { return req.stream != stream_mode::none; }
    // the cloned voice's embedding, before any audio: a bad recording is the request's error
    bool prepare_voice(speech_error & err);
    server_http_res_ptr respond_whole();
    server_http_res_ptr respond_stream(std::shared_ptr<speech_job> self);

private:
    bool next_audio(std::vector<float> & pcm, int n_frames, speech_error & err);
    bool whole_segment(std::vector<float> & pcm, speech_error & err);
    void post_process(std::vector<float> & pcm, bool whole) const;
    bool next_chunk(std::string & out, speech_error & err);
    bool stream_chunk(server_http_res & res, std::string & out);
    bool encode_chunk(const std::vector<float> & pcm, bool final, std::string & out, speech_error & err);
    std::string sse_event(const json & data) const { return "data: " + data.dump() + "\n\n"; }
    json done_event() const;
    void fill_headers(server_http_res & res, bool whole) const;

    double wall_s()  const { return (ggml_time_us() - t_start_us) / 1e6; }
    double audio_s() const { return (double) n_samples / engine.sample_rate(); }

    speech_engine & engine;
    std::unique_ptr<speech_slot_lease> lease;
    speech_request req;
    int64_t t_start_us;

    std::vector<float> speaker_embd;          // of a cloned voice, for every segment
    std::unique_ptr<speech_segment> seg;      // the segment being generated
    size_t  n_done = 0;                       // segments finished
    size_t  n_samples = 0;                    // audio samples handed out
    int     n_frames  = 0;
    int     n_capped  = 0;                    // segments that hit their frame cap
    speech_stage_timings timings;
    std::unique_ptr<speech_audio::lowpass_filter> lowpass;
    std::unique_ptr<speech_audio::flac_encoder> flac;
    std::unique_ptr<speech_codecs::encoder> codec; // mp3, opus
    bool header_sent = false;
    bool finished    = false;
    bool first_ready = false;                 // first chunk made before the status was sent
    std::string first_chunk;
    int  chunk_frames = 0;                    // frames in the chunk being streamed
};

// generates up to n_frames of the current segment (starting the next one when needed) and appends
// its decoded audio, preceded by a short pause between segments
bool speech_job::next_audio(std::vector<float> & pcm, int n, speech_error & err) {
    std::string msg;
    speech_engine::generating computing(engine, lease->get()); // not while the audio is written to the client
    if (!seg) {
        if (n_done > 0) {
            const auto pause = speech_audio::silence(engine.sample_rate(), 150);
            pcm.insert(pcm.end(), pause.begin(), pause.end());
        }
        seg = std::make_unique<speech_segment>(engine, lease->get());
        if (!seg->start(req.segments[n_done], req.gen, speaker_embd, msg)) {
            err = {500, "synthesis_failed", "", msg, "server_error"};
            return false;
        }
    }
    // the codec decoder is cheapest on long runs of frames: a whole response decodes each segment
    // at its end, a stream every chunk
    // (the frames are counted as they are made, on /metrics and /slots)
    const bool ok = seg->step(n, msg);
    if (!ok || ((streaming() || seg->done()) && !seg->take_audio(pcm, msg))) {
        err = {500, "synthesis_failed", "", msg, "server_error"};
        return false;
    }
    if (seg->done()) {
        timings.add(seg->timings());
        n_frames += seg->frames();
        n_capped += seg->hit_frame_cap() ? 1 : 0;
        seg.reset();
        finished = ++n_done == req.segments.size();
    }
    if (!finished) {
        computing.will_return();
    }
    return true;
}

// a cloned voice is looked up (encoded on its first use) once per request, not per segment
bool speech_job::prepare_voice(speech_error & err) {
    if (req.gen.voice.type != "cloned") {
        return true;
    }
    std::string msg;
    bool bad_input = false;
    if (!engine.speaker_embd(lease->get(), req.gen.voice, speaker_embd, msg, bad_input,
                             req.gen.icl ? &req.gen.ref_codes : nullptr)) {
        err = bad_input ? speech_error{400, "voice_unusable", "voice", msg}
                        : speech_error{500, "voice_unreadable", "voice", msg, "server_error"};
        return false;
    }
    if (req.gen.icl) {
        // the transcript and the codes go into every segment's prompt: they must fit the slot's room
        const int n_rows = engine.n_tokens(req.gen.voice.transcript) + (int) (req.gen.ref_codes.size() / 16) + 1;
        if (n_rows > engine.max_icl_tokens()) {
            err = {400, "voice_unusable", "voice", "voice " + quote_value(req.gen.voice.id) + " cannot be cloned in context: "
                   "its transcript and recording take " + std::to_string(n_rows) + " prompt rows, this server reserves " +
                   std::to_string(engine.max_icl_tokens()) + " (--tts-max-ref-seconds)"};
            return false;
        }
    }
    return true;
}

// A whole response does not watch the connection: a client that half-closes it (shutdown(SHUT_WR)
// after its request, which HTTP allows) reads as closed to the server, yet waits for its audio. The
// work a client can leave behind is bounded by the input limit and the frame caps.
// The segment's frames are asked for at once: the thread stays in speech_segment::step between them,
// so the batch of every frame waits for it (a stream leaves the batch between its chunks).
bool speech_job::whole_segment(std::vector<float> & pcm, speech_error & err) {
    const size_t n_before = n_done;
    while (n_done == n_before) {
        if (!next_audio(pcm, std::numeric_limits<int>::max(), err)) {
            return false;
        }
    }
    return true;
}

// trim and normalize need the whole segment, so a stream only gets the low-pass
void speech_job::post_process(std::vector<float> & pcm, bool whole) const {
    const auto & p = engine.params();
    if (whole && p.tts_trim) {
        speech_audio::trim_trailing_silence(pcm, engine.sample_rate());
    }
    if (whole && p.tts_normalize) {
        speech_audio::peak_normalize(pcm);
    }
    if (lowpass) {
        lowpass->process(pcm);
    }
}

void speech_job::fill_headers(server_http_res & res, bool whole) const {
    const auto & p = engine.params();
    std::string post;
    if (whole && p.tts_trim)      post += "trim,";
    if (whole && p.tts_normalize) post += "normalize,";
    if (lowpass)                  post += "lowpass,";
    if (req.speed != 1.0f)        post += "speed,";
    res.headers["X-Speech-Backend"]     = "llama.cpp libmtmd (" + engine.describe() + ")";
    res.headers["X-Speech-Segments"]    = std::to_string(req.segments.size());
    res.headers["X-Speech-Postprocess"] = post.empty() ? "none" : post.substr(0, post.size() - 1);
    if (whole) {
        const double wall = wall_s(), audio = audio_s();
        res.headers["X-Audio-Seconds"]    = string_format("%.3f", audio);
        res.headers["X-Wall-Seconds"]     = string_format("%.3f", wall);
        res.headers["X-Real-Time-Factor"] = string_format("%.3f", audio > 0 ? wall / audio : 0.0);
        res.headers["X-Speech-Frames"]    = std::to_string(n_frames);
        res.headers["X-Speech-Frame-Capped-Segments"] = std::to_string(n_capped);
        res.headers["X-Speech-Decoded-Frames"] = std::to_string(timings.decoded_frames);
        res.headers["X-Speech-Stages-Ms"] = string_format("prompt=%.1f talker=%.1f code=%.1f decode=%.1f",
            timings.prompt_ms, timings.talker_ms, timings.code_ms, timings.decode_ms);
    }
}

server_http_res_ptr speech_job::respond_whole() {
    std::vector<float> all;
    speech_error err;
    while (!finished) {
        std::vector<float> pcm;
        if (!whole_segment(pcm, err)) {
            engine.metrics.failed();
            return error_response(err);
        }
        post_process(pcm, true);
        all.insert(all.end(), pcm.begin(), pcm.end());
    }
    if (req.speed != 1.0f) {
        all = speech_audio::time_stretch(all, engine.sample_rate(), req.speed);
    }
    n_samples = all.size();

    auto res = std::make_unique<server_http_res>();
    res->content_type = content_type_of(req.format);
    switch (req.format) {
        case audio_format::wav:  res->data = speech_audio::encode_wav(all, engine.sample_rate()); break;
        case audio_format::pcm:  res->data = speech_audio::encode_pcm16(all);                      break;
        case audio_format::flac: res->data = speech_audio::encode_flac(all, engine.sample_rate()); break;
        case audio_format::mp3:
        case audio_format::opus: {
            std::string msg;
            if (!speech_codecs::encode_file(name_of(req.format), all, engine.sample_rate(), res->data, msg)) {
                engine.metrics.failed();
                return error_response({500, "encoding_failed", "", msg, "server_error"});
            }
        } break;
    }
    engine.metrics.first_audio(wall_s()); // a whole response's first audio is all of it
    engine.metrics.done(audio_s(), wall_s());
    fill_headers(*res, true);
    return res;
}

bool speech_job::encode_chunk(const std::vector<float> & pcm, bool final, std::string & out, speech_error & err) {
    out.clear();
    if (!header_sent) {
        header_sent = true;
        if (req.format == audio_format::wav) {
            out = speech_audio::wav_stream_header(engine.sample_rate());
        } else if (req.format == audio_format::flac) {
            flac = std::make_unique<speech_audio::flac_encoder>(engine.sample_rate());
            out  = flac->header();
        } else if (req.format == audio_format::mp3 || req.format == audio_format::opus) {
            std::string msg;
            codec = speech_codecs::make_encoder(name_of(req.format), engine.sample_rate(), false, msg);
            if (!codec) {
                err = {500, "encoding_failed", "", msg, "server_error"};
                return false;
            }
        }
    }
    if (req.format == audio_format::flac) {
        out += flac->encode(pcm.data(), pcm.size(), final);
    } else if (codec) {
        out += codec->encode(pcm.data(), pcm.size(), final);
        if (!codec->error.empty()) {
            err = {500, "encoding_failed", "", codec->error, "server_error"};
            return false;
        }
    } else {
        out += speech_audio::encode_pcm16(pcm);
    }
    return true;
}

json speech_job::done_event() const {
    const double wall = wall_s(), audio = audio_s();
    return json {
        {"type", "speech.audio.done"},
        {"usage", json {
            {"input_tokens",  timings.prompt_tokens},
            {"output_tokens", n_frames},
            {"total_tokens",  timings.prompt_tokens + n_frames},
        }},
        {"audio_seconds", audio},
        {"wall_seconds",  wall},
        {"real_time_factor", audio > 0 ? wall / audio : 0.0},
        {"segments", req.segments.size()},
        {"stages_ms", json {
            {"prompt", timings.prompt_ms}, {"talker", timings.talker_ms},
            {"code_predictor", timings.code_ms}, {"codec_decode", timings.decode_ms},
        }},
    };
}

// one chunk of a streamed response; false once the stream is complete or failed (err.code set)
bool speech_job::next_chunk(std::string & out, speech_error & err) {
    std::vector<float> pcm;
    // the first chunk is small for an early start; later chunks end where the codec decoder's next
    // call completes (its batches double from 1 to 16 frames), so no audio is decoded twice
    chunk_frames = chunk_frames == 0 || !seg ? engine.params().tts_stream_frames : seg->frames_to_next_decode();
    if (!next_audio(pcm, chunk_frames, err)) {
        return false;
    }
    post_process(pcm, false);
    if (req.speed != 1.0f && !pcm.empty()) {
        pcm = speech_audio::time_stretch(pcm, engine.sample_rate(), req.speed);
    }
    n_samples += pcm.size();
    std::string bytes;
    if (!encode_chunk(pcm, finished, bytes, err)) {
        return false;
    }
    if (finished) {
        engine.metrics.done(audio_s(), wall_s());
    }
    if (req.stream == stream_mode::sse) {
        if (!bytes.empty()) {
            out = sse_event(json {{"type", "speech.audio.delta"}, {"audio", base64::encode(bytes)}});
        }
        if (finished) {
            out += sse_event(done_event());
        }
    } else {
        out = bytes;
    }
    return !finished;
}

// a failure after the status was sent ends the stream so that the client can tell: an SSE stream
// gets a speech.audio.error event, an audio stream is cut without its terminating chunk
bool speech_job::stream_chunk(server_http_res & res, std::string & out) {
    if (first_ready) {
        first_ready = false;
        out = std::move(first_chunk);
        return !finished;
    }
    speech_error err;
    if (next_chunk(out, err)) {
        return true;
    }
    if (err.code.empty()) {
        return false; // complete
    }
    LOG_ERR("speech: stream failed after %zu samples: %s\n", n_samples, err.message.c_str());
    engine.metrics.failed();
    if (req.stream == stream_mode::sse) {
        out = sse_event(json {{"type", "speech.audio.error"}, {"error", {{"message", err.message}, {"type", err.type},
                                                                         {"param", nullptr}, {"code", err.code}}}});
    } else {
        out.clear();
        res.failed = true;
    }
    return false;
}

server_http_res_ptr speech_job::respond_stream(std::shared_ptr<speech_job> self) {
    // the first chunk is made before the status line goes out, so a request that fails early gets an
    // error status instead of a 200 with an empty body
    speech_error err;
    if (!next_chunk(first_chunk, err) && !err.code.empty()) {
        engine.metrics.failed();
        return error_response(err);
    }
    engine.metrics.first_audio(wall_s());
    first_ready = true;
    auto res = std::make_unique<server_http_res>();
    res->content_type = req.stream == stream_mode::sse ? "text/event-stream" : content_type_of(req.format);
    fill_headers(*res, false);
    // generation runs as the client reads; a client that stops reading makes the write time out
    // (--tts-stream-timeout) and releasing the response releases the slot
    server_http_res * r = res.get();
    res->next = [self, r](std::string & out) -> bool {
        return self->stream_chunk(*r, out);
    };
    return res;
}

// the media type of a Content-Type value: before any parameters, trimmed, lower case
std::string media_type(const std::string & value) {
    std::string t = value.substr(0, value.find(';'));
    const size_t b = t.find_first_not_of(" \t");
    const size_t e = t.find_last_not_of(" \t");
    t = b == std::string::npos ? "" : t.substr(b, e - b + 1);
    std::transform(t.begin(), t.end(), t.begin(), [](unsigned char c) { return (char) std::tolower(c); });
    return t;
}

server_http_res_ptr handle_speech(speech_engine & engine, const server_http_req & req) {
    const std::string ctype = media_type(header_value(req, "Content-Type"));
    // multipart form fields arrive here already turned into a JSON body by the HTTP layer
    if (ctype != "application/json" && ctype != "multipart/form-data") {
        return error_response({415, "unsupported_media_type", "",
                               "Content-Type must be application/json, got " + quote_value(header_value(req, "Content-Type"))});
    }
    // the fields are bounded (input and instructions by options, the rest by max_name_chars), so a
    // body far above their sum is refused before it is parsed
    const size_t max_body = std::max(max_body_bytes_min, (size_t) 8 * (engine.params().tts_max_input +
                                                                        engine.params().tts_max_instructions));
    if (req.body.size() > max_body) {
        return error_response({413, "request_too_large", "",
                               string_format("the request body is %zu bytes, this server accepts at most %zu",
                                             req.body.size(), max_body)});
    }
    const json body = json::parse_no_throw(req.body);
    if (body.is_discarded()) {
        return error_response({400, "invalid_json", "", "the request body is not valid JSON"});
    }
    speech_request sreq;
    speech_error   err;
    if (!request_parser(engine, body).parse(sreq, err)) {
        return error_response(err);
    }
    // a queued request waits for its slot whatever its connection looks like (see whole_segment)
    bool busy = false;
    auto lease = engine.acquire(nullptr, busy);
    if (!lease) {
        return error_response({503, "server_busy", "",
                               "all speech slots are busy and the queue is full; retry later", "server_error"});
    }
    auto job = std::make_shared<speech_job>(engine, std::move(lease), std::move(sreq));
    if (!job->prepare_voice(err)) {
        return error_response(err);
    }
    if (job->streaming()) {
        return job->respond_stream(job);
    }
    return job->respond_whole();
}

server_http_res_ptr handle_voices(speech_engine & engine) {
    json voices = json::array();
    json unusable = json::array();
    for (const auto & v : engine.voices()) {
        if (v.reason.empty()) {
            json item = {{"id", v.id}, {"name", v.id}, {"type", v.type}};
            if (v.type == "cloned") {
                item["mode"] = v.mode; // "icl": recording + transcript in context, "xvector": speaker embedding
                if (!v.note.empty()) {
                    item["note"] = v.note;
                }
            }
            voices.push_back(item);
        } else {
            unusable.push_back({{"id", v.id}, {"reason", v.reason}});
        }
    }
    auto res = std::make_unique<server_http_res>();
    res->data = json {
        {"voices",    voices},
        {"unusable_voices", unusable}, // recordings in the voices directory that fail the checks, and why
        {"default",   engine.default_voice().empty() ? json(nullptr) : json(engine.default_voice())},
        {"languages", engine.languages()},
        {"model",     engine.describe()},
        {"cloning",   engine.can_clone()},
        // what this build serves: mp3 and opus only when LAME and libopus + libogg were found at build time
        {"response_formats", response_formats()},
        {"stream_formats",   stream_formats()},
        {"encoders",         speech_codecs::versions()},
        {"aliases",          engine.aliases()},   // --tts-voice-alias: client names and the voices they speak with
    }.dump();
    return res;
}

// the handlers never throw: an unexpected exception becomes a 500 and the server keeps serving
template <typename F>
server_http_res_ptr guarded(F && f) {
    try {
        return f();
    } catch (const std::exception & e) {
        LOG_ERR("speech: unexpected error: %s\n", e.what());
        return error_response({500, "internal_error", "", std::string("internal error: ") + e.what(), "server_error"});
    }
}

} // namespace

server_speech::server_speech() : engine(std::make_unique<speech_engine>()) {
    post_speech = [this](const server_http_req & req) {
        if (!engine->loaded()) {
            return not_enabled(req);
        }
        return guarded([&] { return handle_speech(*engine, req); });
    };
    get_voices = [this](const server_http_req & req) {
        if (!engine->loaded()) {
            return not_enabled(req);
        }
        return guarded([&] { return handle_voices(*engine); });
    };
}

server_speech::~server_speech() = default;

// reads only the GGUF header: is this the mmproj of an audio generation model?
static bool mmproj_generates_audio(const std::string & path) {
    gguf_init_params gp = { /* no_alloc */ true, /* ctx */ nullptr };
    gguf_context * g = gguf_init_from_file(path.c_str(), gp);
    if (!g) {
        return false; // the server's own loader reports what is wrong with the file
    }
    const int64_t key = gguf_find_key(g, "clip.has_gen_audio_encoder");
    const bool gen = key >= 0 && gguf_get_kv_type(g, key) == GGUF_TYPE_BOOL && gguf_get_val_bool(g, key);
    gguf_free(g);
    return gen;
}

void server_speech::prepare(common_params & params) {
    if (params.mmproj.path.empty() || !mmproj_generates_audio(params.mmproj.path)) {
        return;
    }
    mmproj_path = params.mmproj.path;
    params.mmproj = {};
    // a client that stops reading a stream blocks its slot's generation in a socket write: the
    // server's write timeout (--timeout, an hour by default) becomes the speech stream's
    if (params.tts_stream_timeout > 0 && params.tts_stream_timeout < params.timeout_write) {
        params.timeout_write = params.tts_stream_timeout;
        LOG_INF("speech: the HTTP write timeout is %d s (--tts-stream-timeout)\n", params.timeout_write);
    }
    if (params.n_ctx != 0) {
        return;
    }
    params.n_ctx      = 512;
    params.n_parallel = 1;
    LOG_INF("speech: %s generates audio: the server's chat context is set to %d tokens (pass -c to choose)\n",
            params.mmproj.path.c_str(), params.n_ctx);
}

bool server_speech::load(const common_params & params, const llama_model * model) {
    common_params speech_params = params;
    if (!mmproj_path.empty()) {
        speech_params.mmproj.path = mmproj_path;
    }
    engine->load(speech_params, model);
    if (!engine->startup_error().empty()) {
        LOG_ERR("speech: %s\n", engine->startup_error().c_str());
        return false;
    }
    return true;
}

void server_speech::route_to_children(server_http_context::handler_t proxy_post,
                                      server_http_context::handler_t proxy_get) {
    post_speech = [proxy_post](const server_http_req & req) {
        return guarded([&] {
            // the router picks the child by the body's "model": a body it cannot read is the speech
            // service's 400, not the router's exception
            const json body = json::parse_no_throw(req.body);
            if (body.is_discarded() || !body.is_object()) {
                return error_response({400, "invalid_json", "", "the request body is not a JSON object"});
            }
            if (!body.contains("model") || !body.at("model").is_string() || body.at("model").get<std::string>().empty()) {
                return error_response({400, "missing_required_parameter", "model",
                                       "'model' is required: this router serves speech from the model it names"});
            }
            return proxy_post(req);
        });
    };
    get_voices = [proxy_get](const server_http_req & req) {
        return guarded([&] {
            if (req.get_param("model").empty()) {
                return error_response({400, "missing_required_parameter", "model",
                                       "'model' is required: ask GET /v1/audio/voices?model=NAME of this router"});
            }
            return proxy_get(req);
        });
    };
}

void server_speech::extend_routes(server_http_context::handler_t & get_metrics,
                                  server_http_context::handler_t & get_slots) {
    auto metrics = get_metrics;
    get_metrics = [this, metrics](const server_http_req & req) {
        auto res = metrics(req);
        // only where llama-server answers /metrics itself (--metrics)
        if (res && res->status == 200 && !res->is_stream() && engine->loaded()) {
            const auto o = engine->occupancy();
            res->data += engine->metrics.prometheus(o.slots, o.busy, o.waiting);
        }
        return res;
    };
    auto slots = get_slots;
    get_slots = [this, slots](const server_http_req & req) {
        auto res = slots(req);
        if (!res || res->status != 200 || res->is_stream() || !engine->loaded()) {
            return res;
        }
        json arr = json::parse_no_throw(res->data);
        if (!arr.is_array()) {
            return res;
        }
        // after the chat slots, with ids of their own
        int64_t next_id = 0;
        for (const auto & s : arr) {
            if (s.is_object() && s.contains("id") && s.at("id").is_number_integer()) {
                next_id = std::max<int64_t>(next_id, s.at("id").get<int64_t>() + 1);
            }
        }
        const int64_t now = ggml_time_us();
        for (const auto & st : engine->slot_states()) {
            arr.push_back({
                {"id",            next_id + st.id},
                {"type",          "speech"},
                {"speech_slot",   st.id},
                {"is_processing", st.busy},
                {"n_frames",      st.busy ? st.n_frames : 0},               // of the request on the slot
                {"t_request_ms",  st.busy ? (now - st.t_start_us) / 1000 : 0}, // how long it has run
                {"n_requests",    st.n_requests},
                {"model",         engine->describe()},
            });
        }
        res->data = arr.dump();
        return res;
    };
}

void server_speech_register(const server_http_context & ctx_http, server_speech & speech) {
    ctx_http.post("/v1/audio/speech", speech.post_speech);
    ctx_http.post("/audio/speech",    speech.post_speech);
    ctx_http.get ("/v1/audio/voices", speech.get_voices);
    ctx_http.get ("/audio/voices",    speech.get_voices);
}
