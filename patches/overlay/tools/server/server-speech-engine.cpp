#include "server-speech-engine.h"

#include "log.h"
#include "sampling.h"
#include "server-speech-audio.h"

#include <algorithm>
#include <cctype>
#include <chrono>
#include <filesystem>
#include <system_error>

namespace fs = std::filesystem;

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
}

speech_slot::~speech_slot() {
    gen.reset();
    if (mctx) {
        mtmd_free(mctx);
    }
    if (lctx) {
        llama_free(lctx);
    }
}

speech_slot_lease::~speech_slot_lease() {
    engine.release(slot);
}

//
// speech_engine
//

speech_engine::~speech_engine() {
    slots.clear();
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

    // worst case per slot: the longest segment's prompt (text, instructions, codec prefix) plus its frames
    const int seg_chars = std::max(16, params.tts_segment_chars);
    n_ctx = segment_frame_cap((size_t) seg_chars) + 4 * seg_chars + 1024;
    n_ctx = (n_ctx + 255) / 256 * 256;

    const int n_slots = std::max(1, params.tts_slots);
    for (int i = 0; i < n_slots; i++) {
        auto slot = std::make_unique<speech_slot>();
        if (!init_slot(*slot, i)) {
            slots.clear();
            return false;
        }
        free_slots.push_back(slot.get());
        slots.push_back(std::move(slot));
    }
    rate    = mtmd_gen_audio_get_info(slots[0]->mctx).sample_rate;
    cloning = mtmd_support_audio(slots[0]->mctx);
    ready   = true;
    speech_voice v;
    if (!cparams.tts_speaker.empty() && !find_voice(cparams.tts_speaker, v)) {
        SPE_WRN("the default voice '%s' (--tts-speaker) is not a voice of this server\n", cparams.tts_speaker.c_str());
    }
    SPE_INF("enabled: %s, %d slot(s) of %d tokens, %zu built-in speaker(s), %s, %zu language(s)\n",
            describe().c_str(), n_slots, n_ctx, speakers.size(), cloning ? "voice cloning" : "no voice cloning",
            langs.size());
    return true;
}

bool speech_engine::init_slot(speech_slot & slot, int id) {
    slot.id = id;
    llama_context_params lparams = common_context_params_to_llama(cparams);
    lparams.n_ctx      = (uint32_t) n_ctx;
    lparams.n_seq_max  = 1;
    lparams.embeddings = true; // the helper feeds the talker's hidden state to the code predictor
    // the server limits outputs for its own batches; the helper reads the embedding of every prompt row
    lparams.n_outputs_max         = 0;
    lparams.n_outputs_max_per_seq = 0;
    lparams.n_batch    = std::min<uint32_t>(lparams.n_batch, (uint32_t) n_ctx);
    lparams.n_ubatch   = std::min(lparams.n_ubatch, lparams.n_batch);
    // a second context on the server's model: llama_init_from_model only reads the model
    slot.lctx = llama_init_from_model(const_cast<llama_model *>(mdl), lparams);
    if (!slot.lctx) {
        SPE_ERR("slot %d: failed to create the talker context\n", id);
        return false;
    }

    mtmd_context_params mparams = mtmd_context_params_default();
    mparams.use_gpu         = cparams.mmproj_use_gpu;
    mparams.device          = cparams.mmproj_device;
    mparams.print_timings   = false;
    mparams.n_threads       = cparams.cpuparams.n_threads;
    mparams.flash_attn_type = cparams.flash_attn_type;
    mparams.warmup          = false;
    slot.mctx = mtmd_init_from_file(cparams.mmproj.path.c_str(), mdl, mparams);
    if (!slot.mctx) {
        SPE_ERR("slot %d: failed to load the mmproj %s\n", id, cparams.mmproj.path.c_str());
        return false;
    }
    if (mtmd_gen_audio_get_info(slot.mctx).type == MTMD_GEN_AUDIO_TYPE_NONE) {
        SPE_WRN("%s does not generate audio: speech disabled\n", cparams.mmproj.path.c_str());
        return false;
    }
    slot.gen = std::make_unique<mtmd_helper::gen_audio>(slot.lctx, slot.mctx);
    return true;
}

std::string speech_engine::describe() const {
    return "qwen3-tts " + type + (size.empty() ? "" : " " + size);
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

std::vector<speech_voice> speech_engine::voices() {
    std::vector<speech_voice> out;
    for (const auto & s : speakers) {
        out.push_back({s, "builtin", ""});
    }
    if (!cloning || cparams.tts_voices_dir.empty()) {
        return out;
    }
    std::error_code ec;
    std::vector<speech_voice> cloned;
    for (const auto & entry : fs::directory_iterator(cparams.tts_voices_dir, ec)) {
        const fs::path p = entry.path();
        if (!entry.is_regular_file(ec) || lower(p.extension().string()) != ".wav") {
            continue;
        }
        const std::string name = p.stem().string();
        if (!is_clone_name(name) || std::find(speakers.begin(), speakers.end(), lower(name)) != speakers.end()) {
            continue; // built-in speakers keep their names
        }
        cloned.push_back({name, "cloned", p.string()});
    }
    if (ec) {
        SPE_WRN("cannot read the voices directory %s: %s\n", cparams.tts_voices_dir.c_str(), ec.message().c_str());
    }
    std::sort(cloned.begin(), cloned.end(), [](const speech_voice & a, const speech_voice & b) { return a.id < b.id; });
    out.insert(out.end(), cloned.begin(), cloned.end());
    return out;
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
            out = {s, "builtin", ""};
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
    return std::make_unique<speech_slot_lease>(*this, slot);
}

void speech_engine::release(speech_slot * slot) {
    {
        std::lock_guard<std::mutex> lock(mtx);
        free_slots.push_back(slot);
    }
    cv.notify_one();
}

bool speech_engine::speaker_embd(speech_slot & slot, const speech_voice & voice, std::vector<float> & out, std::string & err) {
    std::error_code ec;
    const int64_t mtime = (int64_t) fs::last_write_time(voice.path, ec).time_since_epoch().count();
    const int64_t bytes = ec ? -1 : (int64_t) fs::file_size(voice.path, ec);
    if (ec) {
        err = "cannot read the recording of voice '" + voice.id + "'";
        return false;
    }
    {
        std::lock_guard<std::mutex> lock(embd_mtx);
        auto it = embd_cache.find(voice.id);
        if (it != embd_cache.end() && it->second.mtime == mtime && it->second.bytes == bytes) {
            out = it->second.embd;
            return true;
        }
    }
    auto wrapper = mtmd_helper_bitmap_init_from_file(slot.mctx, voice.path.c_str(), false, mtmd_helper_init_opt_default());
    if (!wrapper.bitmap) {
        err = "the recording of voice '" + voice.id + "' is not a readable audio file";
        return false;
    }
    mtmd::bitmap_ptr bitmap(wrapper.bitmap);
    out.assign((size_t) llama_model_n_embd(mdl), 0.0f);
    const int32_t n = mtmd_helper_gen_audio_encode_speaker(slot.gen->ctx.get(), bitmap.get(), out.data(), out.size());
    if (n != (int32_t) out.size()) {
        err = "encoding the recording of voice '" + voice.id + "' failed";
        return false;
    }
    SPE_INF("encoded voice '%s' (%s)\n", voice.id.c_str(), voice.path.c_str());
    std::lock_guard<std::mutex> lock(embd_mtx);
    embd_cache[voice.id] = {mtime, bytes, out};
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
    llama_memory_clear(llama_get_memory(slot.lctx), true);
    slot.gen->reset();

    mtmd_helper_gen_audio_inp inp{};
    inp.seq_id         = 0;
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
    smpl = common_sampler_init(engine.model(), sp);
    if (!smpl) {
        err = "the sampler could not be created";
        return false;
    }

    const int room = (int) llama_n_ctx(slot.lctx) - slot.gen->timings().n_prompt_tokens - 1;
    // a request may ask for fewer frames than the server allows, never more
    const int cap = engine.segment_frame_cap(speech_audio::utf8_length(text));
    max_frames = p.max_frames > 0 && (cp.tts_max_frames == 0 || p.max_frames < cap) ? p.max_frames : cap;
    max_frames = std::max(1, std::min(max_frames, room));

    sampled = common_sampler_sample(smpl, slot.lctx, -1);
    common_sampler_accept(smpl, sampled, true);
    h_state = llama_get_embeddings_ith(slot.lctx, -1);
    return true;
}

bool speech_segment::step(int n, std::string & err) {
    for (int i = 0; i < n && !finished; i++) {
        if (n_frames >= max_frames) {
            capped   = true;
            finished = true;
            break;
        }
        const float * h_next = nullptr;
        bool stop = false;
        if (slot.gen->step_gen(sampled, h_state, &h_next, &stop) != 0) {
            err = "audio generation failed at frame " + std::to_string(n_frames);
            return false;
        }
        if (stop || !h_next) {
            finished = true;
            break;
        }
        n_frames++;
        h_state = h_next;
        sampled = common_sampler_sample(smpl, slot.lctx, -1);
        common_sampler_accept(smpl, sampled, true);
    }
    return true;
}

int speech_segment::frames_to_next_decode() const {
    return std::max(1, (int) slot.gen->frames_to_next_decode());
}

bool speech_segment::take_audio(std::vector<float> & out, std::string & err) {
    int32_t      rate = 0;
    const char * data = nullptr;
    size_t       len  = 0;
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
