#include "server-speech-engine.h"

#include "log.h"
#include "sampling.h"
#include "server-speech-audio.h"
#include "../src/llama-ext.h" // llama_get_memory_breakdown

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <system_error>

#ifndef _WIN32
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#endif

namespace fs = std::filesystem;

// What a reference recording must be before the speaker encoder sees it. The encoder (ECAPA-TDNN,
// tools/mtmd/models/qwen3tts-spkenc.cpp) reflect-pads its mel frames by (kernel - 1) / 2 * dilation
// per convolution: 2 for the first (kernel 5), up to 4 for the SE-Res2Net blocks (kernel 3,
// dilations 2, 3, 4), and ggml_pad_reflect_1d needs more frames than that. 5 mel frames (hop 256,
// n_fft 1024 after a 384-sample reflect pad) are 1280 samples, 53 ms at 24 kHz; we ask for 0.5 s,
// about 10x that (47 frames, enough for dilations up to 46) and still far below the few seconds a
// useful voice takes. 60 s bounds the encoder's cost; files above 64 MiB are not read at all.
static const size_t voice_max_bytes = 64u << 20;

#define SPE_INF(fmt, ...) LOG_INF("speech: " fmt, __VA_ARGS__)
#define SPE_WRN(fmt, ...) LOG_WRN("speech: " fmt, __VA_ARGS__)
#define SPE_ERR(fmt, ...) LOG_ERR("speech: " fmt, __VA_ARGS__)

static std::string lower(std::string s) {
    for (auto & c : s) {
        c = (char) std::tolower((unsigned char) c);
    }
    return s;
}

static std::string meta_str(const llama_model * model, const std::string & key) {
    char buf[4096] = {};
    if (llama_model_meta_val_str(model, key.c_str(), buf, sizeof(buf)) < 0) {
        return "";
    }
    return buf;
}

// the tokens that end a segment: the codec's end of speech (mtmd-helper-gen stops on it) and the
// vocabulary's end-of-generation tokens
static std::vector<llama_token> find_segment_end_tokens(const llama_vocab * vocab) {
    std::vector<llama_token> out;
    const int32_t n = llama_vocab_n_tokens(vocab);
    for (llama_token t = 0; t < n; t++) {
        if (llama_vocab_is_eog(vocab, t) || std::strcmp(llama_vocab_get_text(vocab, t), "<|codec_eos_token|>") == 0) {
            out.push_back(t);
        }
    }
    return out;
}

// names of the special tokens "<|prefix...|>" in the vocab, without the markers
static std::vector<std::string> special_names(const llama_vocab * vocab, const std::string & prefix) {
    std::vector<std::string> out;
    const std::string open = "<|" + prefix;
    const int32_t n = llama_vocab_n_tokens(vocab);
    for (llama_token t = 0; t < n; t++) {
        const std::string text = llama_vocab_get_text(vocab, t);
        if (text.size() > open.size() + 2 && text.compare(0, open.size(), open) == 0 &&
            text.compare(text.size() - 2, 2, "|>") == 0) {
            out.push_back(text.substr(open.size(), text.size() - open.size() - 2));
        }
    }
    std::sort(out.begin(), out.end());
    return out;
}

void speech_stage_timings::add(const mtmd_helper_gen_audio_timings & t) {
    prompt_ms     += t.t_prompt_ms;
    talker_ms     += t.t_talker_ms;
    code_ms       += t.t_code_ms;
    decode_ms     += t.t_decode_ms;
    prompt_tokens += t.n_prompt_tokens;
    frames        += t.n_code_frames;
    decoded_frames += t.n_decode_frames;
}

speech_slot_lease::~speech_slot_lease() {
    engine.release(slot);
}

//
// speech_engine
//

speech_engine::~speech_engine() {
    slots.clear();
    if (talker) {
        llama_free(talker);
    }
    if (mctx) {
        mtmd_free(mctx);
    }
}

bool speech_engine::load(const common_params & params, const llama_model * model) {
    cparams = params;
    mdl     = model;
    if (!model || params.mmproj.path.empty()) {
        SPE_INF("%s\n", "disabled (start with a Qwen3-TTS talker -m and its --mmproj to enable /v1/audio/speech)");
        return false;
    }
    const std::string arch = meta_str(model, "general.architecture");
    type = meta_str(model, arch + ".tts.model_type");
    size = meta_str(model, arch + ".tts.model_size");
    if (type.empty()) {
        type = "base"; // converted before the variants were recorded: the Base model
    }

    const llama_vocab * vocab = llama_model_get_vocab(model);
    speakers = special_names(vocab, "spk_");
    langs    = special_names(vocab, "codec_language_");
    end_tokens = find_segment_end_tokens(vocab);

    // A slot's talker context (its KV cache is most of a slot's memory) holds the longest segment it can
    // generate: the prompt, then the frame cap of a segment of --tts-segment-chars characters. The prompt
    // is the segment's text, at most 2 tokens per character (the request parser splits a segment whose
    // text takes more), plus prompt_fixed_rows (turn markers, the codec prefix, the speaker, tts_eos);
    // room for an instruction turn only where the model takes instructions (2 tokens per character of
    // --tts-max-instructions, longer ones are refused); a Base model clones in context too: room for the
    // longest transcript (one token per character, longer ones are refused) and the codes of the longest
    // recording (12.5 frames a second). 200 characters, CustomVoice: 825 frames + 400 + 16 -> 1280 cells.
    const int seg_chars = std::max(16, params.tts_segment_chars);
    text_tokens  = 2 * seg_chars;
    instr_tokens = takes_instructions() ? 2 * std::max(1, params.tts_max_instructions) : 0;
    limits = { 0.5, (double) std::max(1, params.tts_max_ref_seconds), 8000, 192000, 2 };
    icl_tokens = type == "base" ? (int) max_transcript_chars + (int) std::ceil(limits.max_seconds * 12.5) + 2 : 0;
    const int frame_cap = segment_frame_cap((size_t) seg_chars);
    n_ctx = frame_cap + text_tokens + prompt_fixed_rows + (instr_tokens > 0 ? instr_tokens + instruction_turn_rows : 0) +
            icl_tokens;
    n_ctx = (n_ctx + 255) / 256 * 256; // libllama pads a context to 256 cells

    if (!params.tts_voices_dir.empty()) {
        std::error_code ec;
        voices_real = fs::canonical(params.tts_voices_dir, ec).string();
        if (ec) {
            SPE_WRN("the voices directory %s cannot be resolved: %s\n", params.tts_voices_dir.c_str(),
                    ec.message().c_str());
        }
    }

    const int n_slots = std::max(1, params.tts_slots);
    if (!init_talker(n_slots)) {
        return false;
    }
    for (int i = 0; i < n_slots; i++) {
        auto slot = std::make_unique<speech_slot>();
        if (!init_slot(*slot, i)) {
            slots.clear();
            return false;
        }
        free_slots.push_back(slot.get());
        slots.push_back(std::move(slot));
    }
    return_by_us.assign(slots.size(), 0);
    rate     = mtmd_gen_audio_get_info(mctx).sample_rate;
    batching = n_slots > 1 && mtmd_gen_audio_get_info(mctx).type == MTMD_GEN_AUDIO_TYPE_QWEN3TTS;
    cloning = mtmd_support_audio(mctx);
    if (cloning && icl_tokens > 0) {
        // an mmproj converted before in-context cloning has no speech encoder: its voices stay x-vector
        std::vector<float> silence((size_t) rate / 10, 0.0f);
        mtmd::bitmap_ptr probe(mtmd_bitmap_init_from_audio(silence.size(), silence.data()));
        icl_capable = probe && mtmd_helper_gen_audio_encode_codes(slots[0]->gen->ctx.get(), probe.get(), nullptr, 0) > 0;
        if (!icl_capable) {
            SPE_WRN("%s\n", "the mmproj has no speech encoder (convert the model again): cloned voices use their "
                    "x-vector only, transcripts are not used");
        }
    }
    ready   = true;
    speech_voice v;
    if (!cparams.tts_speaker.empty() && !find_voice(cparams.tts_speaker, v)) {
        SPE_WRN("the default voice '%s' (--tts-speaker) is not a voice of this server\n", cparams.tts_speaker.c_str());
    }
    // a client name that would speak with no voice is a configuration error: the server does not start
    for (const auto & [name, voice] : cparams.tts_voice_aliases) {
        if (!find_voice(voice, v)) {
            std::string names;
            for (const auto & x : voices()) {
                names += (names.empty() ? "" : ", ") + x.id;
            }
            fatal = "--tts-voice-alias " + name + "=" + voice + ": '" + voice + "' is not a voice of this server (" +
                    (names.empty() ? std::string("it has none") : "it has: " + names) + ")";
            ready = false;
            return false;
        }
        alias_map[lower(name)] = voice;
    }
    SPE_INF("enabled: %s, %d slot(s) of %d tokens (segment: %d frames, %d text tokens%s%s), %zu built-in speaker(s), "
            "%s, %zu language(s)\n",
            describe().c_str(), n_slots, n_ctx, frame_cap,
            text_tokens, instr_tokens > 0 ? (", " + std::to_string(instr_tokens) + " for instructions").c_str() : "",
            icl_tokens > 0 ? (", " + std::to_string(icl_tokens) + " for a cloned voice's reference").c_str() : "",
            speakers.size(), cloning ? "voice cloning" : "no voice cloning", langs.size());
    return true;
}

// One talker context for every slot: a sequence per slot, KV cache not unified, so libllama gives each
// sequence n_ctx / n_seq_max cells: the per-slot size computed in load(). One decode carries a row per
// slot that wants a frame (n_outputs_max = slots), a prompt only its last row.
bool speech_engine::init_talker(int n_slots) {
    llama_context_params lparams = common_context_params_to_llama(cparams);
    lparams.n_ctx      = (uint32_t) n_ctx * (uint32_t) n_slots;
    lparams.n_seq_max  = (uint32_t) n_slots;
    lparams.kv_unified = false;
    lparams.embeddings = true; // the helper feeds the talker's hidden state to the code predictor
    // the helper reads one row per sequence and decode (the last prompt row, then each step): reserving
    // the compute graph for more outputs would hold vocab-wide logits for a whole ubatch
    lparams.n_outputs_max         = (uint32_t) n_slots;
    lparams.n_outputs_max_per_seq = 1;
    lparams.n_batch    = std::min<uint32_t>(lparams.n_batch, (uint32_t) n_ctx);
    // the compute buffer is sized for a whole ubatch against a whole sequence (the attention scores
    // alone, without flash attention: n_ubatch x n_ctx x heads floats, 40 MiB at 512 x 1280 x 16): prompts
    // are decoded in ubatches of at most speech_ubatch rows, which a typical segment's prompt fits in
    // (a longer prompt is decoded in more passes over the weights)
    lparams.n_ubatch   = std::min({ lparams.n_ubatch, lparams.n_batch, (uint32_t) speech_ubatch });
    // a second context on the server's model: llama_init_from_model only reads the model
    talker = llama_init_from_model(const_cast<llama_model *>(mdl), lparams);
    if (!talker) {
        SPE_ERR("failed to create the talker context (%d slot(s) of %d cells)\n", n_slots, n_ctx);
        return false;
    }
    if (llama_n_ctx_seq(talker) != (uint32_t) n_ctx) {
        SPE_ERR("the talker context gives a slot %u cells, %d expected\n", llama_n_ctx_seq(talker), n_ctx);
        return false;
    }

    threads.init(talker, cparams);
    mtmd_context_params mparams = mtmd_context_params_default();
    mparams.use_gpu         = cparams.mmproj_use_gpu;
    mparams.device          = cparams.mmproj_device;
    mparams.print_timings   = false;
    mparams.n_threads       = cparams.cpuparams.n_threads;
    mparams.flash_attn_type = cparams.flash_attn_type;
    mparams.use_extra_bufts = !cparams.no_extra_bufts; // --no-repack: the talker's and the mmproj's weights alike
    // the codec decoder's graphs are built and its compute buffer sized here (mtmd warm-up), so the
    // first request does not pay for them; --no-warmup skips it
    mparams.warmup          = cparams.warmup;
    mparams.threadpool      = threads.get();
    mctx = mtmd_init_from_file(cparams.mmproj.path.c_str(), mdl, mparams);
    if (!mctx) {
        SPE_ERR("failed to load the mmproj %s\n", cparams.mmproj.path.c_str());
        return false;
    }
    if (mtmd_gen_audio_get_info(mctx).type == MTMD_GEN_AUDIO_TYPE_NONE) {
        SPE_WRN("%s does not generate audio: speech disabled\n", cparams.mmproj.path.c_str());
        return false;
    }

    // what the slots reserve besides the shared weights and mtmd context. The KV cache is n_slots equal
    // sequences; the compute buffer is one, shared: each slot's line shows its share of both (`q3build
    // bench --slots` reads these lines)
    size_t kv = 0, compute = 0;
    for (const auto & [buft, mb] : llama_get_memory_breakdown(talker)) {
        (void) buft;
        kv      += mb.context;
        compute += mb.compute;
    }
    SPE_INF("talker context of %u cells for %d slot(s) (a sequence of %u cells each, batched): KV cache %.2f MiB, "
            "compute buffer %.2f MiB\n", llama_n_ctx(talker), n_slots, llama_n_ctx_seq(talker), kv / 1048576.0,
            compute / 1048576.0);
    for (int i = 0; i < n_slots; i++) {
        SPE_INF("slot %d: talker context of %u cells: KV cache %.2f MiB, compute buffer %.2f MiB\n", i,
                llama_n_ctx_seq(talker), kv / 1048576.0 / n_slots, compute / 1048576.0 / n_slots);
    }
    return true;
}

bool speech_engine::init_slot(speech_slot & slot, int id) {
    slot.id   = id;
    slot.lctx = talker;
    slot.mctx = mctx;
    slot.gen  = std::make_unique<mtmd_helper::gen_audio>(slot.lctx, slot.mctx);
    return slot.gen->ctx != nullptr;
}

std::string speech_engine::describe() const {
    return "qwen3-tts " + type + (size.empty() ? "" : " " + size);
}

int32_t speech_engine::n_tokens(const std::string & text) const {
    const llama_vocab * vocab = llama_model_get_vocab(mdl);
    // a count query: a negative return is the number of tokens the text needs
    const int32_t n = llama_tokenize(vocab, text.c_str(), (int32_t) text.size(), nullptr, 0, false, false);
    return n < 0 ? -n : n;
}

int speech_engine::segment_frame_cap(size_t n_chars) const {
    if (cparams.tts_max_frames > 0) {
        return cparams.tts_max_frames;
    }
    // slow Chinese speech is ~4 characters/s (3 frames each); allow that plus 2 s of margin
    return (int) std::min<size_t>(4000, 25 + 4 * n_chars);
}

std::string speech_engine::resolve_language(const std::string & lang) const {
    static const std::map<std::string, std::string> iso = {
        {"zh", "chinese"}, {"en", "english"}, {"ja", "japanese"}, {"ko", "korean"}, {"de", "german"},
        {"fr", "french"},  {"ru", "russian"}, {"pt", "portuguese"}, {"es", "spanish"}, {"it", "italian"},
    };
    std::string name = lower(lang);
    if (name == "auto") {
        return name;
    }
    // "zh-CN", "en_US": the primary subtag decides
    const size_t cut = name.find_first_of("-_");
    if (cut != std::string::npos && iso.count(name.substr(0, cut))) {
        name = name.substr(0, cut);
    }
    auto it = iso.find(name);
    if (it != iso.end()) {
        name = it->second;
    }
    return std::find(langs.begin(), langs.end(), name) != langs.end() ? name : "";
}

// a cloned voice's name: letters, digits, '-', '_', '.', not starting with '.', so that it can
// never name anything outside the voices directory
bool speech_engine::is_clone_name(const std::string & name) const {
    if (name.empty() || name.size() > 64 || name[0] == '.') {
        return false;
    }
    return std::all_of(name.begin(), name.end(), [](unsigned char c) {
        return std::isalnum(c) || c == '-' || c == '_' || c == '.';
    });
}

// true when path is dir or below it (both resolved)
static bool is_inside(const fs::path & dir, const fs::path & path) {
    auto d = dir.begin();
    auto p = path.begin();
    for (; d != dir.end(); ++d, ++p) {
        if (p == path.end() || *d != *p) {
            return false;
        }
    }
    return true;
}

std::vector<speech_voice> speech_engine::voices() {
    std::vector<speech_voice> out;
    for (const auto & s : speakers) {
        out.push_back({s, "builtin", "", ""});
    }
    if (!cloning || voices_real.empty()) {
        return out;
    }
    std::error_code ec;
    std::vector<speech_voice> cloned;
    for (const auto & entry : fs::directory_iterator(voices_real, ec)) {
        const fs::path p = entry.path();
        if (lower(p.extension().string()) != ".wav") {
            continue;
        }
        const std::string name = p.stem().string();
        if (!is_clone_name(name) || std::find(speakers.begin(), speakers.end(), lower(name)) != speakers.end()) {
            continue; // built-in speakers keep their names
        }
        // a symlink may point anywhere: only what resolves inside the directory is a voice
        std::error_code ec2;
        const fs::path real = fs::canonical(p, ec2);
        if (ec2 || !is_inside(voices_real, real)) {
            continue;
        }
        const auto status = fs::status(real, ec2);
        if (ec2 || !fs::is_regular_file(status)) {
            continue;
        }
        const int64_t size  = (int64_t) fs::file_size(real, ec2);
        const int64_t mtime = (int64_t) fs::last_write_time(real, ec2).time_since_epoch().count();
        if (ec2) {
            continue;
        }
        speech_voice v{name, "cloned", real.string(), check_voice_file(real.string(), size, mtime)};
        if (v.reason.empty()) {
            read_transcript(v, real.string());
        }
        cloned.push_back(v);
    }
    if (ec) {
        SPE_WRN("cannot read the voices directory %s: %s\n", voices_real.c_str(), ec.message().c_str());
    }
    std::sort(cloned.begin(), cloned.end(), [](const speech_voice & a, const speech_voice & b) { return a.id < b.id; });
    out.insert(out.end(), cloned.begin(), cloned.end());
    return out;
}

// reads a recording that was resolved inside the voices directory: never through a symlink (the
// resolved path has none unless one was swapped in since), never a FIFO or device, at most
// voice_max_bytes
bool speech_engine::read_voice_file(const std::string & path, std::string & bytes, std::string & err) const {
    std::error_code ec;
    const fs::path real = fs::canonical(path, ec);
    if (ec || voices_real.empty() || !is_inside(voices_real, real)) {
        err = "it is not inside the voices directory";
        return false;
    }
#ifndef _WIN32
    const int fd = open(real.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
        err = "it cannot be opened";
        return false;
    }
    struct stat st {};
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        err = "it is not a regular file";
        return false;
    }
    if ((size_t) st.st_size > voice_max_bytes) {
        close(fd);
        err = "it is larger than " + std::to_string(voice_max_bytes >> 20) + " MiB";
        return false;
    }
    bytes.resize((size_t) st.st_size);
    size_t got = 0;
    while (got < bytes.size()) {
        const ssize_t n = read(fd, &bytes[got], bytes.size() - got);
        if (n <= 0) {
            break;
        }
        got += (size_t) n;
    }
    close(fd);
    bytes.resize(got);
#else
    std::ifstream f(real, std::ios::binary);
    if (!f || fs::file_size(real, ec) > voice_max_bytes) {
        err = "it cannot be opened or is larger than " + std::to_string(voice_max_bytes >> 20) + " MiB";
        return false;
    }
    bytes.assign(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
#endif
    return true;
}

// <name>.txt beside <name>.wav: its transcript, which makes the voice cloned in context. Confined
// to the voices directory like the recording; not UTF-8 or too long makes the voice unusable, an
// empty (or whitespace-only) transcript leaves it an x-vector voice, said in v.note
void speech_engine::read_transcript(speech_voice & v, const std::string & wav_path) {
    (void) wav_path;
    v.mode = "xvector";
    const fs::path path = fs::path(voices_real) / (v.id + ".txt");
    std::error_code ec;
    if (!fs::exists(fs::symlink_status(path, ec)) || ec) {
        return;
    }
    if (!icl_capable) {
        v.note = "the model has no speech encoder (convert it again): cloned from the speaker embedding (x-vector)";
        return;
    }
    std::string bytes, err;
    const std::string name = v.id + ".txt";
    if (!read_voice_file(path.string(), bytes, err)) {
        v.reason = "its transcript " + name + ": " + err;
        return;
    }
    if (bytes.size() > 8 * max_transcript_chars) {
        v.reason = "its transcript " + name + " is longer than " + std::to_string(max_transcript_chars) + " characters";
        return;
    }
    if (bytes.size() >= 3 && bytes.compare(0, 3, "\xEF\xBB\xBF") == 0) {
        bytes.erase(0, 3); // a byte order mark is not text
    }
    if (!speech_audio::utf8_valid(bytes)) {
        v.reason = "its transcript " + name + " is not valid UTF-8";
        return;
    }
    const size_t b = bytes.find_first_not_of(" \t\r\n\v\f");
    const size_t e = bytes.find_last_not_of(" \t\r\n\v\f");
    const std::string text = b == std::string::npos ? "" : bytes.substr(b, e - b + 1);
    const size_t n_chars = speech_audio::utf8_length(text);
    if (n_chars > max_transcript_chars) {
        v.reason = "its transcript " + name + " is " + std::to_string(n_chars) + " characters long, at most " +
                   std::to_string(max_transcript_chars);
        return;
    }
    if (speech_audio::strip_invisible(text).find_first_not_of(" \t\r\n\v\f") == std::string::npos) {
        v.note = "its transcript " + name + " is empty: cloned from the speaker embedding (x-vector)";
        return;
    }
    v.mode       = "icl";
    v.transcript = text;
}

std::string speech_engine::check_voice_file(const std::string & path, int64_t size, int64_t mtime) {
    {
        std::lock_guard<std::mutex> lock(check_mtx);
        auto it = check_cache.find(path);
        if (it != check_cache.end() && it->second.size == size && it->second.mtime == mtime) {
            return it->second.reason;
        }
    }
    std::string bytes, reason;
    speech_audio::wav_info info;
    if (read_voice_file(path, bytes, reason)) {
        reason = speech_audio::check_reference_wav(bytes, limits, info);
    }
    std::lock_guard<std::mutex> lock(check_mtx);
    check_cache[path] = {size, mtime, reason};
    return reason;
}

std::string speech_engine::default_voice() const {
    if (!cparams.tts_speaker.empty()) {
        return cparams.tts_speaker;
    }
    return type == "custom_voice" && !speakers.empty() ? speakers[0] : "";
}

bool speech_engine::find_voice(const std::string & id, speech_voice & out) {
    const std::string key = lower(id);
    for (const auto & s : speakers) {
        if (s == key) {
            out = {s, "builtin", "", ""};
            return true;
        }
    }
    if (!is_clone_name(id)) {
        return false;
    }
    for (const auto & v : voices()) {
        if (v.type == "cloned" && v.id == id) {
            out = v;
            return true;
        }
    }
    return false;
}

bool speech_engine::alias_of(const std::string & name, std::string & voice) const {
    const auto it = alias_map.find(lower(name));
    if (it == alias_map.end()) {
        return false;
    }
    voice = it->second;
    return true;
}

speech_engine::occupancy_info speech_engine::occupancy() {
    std::lock_guard<std::mutex> lock(mtx);
    occupancy_info o;
    o.slots   = (int) slots.size();
    o.busy    = (int) (slots.size() - free_slots.size());
    o.waiting = n_waiting;
    return o;
}

std::vector<speech_engine::slot_state> speech_engine::slot_states() {
    std::lock_guard<std::mutex> lock(mtx);
    std::vector<slot_state> out;
    for (const auto & sl : slots) {
        slot_state st;
        st.id         = sl->id;
        st.busy       = std::find(free_slots.begin(), free_slots.end(), sl.get()) == free_slots.end();
        st.n_frames   = sl->n_frames.load();
        st.t_start_us = sl->t_start_us.load();
        st.n_requests = sl->n_requests.load();
        out.push_back(st);
    }
    return out;
}

std::unique_ptr<speech_slot_lease> speech_engine::acquire(const std::function<bool()> & should_stop, bool & busy) {
    busy = false;
    std::unique_lock<std::mutex> lock(mtx);
    if (free_slots.empty() && n_waiting >= cparams.tts_queue) {
        busy = true;
        return nullptr;
    }
    n_waiting++;
    while (free_slots.empty()) {
        // wake up now and then to notice a client that went away while queued
        cv.wait_for(lock, std::chrono::milliseconds(200));
        if (free_slots.empty() && should_stop && should_stop()) {
            n_waiting--;
            return nullptr;
        }
    }
    n_waiting--;
    speech_slot * slot = free_slots.back();
    free_slots.pop_back();
    slot->n_frames   = 0;
    slot->t_start_us = ggml_time_us();
    slot->n_requests++;
    return std::make_unique<speech_slot_lease>(*this, slot);
}

void speech_engine::release(speech_slot * slot) {
    {
        std::lock_guard<std::mutex> lock(mtx);
        free_slots.push_back(slot);
    }
    cv.notify_one();
}

// FNV-1a: tells one recording's content from another's, not a defence against a chosen collision
// (whoever can write to the voices directory picks the voices anyway)
static uint64_t content_digest(const std::string & bytes) {
    uint64_t h = 1469598103934665603ull;
    for (unsigned char c : bytes) {
        h = (h ^ c) * 1099511628211ull;
    }
    return h;
}

bool speech_engine::speaker_embd(speech_slot & slot, const speech_voice & voice, std::vector<float> & out,
                                 std::string & err, bool & bad_input, std::vector<int32_t> * codes) {
    bad_input = true;
    std::string bytes, why;
    speech_audio::wav_info info;
    if (read_voice_file(voice.path, bytes, why)) {
        why = speech_audio::check_reference_wav(bytes, limits, info);
    }
    if (!why.empty()) {
        err = "voice '" + voice.id + "' cannot be used: its recording " + voice.id + ".wav: " + why;
        return false;
    }
    const uint64_t digest = content_digest(bytes);
    {
        std::lock_guard<std::mutex> lock(embd_mtx);
        auto it = embd_cache.find(voice.id);
        if (it != embd_cache.end() && it->second.digest == digest && it->second.bytes == bytes.size() &&
                (!codes || !it->second.codes.empty())) {
            out = it->second.embd;
            if (codes) {
                *codes = it->second.codes;
            }
            return true;
        }
    }
    bad_input = false;
    auto compute = compute_lock(); // the slots share one mtmd context
    auto wrapper = mtmd_helper_bitmap_init_from_buf(slot.mctx, (const unsigned char *) bytes.data(), bytes.size(),
                                                    false, mtmd_helper_init_opt_default());
    if (!wrapper.bitmap) {
        err = "the recording of voice '" + voice.id + "' could not be decoded";
        return false;
    }
    mtmd::bitmap_ptr bitmap(wrapper.bitmap);
    const int64_t t_start_us = ggml_time_us();
    out.assign((size_t) llama_model_n_embd(mdl), 0.0f);
    const int32_t n = mtmd_helper_gen_audio_encode_speaker(slot.gen->ctx.get(), bitmap.get(), out.data(), out.size());
    if (n != (int32_t) out.size()) {
        err = "encoding the recording of voice '" + voice.id + "' failed";
        return false;
    }
    const int64_t t_spk_us = ggml_time_us();
    std::vector<int32_t> ref_codes;
    if (codes) {
        // at most 16 codes per 1920 samples (12.5 Hz at 24 kHz), one frame more for the rest
        ref_codes.resize((mtmd_bitmap_get_n_bytes(bitmap.get()) / sizeof(float) / 1920 + 1) * 16);
        const int32_t nc = mtmd_helper_gen_audio_encode_codes(slot.gen->ctx.get(), bitmap.get(), ref_codes.data(),
                                                              ref_codes.size());
        if (nc <= 0 || (size_t) nc > ref_codes.size()) {
            err = "encoding the recording of voice '" + voice.id + "' into codes failed";
            return false;
        }
        ref_codes.resize((size_t) nc);
        *codes = ref_codes;
    }
    SPE_INF("encoded voice '%s' (%s, %d Hz, %d channel(s), %zu samples): x-vector %.1f ms%s\n", voice.id.c_str(),
            voice.path.c_str(), info.sample_rate, info.channels, info.n_frames, (t_spk_us - t_start_us) / 1e3,
            codes ? (", " + std::to_string(ref_codes.size() / 16) + " frames of codes " +
                     std::to_string((ggml_time_us() - t_spk_us) / 1000) + " ms").c_str() : "");
    std::lock_guard<std::mutex> lock(embd_mtx);
    embd_cache[voice.id] = {digest, bytes.size(), out, ref_codes};
    return true;
}

//
// speech_segment
//

speech_segment::~speech_segment() {
    if (smpl) {
        common_sampler_free(smpl);
    }
}

bool speech_segment::start(const std::string & text, const speech_gen_params & p,
                           const std::vector<float> & embd, std::string & err) {
    const common_params & cp = engine.params();
    auto lock = engine.compute_lock();
    // the slot's own sequence only: the other slots' sequences are generating
    llama_memory_seq_rm(llama_get_memory(slot.lctx), slot.id, -1, -1);
    slot.gen->reset();

    mtmd_helper_gen_audio_inp inp{};
    inp.seq_id         = slot.id;
    inp.prompt         = text.c_str();
    inp.prompt_len     = text.size();
    inp.lang           = p.language.c_str();
    inp.top_k          = p.top_k;
    inp.top_p          = p.top_p;
    inp.seed           = p.seed;
    inp.out_type       = MTMD_HELPER_GEN_AUDIO_OUTTYPE_PCM;
    inp.text_layout    = p.streaming_text ? MTMD_HELPER_GEN_AUDIO_TEXT_STREAMING : MTMD_HELPER_GEN_AUDIO_TEXT_FULL;
    inp.speaker        = p.voice.type == "builtin" ? p.voice.id.c_str() : nullptr;
    inp.instruct       = p.instructions.empty() ? nullptr : p.instructions.c_str();
    inp.speaker_embd   = embd.empty() ? nullptr : embd.data();
    inp.n_speaker_embd = embd.size();
    if (p.icl) {
        inp.ref_codes   = p.ref_codes.data();
        inp.n_ref_codes = p.ref_codes.size();
        inp.ref_text    = p.voice.transcript.c_str();
    }
    if (slot.gen->set_input(&inp) != 0) {
        err = "the speech prompt could not be built (see the server log)";
        return false;
    }
    for (;;) {
        const int32_t ret = slot.gen->step_prompt(cp.n_batch);
        if (ret < 0) {
            err = "the speech prompt could not be decoded";
            return false;
        }
        if (ret == 0) {
            break;
        }
    }

    common_params_sampling sp = cp.sampling;
    sp.seed          = p.seed;
    sp.temp          = p.temperature;
    sp.top_k         = p.top_k;
    sp.top_p         = p.top_p;
    sp.penalty_repeat = p.repetition_penalty;
    // over every first-codebook code generated so far, as the Qwen3-TTS reference applies it (the
    // server's default window is the last 64 tokens)
    sp.penalty_last_n = engine.slot_cells();
    if (p.ignore_eos) {
        // as llama-server's ignore_eos: the segment runs to its frame cap (fixed-length benchmarks)
        for (llama_token t : engine.segment_end_tokens()) {
            sp.logit_bias.push_back({t, -INFINITY});
        }
    }
    smpl = common_sampler_init(engine.model(), sp);
    if (!smpl) {
        err = "the sampler could not be created";
        return false;
    }

    const int room = engine.slot_cells() - slot.gen->timings().n_prompt_tokens - 1;
    // a request may ask for fewer frames than the server allows (--tts-max-frames, else derived
    // from the text length), never more
    const int cap = engine.segment_frame_cap(speech_audio::utf8_length(text));
    max_frames = p.max_frames > 0 ? std::min(p.max_frames, cap) : cap;
    max_frames = std::max(1, std::min(max_frames, room));

    sampled = common_sampler_sample(smpl, slot.lctx, -1);
    common_sampler_accept(smpl, sampled, true);
    // the talker context's outputs are overwritten by the next decode of any slot: the prompt's hidden
    // state is kept here until the first frame (later ones are the generator's own copy)
    const float * h = llama_get_embeddings_ith(slot.lctx, -1);
    h_prompt.assign(h, h + llama_model_n_embd(engine.model()));
    h_state = h_prompt.data();
    return true;
}

bool speech_segment::step(int n, std::string & err) {
    for (int i = 0; i < n && !finished; i++) {
        if (n_frames >= max_frames) {
            capped   = true;
            finished = true;
            break;
        }
        if (!engine.frame(*this, err)) {
            return false;
        }
    }
    return true;
}

void speech_segment::after_frame(const float * h_next, bool stop, int32_t out_idx) {
    if (stop || !h_next) {
        finished = true;
        return;
    }
    n_frames++;
    slot.n_frames++;
    engine.metrics.frames(1);
    h_state = h_next;
    // this request's sampler on its own row: its draws do not depend on the other rows of the batch
    sampled = common_sampler_sample(smpl, slot.lctx, out_idx);
    common_sampler_accept(smpl, sampled, true);
}

//
// batched frames
//

speech_engine::generating::generating(speech_engine & e, const speech_slot & slot) : e(e), slot_id(slot.id) {
    std::lock_guard<std::mutex> lock(e.batch_mtx);
    e.n_generating++;
    e.return_by_us[(size_t) slot_id] = 0;
}

speech_engine::generating::~generating() {
    std::lock_guard<std::mutex> lock(e.batch_mtx);
    e.n_generating--;
    if (returning) {
        e.return_by_us[(size_t) slot_id] = ggml_time_us() + return_wait_us;
    }
    if (e.can_lead()) {
        e.batch_cv.notify_all(); // the others were waiting for this thread
    }
}

int64_t speech_engine::awaited_until(int64_t now_us) const {
    int64_t until = 0;
    for (int64_t t : return_by_us) {
        if (t > now_us) {
            until = std::max(until, t);
        }
    }
    return until;
}

bool speech_engine::frame(speech_segment & seg, std::string & err) {
    frame_req req;
    req.seg = &seg;
    std::unique_lock<std::mutex> lock(batch_mtx);
    pending.push_back(&req);
    while (!req.done) {
        if (!can_lead()) {
            batch_cv.wait(lock);
            continue;
        }
        const int64_t now_us = ggml_time_us();
        const int64_t until  = awaited_until(now_us);
        if (until > 0) {
            // a thread that is handing a chunk to its client rejoins (or its moment passes)
            batch_cv.wait_for(lock, std::chrono::microseconds(until - now_us));
            continue;
        }
        // every generating thread is waiting for a frame and no batch is computing: this thread
        // computes the batch for all of them (its own frame among them)
        std::vector<frame_req *> batch;
        batch.swap(pending);
        computing = true;
        lock.unlock();
        compute_frames(batch);
        lock.lock();
        for (frame_req * r : batch) {
            r->done = true;
        }
        computing = false;
        batch_cv.notify_all();
    }
    if (!req.ok) {
        err = "audio generation failed at frame " + std::to_string(seg.frames());
        return false;
    }
    return true;
}

void speech_engine::compute_frames(const std::vector<frame_req *> & batch) {
    const int n = (int) batch.size();
    auto compute = compute_lock();
    if (n == 1 || !batching) {
        // alone (or a pipeline that does not batch): one frame at a time, as step_gen() makes it
        for (frame_req * r : batch) {
            speech_segment & seg = *r->seg;
            const float * h_next = nullptr;
            bool stop = false;
            if (seg.slot.gen->step_gen(seg.sampled, seg.h_state, &h_next, &stop) != 0) {
                r->ok = false;
                continue;
            }
            seg.after_frame(h_next, stop, -1);
            if (h_next && !stop) {
                metrics.batch(1);
            }
        }
        return;
    }
    std::vector<mtmd_helper_gen_audio *> gens((size_t) n);
    std::vector<llama_token>   sampled((size_t) n);
    std::vector<const float *> h_in((size_t) n), h_out((size_t) n);
    std::vector<int32_t>       out_idx((size_t) n);
    std::unique_ptr<bool[]>    stop(new bool[(size_t) n]);
    for (int i = 0; i < n; i++) {
        speech_segment & seg = *batch[(size_t) i]->seg;
        gens[(size_t) i]    = seg.slot.gen->ctx.get();
        sampled[(size_t) i] = seg.sampled;
        h_in[(size_t) i]    = seg.h_state;
    }
    if (mtmd_helper_gen_audio_step_gen_batch(gens.data(), n, sampled.data(), h_in.data(), h_out.data(), out_idx.data(),
                                             stop.get()) != 0) {
        for (frame_req * r : batch) {
            r->ok = false;
        }
        return;
    }
    int n_rows = 0;
    for (int i = 0; i < n; i++) {
        batch[(size_t) i]->seg->after_frame(h_out[(size_t) i], stop[(size_t) i], out_idx[(size_t) i]);
        n_rows += out_idx[(size_t) i] >= 0 ? 1 : 0;
    }
    metrics.batch(n_rows);
}

int speech_segment::frames_to_next_decode() const {
    return std::max(1, (int) slot.gen->frames_to_next_decode());
}

bool speech_segment::take_audio(std::vector<float> & out, std::string & err) {
    int32_t      rate = 0;
    const char * data = nullptr;
    size_t       len  = 0;
    auto lock = engine.compute_lock();
    if (slot.gen->get_output(&rate, &data, &len, nullptr) != 0) {
        err = "audio decoding failed";
        return false;
    }
    const float * pcm = (const float *) data;
    const size_t  n   = len / sizeof(float);
    if (n > n_taken) {
        out.insert(out.end(), pcm + n_taken, pcm + n);
        n_taken = n;
    }
    return true;
}
