#include "server-speech-codecs.h"

#include <algorithm>
#include <cstdint>
#include <cstring>

#ifdef Q3_SPEECH_MP3
#include <lame/lame.h>
#endif
#ifdef Q3_SPEECH_OPUS
#include <ogg/ogg.h>
#include <opus/opus.h>
#endif

namespace speech_codecs {

bool available(const std::string & format) {
    const auto names = compiled();
    return std::find(names.begin(), names.end(), format) != names.end();
}

std::vector<std::string> compiled() {
    std::vector<std::string> out;
#ifdef Q3_SPEECH_MP3
    out.push_back("mp3");
#endif
#ifdef Q3_SPEECH_OPUS
    out.push_back("opus");
#endif
    return out;
}

std::vector<std::string> versions() {
    std::vector<std::string> out;
#ifdef Q3_SPEECH_MP3
    out.push_back(std::string("LAME ") + get_lame_version());
#endif
#ifdef Q3_SPEECH_OPUS
    out.push_back(opus_get_version_string());
    out.push_back("libogg");
#endif
    return out;
}

namespace {

#ifdef Q3_SPEECH_MP3
// MPEG-2 Layer III at the model's rate (24 kHz), mono, 64 kbit/s constant bit rate.
// A whole file starts with LAME's Info tag frame (written last, over the placeholder LAME reserves),
// which carries the encoder delay and padding: gapless decoders (mpg123, so libsndfile, ffmpeg)
// trim them and give back exactly the samples encoded. A stream has no tag (it would be known only
// at the end), so its decoded audio is longer by LAME's delay and the padding of the last frame.
class mp3_encoder : public encoder {
public:
    bool init(int sample_rate, bool whole, std::string & err) {
        gf = lame_init();
        if (!gf) {
            err = "LAME could not allocate an encoder";
            return false;
        }
        lame_set_num_channels(gf, 1);
        lame_set_mode(gf, MONO);
        lame_set_in_samplerate(gf, sample_rate);
        lame_set_out_samplerate(gf, sample_rate);
        lame_set_VBR(gf, vbr_off);
        lame_set_brate(gf, 64);
        lame_set_quality(gf, 5);
        lame_set_bWriteVbrTag(gf, whole ? 1 : 0);
        if (lame_init_params(gf) < 0) {
            err = "LAME refused " + std::to_string(sample_rate) + " Hz mono at 64 kbit/s";
            return false;
        }
        return true;
    }
    ~mp3_encoder() override {
        if (gf) {
            lame_close(gf);
        }
    }

    std::string encode(const float * pcm, size_t n, bool final) override {
        std::string out;
        // LAME's worst case: 1.25 n + 7200 bytes per call; fed in pieces to bound the buffer
        const size_t piece = 1 << 16;
        for (size_t off = 0; off < n; off += piece) {
            const int m = (int) std::min(piece, n - off);
            buf.resize((size_t) m * 5 / 4 + 7200);
            const int k = lame_encode_buffer_ieee_float(gf, pcm + off, pcm + off, m, buf.data(), (int) buf.size());
            if (k < 0) {
                error = "LAME failed to encode (" + std::to_string(k) + ")";
                return out;
            }
            out.append((const char *) buf.data(), (size_t) k);
        }
        if (final) {
            buf.resize(7200);
            const int k = lame_encode_flush(gf, buf.data(), (int) buf.size());
            if (k > 0) {
                out.append((const char *) buf.data(), (size_t) k);
            }
        }
        return out;
    }

    void finish_whole(std::string & file) override {
        unsigned char tag[2880];
        const size_t k = lame_get_lametag_frame(gf, tag, sizeof(tag));
        if (k > 0 && k <= sizeof(tag) && k <= file.size()) {
            std::memcpy(&file[0], tag, k);
        }
    }

private:
    lame_global_flags * gf = nullptr;
    std::vector<unsigned char> buf;
};
#endif

#ifdef Q3_SPEECH_OPUS
// Ogg Opus (RFC 7845), mono, 20 ms packets, 32 kbit/s (libopus's VBR), fed at the model's rate:
// libopus codes 8/12/16/24/48 kHz input itself. Granule positions count 48 kHz samples; the header's
// pre-skip is the encoder's lookahead, and the last page's granule position trims the padding of the
// last packet, so a conforming decoder gives back exactly the samples encoded.
class opus_ogg_encoder : public encoder {
public:
    bool init(int sample_rate, std::string & err) {
        rate = sample_rate;
        if (48000 % rate != 0 || rate < 8000) {
            err = "Opus codes 8, 12, 16, 24 or 48 kHz audio, not " + std::to_string(rate) + " Hz";
            return false;
        }
        int e = 0;
        enc = opus_encoder_create(rate, 1, OPUS_APPLICATION_AUDIO, &e);
        if (!enc || e != OPUS_OK) {
            err = std::string("libopus: ") + opus_strerror(e);
            return false;
        }
        opus_encoder_ctl(enc, OPUS_SET_BITRATE(32000));
        opus_int32 lookahead = 0;
        opus_encoder_ctl(enc, OPUS_GET_LOOKAHEAD(&lookahead));
        scale     = 48000 / rate;
        frame     = rate / 50;
        delay     = lookahead;
        pre_skip  = (int64_t) lookahead * scale;
        // a fixed serial number: the same audio gives the same bytes
        ogg_stream_init(&os, 0x51335454);
        os_ready = true;
        return true;
    }
    ~opus_ogg_encoder() override {
        if (enc) {
            opus_encoder_destroy(enc);
        }
        if (os_ready) {
            ogg_stream_clear(&os);
        }
    }

    std::string encode(const float * pcm, size_t n, bool final) override {
        std::string out;
        if (!headers_done) {
            headers_done = true;
            out += headers();
        }
        pending.insert(pending.end(), pcm, pcm + n);
        n_in += (int64_t) n;
        if (final) {
            // the lookahead still inside the encoder, then silence up to a whole packet
            pending.resize(pending.size() + (size_t) delay, 0.0f);
            const size_t rem = pending.size() % (size_t) frame;
            if (rem != 0) {
                pending.resize(pending.size() + (size_t) frame - rem, 0.0f);
            }
        }
        const size_t n_packets = pending.size() / (size_t) frame;
        unsigned char packet[4000];
        for (size_t i = 0; i < n_packets; i++) {
            const opus_int32 k = opus_encode_float(enc, pending.data() + i * frame, frame, packet, sizeof(packet));
            if (k < 0) {
                error = std::string("libopus: ") + opus_strerror(k);
                break;
            }
            granule += (int64_t) frame * scale;
            const bool last = final && i + 1 == n_packets;
            ogg_packet op = {};
            op.packet     = packet;
            op.bytes      = k;
            op.e_o_s      = last ? 1 : 0;
            // the end of the audio, not of the padded packet: the decoder trims the rest
            op.granulepos = last ? pre_skip + n_in * scale : granule;
            op.packetno   = packetno++;
            ogg_stream_packetin(&os, &op);
        }
        pending.erase(pending.begin(), pending.begin() + (ptrdiff_t) (n_packets * frame));
        // every call ends its pages, so a stream's bytes reach the client now, not a page later
        out += pages(true);
        return out;
    }

private:
    std::string pages(bool flush) {
        std::string out;
        ogg_page og;
        while (flush ? ogg_stream_flush(&os, &og) : ogg_stream_pageout(&os, &og)) {
            out.append((const char *) og.header, (size_t) og.header_len);
            out.append((const char *) og.body, (size_t) og.body_len);
        }
        return out;
    }

    std::string headers() {
        auto put16 = [](std::string & s, uint32_t v) { s.push_back((char) (v & 0xff)); s.push_back((char) (v >> 8)); };
        auto put32 = [&](std::string & s, uint32_t v) { put16(s, v & 0xffff); put16(s, v >> 16); };
        std::string head = "OpusHead";
        head.push_back(1);                  // version
        head.push_back(1);                  // channels
        put16(head, (uint32_t) pre_skip);
        put32(head, (uint32_t) rate);       // input sample rate (informative)
        put16(head, 0);                     // output gain
        head.push_back(0);                  // channel mapping family 0: mono/stereo
        std::string tags = "OpusTags";
        const std::string vendor = opus_get_version_string();
        put32(tags, (uint32_t) vendor.size());
        tags += vendor;
        put32(tags, 0);                     // no user comments

        std::string out;
        for (int i = 0; i < 2; i++) {
            std::string & body = i == 0 ? head : tags;
            ogg_packet op = {};
            op.packet   = (unsigned char *) body.data();
            op.bytes    = (long) body.size();
            op.b_o_s    = i == 0 ? 1 : 0;
            op.packetno = packetno++;
            ogg_stream_packetin(&os, &op);
            out += pages(true);             // each header packet on a page of its own
        }
        return out;
    }

    OpusEncoder * enc = nullptr;
    ogg_stream_state os;
    bool    os_ready = false;
    bool    headers_done = false;
    int     rate = 0, scale = 2, frame = 480, delay = 0;
    int64_t pre_skip = 0, granule = 0, n_in = 0, packetno = 0;
    std::vector<float> pending;
};
#endif

} // namespace

std::unique_ptr<encoder> make_encoder(const std::string & format, int sample_rate, bool whole, std::string & err) {
    (void) sample_rate;
    (void) whole;
#ifdef Q3_SPEECH_MP3
    if (format == "mp3") {
        auto e = std::make_unique<mp3_encoder>();
        return e->init(sample_rate, whole, err) ? std::move(e) : nullptr;
    }
#endif
#ifdef Q3_SPEECH_OPUS
    if (format == "opus") {
        auto e = std::make_unique<opus_ogg_encoder>();
        return e->init(sample_rate, err) ? std::move(e) : nullptr;
    }
#endif
    err = "this build has no " + format + " encoder";
    return nullptr;
}

bool encode_file(const std::string & format, const std::vector<float> & pcm, int sample_rate, std::string & out,
                 std::string & err) {
    auto e = make_encoder(format, sample_rate, true, err);
    if (!e) {
        return false;
    }
    out = e->encode(pcm.data(), pcm.size(), true);
    if (!e->error.empty()) {
        err = e->error;
        return false;
    }
    e->finish_whole(out);
    return true;
}

} // namespace speech_codecs
