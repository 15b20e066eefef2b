#include "server-speech-audio.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <cmath>
#include <initializer_list>
#include <limits>

namespace speech_audio {

// M_PI is POSIX, not standard C++
static const double pi = 3.14159265358979323846;

//
// text
//

// Decodes the well-formed UTF-8 sequence starting at text[i] into cp.
// Returns its length in bytes, or 0 when the bytes there are not a well-formed sequence.
static size_t utf8_decode(const std::string & text, size_t i, uint32_t & cp) {
    const auto lead = (unsigned char) text[i];
    if (lead < 0x80) {
        cp = lead;
        return 1;
    }
    size_t   len;
    uint32_t min_cp;
    if ((lead & 0xE0) == 0xC0) {
        len = 2; cp = lead & 0x1F; min_cp = 0x80;
    } else if ((lead & 0xF0) == 0xE0) {
        len = 3; cp = lead & 0x0F; min_cp = 0x800;
    } else if ((lead & 0xF8) == 0xF0) {
        len = 4; cp = lead & 0x07; min_cp = 0x10000;
    } else {
        return 0;
    }
    if (len > text.size() - i) {
        return 0;
    }
    for (size_t k = 1; k < len; ++k) {
        const auto b = (unsigned char) text[i + k];
        if ((b & 0xC0) != 0x80) {
            return 0;
        }
        cp = (cp << 6) | (b & 0x3F);
    }
    // overlong forms, UTF-16 surrogates and values past U+10FFFF are not well-formed
    if (cp < min_cp || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) {
        return 0;
    }
    return len;
}

size_t utf8_length(const std::string & text) {
    size_t count = 0;
    for (size_t i = 0; i < text.size(); ++count) {
        uint32_t cp;
        const size_t len = utf8_decode(text, i, cp);
        i += len ? len : 1;
    }
    return count;
}

bool utf8_valid(const std::string & text) {
    for (size_t i = 0; i < text.size();) {
        uint32_t cp;
        const size_t len = utf8_decode(text, i, cp);
        if (len == 0) {
            return false;
        }
        i += len;
    }
    return true;
}

// controls (C0, DEL, C1) other than whitespace, and invisible format characters: zero-width
// spaces and joiners, direction marks and embeddings, word joiner and invisible operators, the
// byte order mark, the soft hyphen, variation selectors
static bool is_invisible(uint32_t cp) {
    if (cp == '\t' || cp == '\n' || cp == '\r') {
        return false;
    }
    return cp < 0x20 || (cp >= 0x7F && cp <= 0x9F) || cp == 0xAD || (cp >= 0x200B && cp <= 0x200F) ||
           (cp >= 0x2028 && cp <= 0x202E) || (cp >= 0x2060 && cp <= 0x206F) || cp == 0xFEFF ||
           (cp >= 0xFE00 && cp <= 0xFE0F) || (cp >= 0xE0000 && cp <= 0xE007F);
}

std::string strip_invisible(const std::string & text) {
    std::string out;
    out.reserve(text.size());
    for (size_t i = 0; i < text.size();) {
        uint32_t     cp  = 0;
        const size_t len = utf8_decode(text, i, cp);
        if (len == 0) {
            out.push_back(text[i++]);
            continue;
        }
        if (!is_invisible(cp)) {
            out.append(text, i, len);
        }
        i += len;
    }
    return out;
}

namespace {

// one code point of the text being split (or one stray byte of invalid UTF-8)
struct text_unit {
    uint32_t cp;
    size_t   pos;
    size_t   len;
};

// how good a place the boundary before a unit is for ending a segment; higher is better
enum cut_level : int {
    CUT_NONE     = 0,
    CUT_CJK      = 1, // between two characters where at least one is CJK (no spaces in that script)
    CUT_SPACE    = 2,
    CUT_CLAUSE   = 3,
    CUT_SENTENCE = 4,
};

} // namespace

static std::vector<text_unit> decode_units(const std::string & text) {
    std::vector<text_unit> units;
    for (size_t i = 0; i < text.size();) {
        uint32_t     cp;
        const size_t len = utf8_decode(text, i, cp);
        if (len == 0) {
            // U+FFFD classifies as an ordinary character, so a stray byte is kept and never a break point
            units.push_back({ 0xFFFD, i, 1 });
            i += 1;
        } else {
            units.push_back({ cp, i, len });
            i += len;
        }
    }
    return units;
}

static bool is_space(uint32_t cp) {
    return cp == ' ' || (cp >= 0x09 && cp <= 0x0D) || cp == 0xA0 || cp == 0x3000 || cp == 0x2028 || cp == 0x2029;
}

static bool is_newline(uint32_t cp) {
    return cp == '\n' || cp == '\r' || cp == 0x2028 || cp == 0x2029;
}

static bool is_cjk(uint32_t cp) {
    return (cp >= 0x3040 && cp <= 0x30FF) ||   // hiragana, katakana
           (cp >= 0x3400 && cp <= 0x4DBF) ||   // CJK extension A
           (cp >= 0x4E00 && cp <= 0x9FFF) ||   // CJK unified ideographs
           (cp >= 0xAC00 && cp <= 0xD7AF) ||   // hangul syllables
           (cp >= 0xF900 && cp <= 0xFAFF) ||   // CJK compatibility ideographs
           (cp >= 0x20000 && cp <= 0x2FFFF);   // CJK extensions B and later
}

static bool is_ascii_letter(uint32_t cp) {
    return (cp >= 'a' && cp <= 'z') || (cp >= 'A' && cp <= 'Z');
}

// marks that end a sentence wherever they appear ('.' needs context, see sentence_end)
static bool is_terminator(uint32_t cp) {
    switch (cp) {
        case '!': case '?': case ';':
        case 0x3002: // 。
        case 0xFF01: // ！
        case 0xFF1F: // ？
        case 0xFF1B: // ；
        case 0xFF0E: // ．
        case 0xFF61: // ｡
        case 0x2026: // …
            return true;
        default:
            return false;
    }
}

static bool is_clause_mark(uint32_t cp) {
    return cp == ',' || cp == ':' || cp == 0xFF0C /* ， */ || cp == 0x3001 /* 、 */ || cp == 0xFF1A /* ： */;
}

// closing quotes and brackets belong to the sentence they close
static bool is_closing(uint32_t cp) {
    switch (cp) {
        case '"': case '\'': case ')': case ']': case '}':
        case 0x2019: case 0x201D:                             // ’ ”
        case 0x300D: case 0x300F: case 0x3011: case 0x300B:   // 」 』 】 》
        case 0x3009: case 0xFF09: case 0xFF3D:                // 〉 ） ］
            return true;
        default:
            return false;
    }
}

static bool is_opening(uint32_t cp) {
    switch (cp) {
        case '(': case '[': case '{':
        case 0x2018: case 0x201C:                             // ‘ “
        case 0x300C: case 0x300E: case 0x3010: case 0x300A:   // 「 『 【 《
        case 0x3008: case 0xFF08: case 0xFF3B:                // 〈 （ ［
            return true;
        default:
            return false;
    }
}

// punctuation that must not start a segment
static bool attaches_left(uint32_t cp) {
    return is_closing(cp) || is_terminator(cp) || is_clause_mark(cp) || cp == '.';
}

// A '.' after one of these words (or after a single letter, as in "e.g." or "J. Smith") is an
// abbreviation rather than the end of a sentence.
static bool is_abbreviation(const std::vector<text_unit> & u, size_t dot) {
    static const char * const words[] = { "mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "vs", "mt", "fig", "approx" };
    size_t begin = dot;
    while (begin > 0 && is_ascii_letter(u[begin - 1].cp)) {
        --begin;
    }
    if (dot - begin == 1) {
        return true;
    }
    std::string word;
    for (size_t i = begin; i < dot; ++i) {
        word += (char) (u[i].cp | 0x20); // ASCII lower case
    }
    return std::find_if(std::begin(words), std::end(words), [&](const char * w) { return word == w; }) != std::end(words);
}

// index just past the sentence ending at u[i] (including repeated marks and closing quotes),
// or 0 when u[i] does not end a sentence
static size_t sentence_end(const std::vector<text_unit> & u, size_t i) {
    const uint32_t cp = u[i].cp;
    if (!is_terminator(cp) && cp != '.') {
        return 0;
    }
    size_t end = i + 1;
    while (end < u.size() && (is_terminator(u[end].cp) || u[end].cp == '.' || is_closing(u[end].cp))) {
        ++end;
    }
    if (cp == '.') {
        // "3.14", "llama.cpp": an ASCII period only ends a sentence before a space, the end, or CJK text
        if (end < u.size() && !is_space(u[end].cp) && !is_cjk(u[end].cp)) {
            return 0;
        }
        const bool single_dot = end == i + 1 || u[i + 1].cp != '.';
        if (single_dot && is_abbreviation(u, i)) {
            return 0;
        }
    }
    return end;
}

static std::vector<int> find_cuts(const std::vector<text_unit> & u) {
    const size_t     n = u.size();
    std::vector<int> cut(n + 1, CUT_NONE);
    auto mark = [&](size_t c, int level) { cut[c] = std::max(cut[c], level); };
    for (size_t i = 0; i < n; ++i) {
        const uint32_t cp = u[i].cp;
        if (size_t end = sentence_end(u, i)) {
            mark(end, CUT_SENTENCE);
        }
        if (is_newline(cp)) {
            mark(i, CUT_SENTENCE);
        } else if (is_space(cp)) {
            mark(i, CUT_SPACE);
        }
        // an ASCII mark with more ASCII right after it, as in "1,000", "10:30" or "https://", is not a clause break
        const bool glued = cp < 0x80 && i + 1 < n && u[i + 1].cp < 0x80 && !is_space(u[i + 1].cp);
        if (is_clause_mark(cp) && !glued) {
            size_t end = i + 1;
            while (end < n && is_closing(u[end].cp)) {
                ++end;
            }
            mark(end, CUT_CLAUSE);
        }
        if (i > 0 && (is_cjk(cp) || is_cjk(u[i - 1].cp)) && !is_space(cp) && !is_space(u[i - 1].cp) &&
            !attaches_left(cp) && !is_opening(u[i - 1].cp)) {
            mark(i, CUT_CJK);
        }
    }
    return cut;
}

// last boundary in [lo, hi] at least as good as level, or 0 if there is none
static size_t last_cut(const std::vector<int> & cut, size_t lo, size_t hi, int level) {
    for (size_t c = hi; c >= lo && c > 0; --c) {
        if (cut[c] >= level) {
            return c;
        }
    }
    return 0;
}

// where to end a segment that starts at start and may extend to limit
static size_t choose_cut(const std::vector<int> & cut, size_t start, size_t limit, size_t max_chars) {
    if (size_t c = last_cut(cut, start + 1, limit, CUT_SENTENCE)) {
        return c;
    }
    // A weaker break is taken only if it leaves a piece of reasonable size: a sentence is better
    // synthesized in a few balanced pieces than as a long one plus a fragment of two words.
    const size_t min_piece = std::max<size_t>(1, max_chars / 3);
    for (int level : { CUT_CLAUSE, CUT_SPACE, CUT_CJK }) {
        if (size_t c = last_cut(cut, start + min_piece, limit, level)) {
            return c;
        }
    }
    for (int level : { CUT_CLAUSE, CUT_SPACE, CUT_CJK }) {
        if (size_t c = last_cut(cut, start + 1, limit, level)) {
            return c;
        }
    }
    return limit; // one long word: cut it mid-word
}

std::vector<std::string> split_text(const std::string & text, size_t max_chars) {
    // a cap of 0 cannot be honoured; 1 is the closest that still makes progress
    max_chars = std::max<size_t>(max_chars, 1);

    const auto u   = decode_units(text);
    const auto cut = find_cuts(u);

    size_t last = u.size(); // one past the last non-space unit
    while (last > 0 && is_space(u[last - 1].cp)) {
        --last;
    }

    std::vector<std::string> segments;
    size_t start = 0;
    while (true) {
        while (start < last && is_space(u[start].cp)) {
            ++start;
        }
        if (start >= last) {
            break;
        }
        size_t end = last - start <= max_chars ? last : choose_cut(cut, start, start + max_chars, max_chars);
        size_t next = end;
        while (end > start && is_space(u[end - 1].cp)) {
            --end;
        }
        segments.push_back(text.substr(u[start].pos, u[end - 1].pos + u[end - 1].len - u[start].pos));
        start = next;
    }
    return segments;
}

//
// post-processing
//

// end of the last window of the given size (counted from the start) holding a sample at or above
// threshold, or 0 if there is none
static size_t last_loud_end(const std::vector<float> & pcm, size_t window, float threshold) {
    for (size_t w = (pcm.size() + window - 1) / window; w > 0; --w) {
        const size_t begin = (w - 1) * window;
        const size_t end   = std::min(pcm.size(), begin + window);
        for (size_t i = begin; i < end; ++i) {
            if (std::fabs(pcm[i]) >= threshold) {
                return end;
            }
        }
    }
    return 0;
}

size_t trim_trailing_silence(std::vector<float> & pcm, int sample_rate, float threshold_db, float keep_ms) {
    if (pcm.empty() || sample_rate <= 0) {
        return 0;
    }
    const float  threshold = std::pow(10.0f, threshold_db / 20.0f);
    const size_t window    = std::max<size_t>(1, (size_t) sample_rate / 100); // 10 ms
    const size_t keep      = (size_t) std::max(0.0, std::round(keep_ms * 1e-3 * sample_rate));

    const size_t new_size = std::min(pcm.size(), last_loud_end(pcm, window, threshold) + keep);
    const size_t removed  = pcm.size() - new_size;
    pcm.resize(new_size);
    return removed;
}

float peak_normalize(std::vector<float> & pcm, float target_peak, float max_gain) {
    float peak = 0.0f;
    for (float x : pcm) {
        peak = std::max(peak, std::fabs(x));
    }
    if (!(peak > 0.0f) || !std::isfinite(peak)) {
        return 1.0f;
    }
    const float gain = std::min(target_peak / peak, max_gain);
    for (float & x : pcm) {
        x *= gain;
    }
    return gain;
}

lowpass_filter::lowpass_filter(int sample_rate, float cutoff_hz) {
    // a cutoff at or past Nyquist (or a nonsensical one) leaves the signal as it is
    if (sample_rate <= 0 || !(cutoff_hz > 0.0f) || cutoff_hz >= 0.5f * (float) sample_rate) {
        b0 = 1.0f;
        b1 = b2 = a1 = a2 = 0.0f;
        return;
    }
    // RBJ audio-EQ-cookbook low-pass with Q = 1/sqrt(2), which is the Butterworth response
    const double w0    = 2.0 * pi * cutoff_hz / sample_rate;
    const double cw    = std::cos(w0);
    const double alpha = std::sin(w0) / (2.0 * (1.0 / std::sqrt(2.0)));
    const double a0    = 1.0 + alpha;
    b0 = (float) ((1.0 - cw) / 2.0 / a0);
    b1 = (float) ((1.0 - cw) / a0);
    b2 = b0;
    a1 = (float) (-2.0 * cw / a0);
    a2 = (float) ((1.0 - alpha) / a0);
}

void lowpass_filter::process(float * data, size_t n) {
    // transposed direct form II: two state variables, which carry over to the next call
    for (size_t i = 0; i < n; ++i) {
        const float x = data[i];
        const float y = b0 * x + z1;
        z1 = b1 * x - a1 * y + z2;
        z2 = b2 * x - a2 * y;
        data[i] = y;
    }
}

// how well the len samples at c continue those at target: cross-correlation normalized by the
// candidate's energy, over every step-th sample
static double match_score(const std::vector<float> & x, size_t target, size_t c, size_t len, size_t step) {
    double dot    = 0.0;
    double energy = 0.0;
    for (size_t i = 0; i < len; i += step) {
        dot    += (double) x[target + i] * x[c + i];
        energy += (double) x[c + i] * x[c + i];
    }
    return energy > 1e-12 ? dot / std::sqrt(energy) : 0.0;
}

// Start of the segment in [nominal - tol, nominal + tol] that best continues the segment at target.
// A full search costs tol * len per frame, so it runs on every step-th offset and sample first (the
// voice's fundamental and first formants are well below the decimated Nyquist), then refines
// around the winner at full resolution. Ties go to the candidate closest to nominal, so silence does
// not drift.
static size_t best_match(const std::vector<float> & x, size_t target, size_t nominal, size_t tol, size_t len,
                         size_t step) {
    const auto dist       = [&](size_t p) { return p > nominal ? p - nominal : nominal - p; };
    size_t     best       = nominal;
    double     best_score = -std::numeric_limits<double>::infinity();
    const auto consider   = [&](size_t c, size_t sample_step) {
        const double score = match_score(x, target, c, len, sample_step);
        if (score > best_score || (score == best_score && dist(c) < dist(best))) {
            best       = c;
            best_score = score;
        }
    };
    for (size_t c = nominal - tol; c <= nominal + tol; c += step) {
        consider(c, step);
    }
    const size_t lo = std::max(nominal - tol, best - std::min(best, step - 1));
    const size_t hi = std::min(nominal + tol, best + step - 1);
    best_score      = -std::numeric_limits<double>::infinity();
    for (size_t c = lo; c <= hi; ++c) {
        consider(c, 1);
    }
    return best;
}

std::vector<float> time_stretch(const std::vector<float> & pcm, int sample_rate, float speed) {
    if (pcm.empty() || speed == 1.0f || !(speed > 0.0f) || !std::isfinite(speed)) {
        return pcm;
    }
    const size_t out_len = (size_t) std::llround(pcm.size() / (double) speed);
    if (out_len == 0) {
        return {};
    }
    // 20 ms Hann frames overlapping by half: a few pitch periods each, short enough not to smear phonemes
    const size_t hop   = (size_t) std::max(16, sample_rate / 100);
    const size_t frame = 2 * hop;
    // the search spans +-8 ms, more than half a pitch period of low voices (~80 Hz), so a matching
    // phase is always within reach
    const size_t tol      = (size_t) std::max(8, sample_rate / 125);
    const size_t step     = (size_t) std::max(1, sample_rate / 6000); // coarse search on ~6 kHz
    const double ana_hop  = hop * (double) speed;
    const size_t n_frames = (out_len - 1) / hop + 2;

    // Zero padding in front lets the first frame start half a frame before sample 0, so every output
    // sample is covered by exactly two frames whose windows sum to one. At the back it holds every
    // candidate, including the natural continuation one hop past the last frame.
    const size_t lead = hop + tol;
    const size_t size = lead + std::max(pcm.size(), (size_t) std::ceil(n_frames * ana_hop)) + frame + tol + hop;
    std::vector<float> x(size, 0.0f);
    std::copy(pcm.begin(), pcm.end(), x.begin() + lead);

    std::vector<float> window(frame);
    for (size_t i = 0; i < frame; ++i) {
        window[i] = (float) (0.5 - 0.5 * std::cos(2.0 * pi * i / frame)); // periodic Hann
    }

    // out[hop + t] is output sample t; frame k covers output samples [k*hop - hop, k*hop + hop)
    std::vector<float> out((n_frames + 1) * hop, 0.0f);
    size_t prev = 0;
    for (size_t k = 0; k < n_frames; ++k) {
        const size_t nominal = lead - hop + (size_t) std::llround(k * ana_hop);
        // WSOLA: pick the segment near the nominal position that best continues what was copied last
        const size_t pos = k == 0 ? nominal : best_match(x, prev + hop, nominal, tol, frame, step);
        for (size_t i = 0; i < frame; ++i) {
            out[k * hop + i] += window[i] * x[pos + i];
        }
        prev = pos;
    }
    return std::vector<float>(out.begin() + hop, out.begin() + hop + out_len);
}

std::vector<float> silence(int sample_rate, int ms) {
    const long long n = (long long) sample_rate * ms / 1000;
    return std::vector<float>(n > 0 ? (size_t) n : 0, 0.0f);
}

static int16_t float_to_s16(float x) {
    if (std::isnan(x)) {
        return 0;
    }
    const double v = std::min(1.0, std::max(-1.0, (double) x)) * 32767.0;
    return (int16_t) std::lround(v); // halves round away from zero
}

std::vector<int16_t> to_s16(const float * pcm, size_t n) {
    std::vector<int16_t> out(n);
    for (size_t i = 0; i < n; ++i) {
        out[i] = float_to_s16(pcm[i]);
    }
    return out;
}

//
// encoders
//

static void put_le(std::string & out, uint32_t value, int bytes) {
    for (int i = 0; i < bytes; ++i) {
        out.push_back((char) ((value >> (8 * i)) & 0xFF));
    }
}

static std::string wav_header(int sample_rate, uint32_t riff_size, uint32_t data_size) {
    std::string h;
    h.reserve(44);
    h += "RIFF";
    put_le(h, riff_size, 4);
    h += "WAVEfmt ";
    put_le(h, 16, 4);                         // fmt chunk size
    put_le(h, 1, 2);                          // PCM
    put_le(h, 1, 2);                          // mono
    put_le(h, (uint32_t) sample_rate, 4);
    put_le(h, (uint32_t) sample_rate * 2, 4); // byte rate
    put_le(h, 2, 2);                          // block align
    put_le(h, 16, 2);                         // bits per sample
    h += "data";
    put_le(h, data_size, 4);
    return h;
}

std::string encode_pcm16(const float * pcm, size_t n) {
    std::string out;
    out.reserve(2 * n);
    for (size_t i = 0; i < n; ++i) {
        put_le(out, (uint16_t) float_to_s16(pcm[i]), 2);
    }
    return out;
}

std::string encode_wav(const std::vector<float> & pcm, int sample_rate) {
    const auto data = (uint32_t) (2 * pcm.size());
    return wav_header(sample_rate, 36 + data, data) + encode_pcm16(pcm);
}

std::string wav_stream_header(int sample_rate) {
    return wav_header(sample_rate, 0xFFFFFFFFu, 0xFFFFFFFFu);
}

//
// FLAC (RFC 9639)
//

namespace {

// packs bit fields most significant bit first, as FLAC stores them
struct bit_writer {
    std::string bytes;
    uint64_t    acc   = 0; // bits not yet flushed, right-aligned
    int         nbits = 0;

    void put(uint32_t value, int bits) {
        const uint64_t mask = bits == 0 ? 0 : (~uint64_t(0) >> (64 - bits));
        acc    = (acc << bits) | (value & mask);
        nbits += bits;
        while (nbits >= 8) {
            nbits -= 8;
            bytes.push_back((char) ((acc >> nbits) & 0xFF));
        }
        acc &= (uint64_t(1) << nbits) - 1;
    }

    void put_zeros(uint64_t count) {
        for (; count >= 32; count -= 32) {
            put(0, 32);
        }
        put(0, (int) count);
    }

    void align() {
        if (nbits > 0) {
            put(0, 8 - nbits);
        }
    }
};

// Rice parameter for a partition and the bits its samples take with it
struct rice_plan {
    int      param;
    uint64_t bits;
};

} // namespace

static uint8_t crc8(const std::string & data) {
    uint8_t crc = 0;
    for (unsigned char b : data) {
        crc ^= b;
        for (int i = 0; i < 8; ++i) {
            crc = (uint8_t) ((crc & 0x80) ? (crc << 1) ^ 0x07 : crc << 1);
        }
    }
    return crc;
}

static uint16_t crc16(const std::string & data) {
    uint16_t crc = 0;
    for (unsigned char b : data) {
        crc ^= (uint16_t) (b << 8);
        for (int i = 0; i < 8; ++i) {
            crc = (uint16_t) ((crc & 0x8000) ? (crc << 1) ^ 0x8005 : crc << 1);
        }
    }
    return crc;
}

// frame number in the UTF-8-like variable-length code of the frame header (up to 36 bits)
static void put_coded_number(bit_writer & bw, uint64_t v) {
    if (v < 0x80) {
        bw.put((uint32_t) v, 8);
        return;
    }
    int extra = 1; // continuation bytes, 6 payload bits each
    while (extra < 6 && v >= (uint64_t(1) << (6 * extra + 6 - extra))) {
        ++extra;
    }
    const uint32_t lead_marker = (0xFF00u >> (extra + 1)) & 0xFF; // extra+1 one bits, then a zero
    bw.put(lead_marker | (uint32_t) (v >> (6 * extra)), 8);
    for (int i = extra - 1; i >= 0; --i) {
        bw.put(0x80 | (uint32_t) ((v >> (6 * i)) & 0x3F), 8);
    }
}

// 4-bit block size code of the frame header; codes 6 and 7 put n-1 after the coded number
static uint32_t block_size_code(size_t n) {
    if (n == 192) {
        return 1;
    }
    for (uint32_t code = 2; code <= 5; ++code) {
        if (n == (size_t) 576 << (code - 2)) {
            return code;
        }
    }
    for (uint32_t code = 8; code <= 15; ++code) {
        if (n == (size_t) 256 << (code - 8)) {
            return code;
        }
    }
    return n <= 256 ? 6 : 7;
}

// 4-bit sample rate code of the frame header; codes 12-14 put the rate after the block size,
// 0 means "see STREAMINFO"
static uint32_t sample_rate_code(int rate) {
    static const int table[] = { 0, 88200, 176400, 192000, 8000, 16000, 22050, 24000, 32000, 44100, 48000, 96000 };
    for (uint32_t code = 1; code < 12; ++code) {
        if (rate == table[code]) {
            return code;
        }
    }
    if (rate > 0 && rate % 1000 == 0 && rate / 1000 <= 255) {
        return 12;
    }
    if (rate > 0 && rate <= 65535) {
        return 13;
    }
    if (rate > 0 && rate % 10 == 0 && rate / 10 <= 65535) {
        return 14;
    }
    return 0;
}

// zigzag: residual to unsigned, so small magnitudes of either sign get short codes
static uint32_t fold(int32_t r) {
    return r >= 0 ? (uint32_t) r * 2 : (uint32_t) (-(r + 1)) * 2 + 1;
}

// residual of the fixed polynomial predictor of the given order (RFC 9639, 9.2.5)
static void fixed_residual(const int16_t * s, size_t n, int order, std::vector<uint32_t> & out) {
    out.resize(n - order);
    for (size_t i = order; i < n; ++i) {
        int32_t r = 0;
        switch (order) {
            case 0: r = s[i]; break;
            case 1: r = s[i] - s[i - 1]; break;
            case 2: r = s[i] - 2 * s[i - 1] + s[i - 2]; break;
            case 3: r = s[i] - 3 * s[i - 1] + 3 * s[i - 2] - s[i - 3]; break;
            case 4: r = s[i] - 4 * s[i - 1] + 6 * s[i - 2] - 4 * s[i - 3] + s[i - 4]; break;
        }
        out[i - order] = fold(r);
    }
}

static uint64_t rice_bits(const std::vector<uint32_t> & u, int k) {
    uint64_t bits = (uint64_t) u.size() * (1 + k); // stop bit and k low bits per sample
    for (uint32_t v : u) {
        bits += v >> k;                            // unary quotient
    }
    return bits;
}

static rice_plan choose_rice(const std::vector<uint32_t> & u) {
    uint64_t sum = 0;
    for (uint32_t v : u) {
        sum += v;
    }
    // for Laplacian-like residuals the best parameter is close to log2 of the mean; the estimate
    // and its neighbours are priced exactly and the cheapest wins. 30 is the largest parameter
    // short of the escape code in the 5-bit coding.
    int k = 0;
    while (k < 30 && ((uint64_t) u.size() << (k + 1)) <= sum) {
        ++k;
    }
    rice_plan best = { k, rice_bits(u, k) };
    for (int cand : { k - 1, k + 1 }) {
        if (cand >= 0 && cand <= 30) {
            const uint64_t bits = rice_bits(u, cand);
            if (bits < best.bits) {
                best = { cand, bits };
            }
        }
    }
    return best;
}

static void put_subframe_header(bit_writer & bw, uint32_t type) {
    bw.put(0, 1);    // padding
    bw.put(type, 6);
    bw.put(0, 1);    // no wasted bits
}

// one 16-bit mono subframe: CONSTANT, FIXED order 0-4 or VERBATIM, whichever is smallest
static void put_subframe(bit_writer & bw, const int16_t * s, size_t n) {
    if (std::all_of(s, s + n, [&](int16_t v) { return v == s[0]; })) {
        put_subframe_header(bw, 0);
        bw.put((uint16_t) s[0], 16);
        return;
    }
    uint64_t              best_bits  = (uint64_t) n * 16; // VERBATIM
    int                   best_order = -1;
    rice_plan             best_rice  = { 0, 0 };
    std::vector<uint32_t> best_res;
    std::vector<uint32_t> res;
    for (int order = 0; order <= 4 && (size_t) order < n; ++order) {
        fixed_residual(s, n, order, res);
        const rice_plan plan = choose_rice(res);
        // warm-up samples, coding method, partition order and Rice parameter, then the codes
        const uint64_t bits = (uint64_t) order * 16 + 2 + 4 + (plan.param > 14 ? 5 : 4) + plan.bits;
        if (bits < best_bits) {
            best_bits  = bits;
            best_order = order;
            best_rice  = plan;
            best_res.swap(res);
        }
    }
    if (best_order < 0) {
        put_subframe_header(bw, 1);
        for (size_t i = 0; i < n; ++i) {
            bw.put((uint16_t) s[i], 16);
        }
        return;
    }
    put_subframe_header(bw, 8 | (uint32_t) best_order);
    for (int i = 0; i < best_order; ++i) {
        bw.put((uint16_t) s[i], 16);
    }
    // 4-bit parameters stop at 14 (15 is the escape code); larger ones need the 5-bit coding
    const bool wide = best_rice.param > 14;
    bw.put(wide ? 1 : 0, 2);
    bw.put(0, 4); // partition order 0: one partition
    bw.put((uint32_t) best_rice.param, wide ? 5 : 4);
    const int k = best_rice.param;
    for (uint32_t v : best_res) {
        bw.put_zeros(v >> k);
        bw.put(1, 1);
        bw.put(v, k);
    }
}

flac_encoder::flac_encoder(int sample_rate, uint64_t total_samples, int block_size)
    : sample_rate(sample_rate), total_samples(total_samples),
      // STREAMINFO allows 16..65535; the frame header can code any size in that range
      block_size(std::min(65535, std::max(16, block_size))) {}

std::string flac_encoder::header() const {
    bit_writer bw;
    bw.put(1, 1);   // last metadata block
    bw.put(0, 7);   // STREAMINFO
    bw.put(34, 24); // its length
    bw.put((uint32_t) block_size, 16); // min block size (the last block may be shorter)
    bw.put((uint32_t) block_size, 16); // max block size
    bw.put(0, 24);  // min frame size: unknown, frames are written after this header
    bw.put(0, 24);  // max frame size: unknown
    bw.put((uint32_t) sample_rate, 20);
    bw.put(0, 3);   // channels - 1
    bw.put(15, 5);  // bits per sample - 1
    bw.put((uint32_t) (total_samples >> 32) & 0xF, 4);
    bw.put((uint32_t) (total_samples & 0xFFFFFFFF), 32);
    for (int i = 0; i < 4; ++i) {
        bw.put(0, 32); // MD5 of the audio: all zero means not computed
    }
    return "fLaC" + bw.bytes;
}

std::string flac_encoder::encode_frame(const int16_t * s, size_t n) {
    const uint32_t bs_code = block_size_code(n);
    const uint32_t sr_code = sample_rate_code(sample_rate);

    bit_writer bw;
    bw.put(0x3FFE, 14); // sync code
    bw.put(0, 1);       // reserved
    bw.put(0, 1);       // fixed block size: the header carries the frame number
    bw.put(bs_code, 4);
    bw.put(sr_code, 4);
    bw.put(0, 4);       // one channel
    bw.put(4, 3);       // 16 bits per sample
    bw.put(0, 1);       // reserved
    put_coded_number(bw, frame_number);
    if (bs_code == 6) {
        bw.put((uint32_t) n - 1, 8);
    } else if (bs_code == 7) {
        bw.put((uint32_t) n - 1, 16);
    }
    if (sr_code == 12) {
        bw.put((uint32_t) sample_rate / 1000, 8);
    } else if (sr_code == 13) {
        bw.put((uint32_t) sample_rate, 16);
    } else if (sr_code == 14) {
        bw.put((uint32_t) sample_rate / 10, 16);
    }
    bw.put(crc8(bw.bytes), 8); // the header is whole bytes at this point

    put_subframe(bw, s, n);
    bw.align();
    bw.put(crc16(bw.bytes), 16);

    ++frame_number;
    return bw.bytes;
}

std::string flac_encoder::encode(const float * pcm, size_t n, bool final) {
    const auto samples = to_s16(pcm, n);
    pending.insert(pending.end(), samples.begin(), samples.end());

    std::string out;
    size_t      done = 0;
    while (pending.size() - done >= (size_t) block_size) {
        out += encode_frame(pending.data() + done, block_size);
        done += block_size;
    }
    if (final && done < pending.size()) {
        out += encode_frame(pending.data() + done, pending.size() - done);
        done = pending.size();
    }
    pending.erase(pending.begin(), pending.begin() + done);
    return out;
}

std::string encode_flac(const std::vector<float> & pcm, int sample_rate) {
    flac_encoder enc(sample_rate, pcm.size());
    return enc.header() + enc.encode(pcm.data(), pcm.size(), true);
}

//
// reference recordings
//

static uint32_t get_le(const std::string & b, size_t at, int bytes) {
    uint32_t v = 0;
    for (int i = bytes - 1; i >= 0; --i) {
        v = (v << 8) | (unsigned char) b[at + (size_t) i];
    }
    return v;
}

// sample k of data (interleaved), as a float; PCM integers are scaled to [-1, 1)
static double wav_sample(const std::string & b, size_t at, bool is_float, int bits) {
    if (is_float) {
        if (bits == 32) {
            float f;
            const uint32_t u = get_le(b, at, 4);
            std::memcpy(&f, &u, 4);
            return f;
        }
        const uint64_t u = (uint64_t) get_le(b, at, 4) | ((uint64_t) get_le(b, at + 4, 4) << 32);
        double d;
        std::memcpy(&d, &u, 8);
        return d;
    }
    if (bits == 8) {
        return ((int) (unsigned char) b[at] - 128) / 128.0; // 8-bit WAV is unsigned
    }
    const uint32_t u     = get_le(b, at, bits / 8);
    const uint32_t sign  = 1u << (bits - 1);
    const int64_t  value = (int64_t) (u ^ sign) - (int64_t) sign; // sign-extend
    return (double) value / (double) sign;
}

static std::string fmt_seconds(double s) {
    char buf[32];
    std::snprintf(buf, sizeof(buf), "%.3g s", s);
    return buf;
}

// the "fmt " fields that decide how samples are stored; empty string when supported
static std::string wav_format(const std::string & b, size_t at, uint32_t size, wav_info & info) {
    if (size < 16) {
        return "its fmt chunk is truncated";
    }
    uint32_t tag     = get_le(b, at, 2);
    info.channels    = (int) get_le(b, at + 2, 2);
    info.sample_rate = (int) std::min<uint32_t>(get_le(b, at + 4, 4), INT32_MAX);
    info.block_align = (int) get_le(b, at + 12, 2);
    info.bits        = (int) get_le(b, at + 14, 2);
    if (tag == 0xFFFE && size >= 26) {
        tag = get_le(b, at + 24, 2); // WAVE_FORMAT_EXTENSIBLE: the sub-format GUID starts with the tag
    }
    info.is_float = tag == 3;
    if (tag != 1 && tag != 3) {
        return "its encoding (WAVE format tag " + std::to_string(tag) + ") is not PCM or IEEE float";
    }
    const bool bits_ok = info.is_float ? (info.bits == 32 || info.bits == 64)
                                       : (info.bits == 8 || info.bits == 16 || info.bits == 24 || info.bits == 32);
    if (!bits_ok) {
        return std::to_string(info.bits) + "-bit " + (info.is_float ? "float" : "PCM") + " samples are not supported";
    }
    if (info.channels < 1 || info.block_align != info.channels * info.bits / 8) {
        return "its fmt chunk is inconsistent (channels and block size)";
    }
    return "";
}

std::string check_reference_wav(const std::string & b, const reference_limits & lim, wav_info & info) {
    info = {};
    if (b.size() < 12 || b.compare(0, 4, "RIFF") != 0 || b.compare(8, 4, "WAVE") != 0) {
        return "it is not a RIFF/WAVE file";
    }
    size_t data_at = 0, data_size = 0;
    bool   have_fmt = false, have_data = false;
    for (size_t at = 12; at + 8 <= b.size() && !have_data;) {
        const std::string id   = b.substr(at, 4);
        const uint32_t    size = get_le(b, at + 4, 4);
        const size_t      body = at + 8;
        const size_t      room = b.size() - body;
        if (id == "fmt ") {
            if (size > room) {
                return "its fmt chunk is truncated";
            }
            const std::string why = wav_format(b, body, size, info);
            if (!why.empty()) {
                return why;
            }
            have_fmt = true;
        } else if (id == "data") {
            // a stream writer leaves the size open (0 or 0xFFFFFFFF): the data runs to the end
            data_at   = body;
            data_size = size == 0 || size > room ? room : size;
            have_data = true;
        }
        at = body + (size_t) size + (size & 1);
        if (at < body) {
            break; // overflow
        }
    }
    if (!have_fmt) {
        return "it has no fmt chunk";
    }
    if (!have_data) {
        return "it has no data chunk";
    }
    if (info.channels > lim.max_channels) {
        return "it has " + std::to_string(info.channels) + " channels, at most " + std::to_string(lim.max_channels) +
               " are accepted";
    }
    if (info.sample_rate < lim.min_rate || info.sample_rate > lim.max_rate) {
        return "its sample rate is " + std::to_string(info.sample_rate) + " Hz, it must be between " +
               std::to_string(lim.min_rate) + " and " + std::to_string(lim.max_rate) + " Hz";
    }
    info.n_frames = data_size / (size_t) info.block_align;
    const double seconds = (double) info.n_frames / info.sample_rate;
    if (seconds < lim.min_seconds) {
        return "it is " + fmt_seconds(seconds) + " long (" + std::to_string(info.n_frames) +
               " samples), a voice needs at least " + fmt_seconds(lim.min_seconds);
    }
    if (seconds > lim.max_seconds) {
        return "it is " + fmt_seconds(seconds) + " long, at most " + fmt_seconds(lim.max_seconds) + " are accepted";
    }
    const int    width = info.bits / 8;
    const size_t n     = info.n_frames * (size_t) info.channels;
    double       peak  = 0.0;
    for (size_t k = 0; k < n; ++k) {
        const double v = wav_sample(b, data_at + k * (size_t) width, info.is_float, info.bits);
        if (!std::isfinite(v)) {
            return "sample " + std::to_string(k / (size_t) info.channels) + " is not a finite number";
        }
        peak = std::max(peak, std::fabs(v));
    }
    if (peak == 0.0) {
        return "it is digital silence";
    }
    return "";
}

} // namespace speech_audio
