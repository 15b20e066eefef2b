#pragma once

// Speech synthesis for llama-server on libmtmd's audio generation helper (mtmd_helper_gen_audio).
// The talker weights are the server's own model; one llama_context on them holds every slot as a
// sequence of its own (seq_id = slot id, KV cache not unified: each slot has the same room as alone),
// and each slot has a generator. The mtmd context (code predictor, codec decoder, speaker encoder) is
// loaded once and shared: computes take turns (compute_lock) on one set of CPU threads. The requests
// that want a frame at the same moment get it from one batched step (speech_engine::frame: one
// talker decode with a row per request, so the talker's weights are read once for all of them);
// prompts, codec decodes and speaker encodes run alone. On a small board parallel computes only fight
// over the same cores and memory bandwidth.

#include "common.h"
#include "llama.h"
#include "mtmd.h"
#include "mtmd-helper.h"
#include "server-speech-metrics.h"
#include "server-speech-audio.h"

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

struct common_sampler;

struct speech_voice {
    std::string id;
    std::string type;  // "builtin" (a speaker of the model) or "cloned" (a recording in the voices dir)
    std::string path;  // cloned: the reference recording, resolved inside the voices directory
    std::string reason; // cloned: why the recording cannot be used (empty: usable)
    std::string mode;       // cloned: "icl" (a transcript <name>.txt beside the recording) or "xvector"
    std::string transcript; // cloned, icl: the transcript, trimmed
    std::string note;       // cloned: why a voice with a transcript file is cloned from its x-vector
};

// one request's generation settings, already validated by the HTTP layer
struct speech_gen_params {
    speech_voice voice;        // resolved once per request; empty id: no speaker (Base, VoiceDesign)
    std::string instructions;  // how to speak (VoiceDesign, 1.7B CustomVoice)
    std::string language;      // a name of speech_engine::languages() or "auto"
    uint32_t    seed               = LLAMA_DEFAULT_SEED;
    float       temperature        = 0.9f;
    int32_t     top_k              = 50;
    float       top_p              = 1.0f;
    float       repetition_penalty = 1.05f;
    int32_t     max_frames         = 0;     // per segment; 0: derived from the segment length
    bool        streaming_text     = false; // text fed one token per frame (shorter prompt)
    bool        icl                = false; // a cloned voice in context: its codes and transcript
    bool        ignore_eos         = false; // no end of speech: every segment runs to its frame cap
    std::vector<int32_t> ref_codes;         // icl: the recording's codes (voice.transcript is its text)
};

struct speech_stage_timings {
    double prompt_ms = 0, talker_ms = 0, code_ms = 0, decode_ms = 0;
    int    prompt_tokens = 0, frames = 0;
    int    decoded_frames = 0; // frames through the codec decoder, a cloned voice's reference included

    void add(const mtmd_helper_gen_audio_timings & t);
};

struct speech_slot {
    int id = 0;                     // its sequence in the talker context
    llama_context * lctx = nullptr; // the engine's talker context, shared
    mtmd_context  * mctx = nullptr; // the engine's, shared
    std::unique_ptr<mtmd_helper::gen_audio> gen;

    // what /slots shows: the request on the slot (frames so far, when it started) and how many it served
    std::atomic<int>     n_frames{0};
    std::atomic<int64_t> t_start_us{0};
    std::atomic<int64_t> n_requests{0};

};

class speech_engine;

// a slot held for one request; returned to the engine when destroyed
class speech_slot_lease {
public:
    speech_slot_lease(speech_engine & engine, speech_slot * slot) : engine(engine), slot(slot) {}
    ~speech_slot_lease();
    speech_slot_lease(const speech_slot_lease &) = delete;
    speech_slot_lease & operator=(const speech_slot_lease &) = delete;

    speech_slot & get() const { return *slot; }

private:
    speech_engine & engine;
    speech_slot   * slot;
};

// generates one text segment on a slot, a few frames at a time
class speech_segment {
public:
    speech_segment(speech_engine & engine, speech_slot & slot) : engine(engine), slot(slot) {}
    ~speech_segment();

    // builds and decodes the prompt; speaker_embd is the cloned voice's embedding (empty otherwise);
    // false with err set on failure
    bool start(const std::string & text, const speech_gen_params & params, const std::vector<float> & speaker_embd,
               std::string & err);

    // generates up to n_frames more frames; done() becomes true at end of speech or the frame cap.
    // The caller holds a speech_engine::generating (the frames are batched with the other requests')
    bool step(int n_frames, std::string & err);

    // appends the audio decoded since the last call (flushes the codec decoder)
    bool take_audio(std::vector<float> & out, std::string & err);

    bool done() const { return finished; }
    int  frames() const { return n_frames; }
    // frames until the codec decoder's next call completes (a stream chunk that ends there gets
    // audio that is decoded once)
    int  frames_to_next_decode() const;
    bool hit_frame_cap() const { return capped; }
    mtmd_helper_gen_audio_timings timings() const { return slot.gen->timings(); }

private:
    friend class speech_engine;
    // after the frame's talker decode: its hidden state (null, or stop: end of speech) and the output
    // row of the decode that holds its logits, which this segment's own sampler reads
    void after_frame(const float * h_next, bool stop, int32_t out_idx);

    speech_engine & engine;
    speech_slot   & slot;
    common_sampler * smpl = nullptr;
    const float * h_state = nullptr;
    std::vector<float> h_prompt; // the prompt's hidden state (the first frame's input)
    llama_token sampled = LLAMA_TOKEN_NULL;
    int  n_frames   = 0;
    int  max_frames = 0;
    bool finished   = false;
    bool capped     = false;
    size_t n_taken  = 0;  // samples of the helper's output already handed out
};

class speech_engine {
public:
    ~speech_engine();

    // enables speech when model is a talker and params.mmproj generates audio; false (with the
    // reason logged) otherwise, and the server keeps serving without speech
    bool load(const common_params & params, const llama_model * model);
    bool loaded() const { return ready; }
    // why the server must not start (an alias to an unknown voice); empty when fine
    const std::string & startup_error() const { return fatal; }

    // built-in speakers of the model, then the recordings in the voices directory (if it can clone),
    // usable ones and those with a reason; files whose real path leaves the directory are skipped
    std::vector<speech_voice> voices();
    bool find_voice(const std::string & id, speech_voice & out);
    // --tts-voice-alias: the voice a client's name stands for (names compare case-insensitively)
    bool alias_of(const std::string & name, std::string & voice) const;
    const std::map<std::string, std::string> & aliases() const { return alias_map; }
    // --tts-speaker, else the first built-in speaker (CustomVoice needs one), else none
    std::string default_voice() const;

    // the model's language names; resolve_language() maps ISO codes and names to one of them
    // (or "auto"), empty when unsupported
    const std::vector<std::string> & languages() const { return langs; }
    std::string resolve_language(const std::string & lang) const;

    // waits for a free slot; nullptr when cancelled (should_stop) or the queue is full (busy = true)
    std::unique_ptr<speech_slot_lease> acquire(const std::function<bool()> & should_stop, bool & busy);

    // the speaker embedding of a cloned voice, cached by the recording's content and encoded on first
    // use; the recording is read (confined to the voices directory) and checked before the encoder
    // sees it. On failure err is set and bad_input tells a bad recording (client's choice) from a
    // server fault.
    // With codes, the recording's codec codes too (in-context cloning), cached with the embedding:
    // both come from the same bytes, so a rewritten recording never mixes with the old one's.
    bool speaker_embd(speech_slot & slot, const speech_voice & voice, std::vector<float> & out, std::string & err,
                      bool & bad_input, std::vector<int32_t> * codes = nullptr);

    // longest transcript of a cloned voice, in characters; the slots reserve room for it (one token
    // per character) and for the codes of the longest recording
    static constexpr size_t max_transcript_chars = 600;
    // prompt rows besides the text (mtmd-helper-gen's Qwen3-TTS prompt: 3 of the assistant turn, up to 4
    // of the codec prefix (think, think_bos, language, think_eos), the speaker, tts_bos, tts_eos, the first
    // codec row: 11) with a margin for tokens that merge differently inside the turn than alone; an
    // instruction's user turn adds 5
    static constexpr int prompt_fixed_rows     = 16;
    static constexpr int instruction_turn_rows = 8;
    // most prompt rows a slot decodes in one pass (its compute buffer is sized for this many)
    static constexpr int speech_ubatch = 128;
    int32_t max_icl_tokens() const { return icl_tokens; }

    // tokens of text in the talker's vocabulary (no special tokens parsed)
    int32_t n_tokens(const std::string & text) const;
    // text tokens a slot has room for in one segment: 2 per character of --tts-segment-chars; a
    // segment whose text takes more (rare scripts, emoji: up to 4 tokens a character) is split
    int32_t max_text_tokens() const { return text_tokens; }
    // tokens of instructions a slot has room for next to the longest segment
    int32_t max_instruction_tokens() const { return instr_tokens; }

    // held for every compute of a slot (prompt, a frame, a decode, a speaker encode)
    std::unique_lock<std::mutex> compute_lock() { return std::unique_lock<std::mutex>(compute_mtx); }

    // one frame of seg, batched with every other segment that wants one at the same moment: the
    // thread that completes the set of waiting segments (or finds no batch computing) computes the
    // batch for all of them, the others sleep until their frame is done. false (err set) on failure
    bool frame(speech_segment & seg, std::string & err);
    // held by a request's thread while it computes (its prompt, its frames, its codec decodes): the next
    // batch waits for every such thread, so a request that decodes audio or starts a segment rejoins the
    // batch instead of leaving the others to compute without it (the computes take turns on the same
    // cores anyway), and a new request's prompt goes before the next frame. A thread outside (writing to
    // its client, stalled, cancelled) is not waited for, except for a moment right after it left with
    // more audio to make (will_return): handing a chunk to the client takes well under that, and a batch
    // that goes without the thread costs a step of its own later, when its frames are out of step
    class generating {
    public:
        generating(speech_engine & e, const speech_slot & slot);
        ~generating();
        // the thread comes back for more frames once it has handed its audio to the client
        void will_return() { returning = true; }
    private:
        speech_engine & e;
        int  slot_id;
        bool returning = false;
    };
    // handing a chunk to a local client takes well under a millisecond, and a 4-row frame step at 0.6B q8_0
    // ~90 ms: a wait that is not met costs little next to the step a batch without the thread costs
    static constexpr int64_t return_wait_us = 10000;
    // cells of one slot's sequence
    int slot_cells() const { return n_ctx; }

    // operations: /metrics and /slots
    speech_metrics metrics;
    struct occupancy_info { int slots = 0, busy = 0, waiting = 0; };
    occupancy_info occupancy();
    struct slot_state { int id = 0; bool busy = false; int n_frames = 0; int64_t t_start_us = 0, n_requests = 0; };
    std::vector<slot_state> slot_states();

    const common_params & params() const { return cparams; }
    const llama_model * model() const { return mdl; }
    int  sample_rate() const { return rate; }
    int  frames_per_second() const { return 12; } // 12.5 Hz codec, rounded down for frame caps
    int  segment_frame_cap(size_t n_chars) const;
    const std::string & model_type() const { return type; }   // base, custom_voice, voice_design
    // the codec's end-of-speech token and the vocabulary's end-of-generation tokens
    const std::vector<llama_token> & segment_end_tokens() const { return end_tokens; }
    const std::string & model_size() const { return size; }
    bool can_clone() const { return cloning; }
    bool takes_instructions() const { return type == "voice_design" || (type == "custom_voice" && size != "0b6"); }
    std::string describe() const;

private:
    friend class speech_slot_lease;
    void release(speech_slot * slot);
    bool init_talker(int n_slots);
    bool init_slot(speech_slot & slot, int id);
    bool is_clone_name(const std::string & name) const;
    bool read_voice_file(const std::string & path, std::string & bytes, std::string & err) const;
    std::string check_voice_file(const std::string & path, int64_t size, int64_t mtime);

    common_params cparams;
    const llama_model * mdl = nullptr;
    bool ready   = false;
    std::string fatal;
    std::map<std::string, std::string> alias_map; // lower-case name -> voice
    bool cloning = false;
    int  rate    = 24000;
    int  n_ctx   = 0;
    int  text_tokens  = 0;
    int  instr_tokens = 0;
    int  icl_tokens   = 0;
    bool icl_capable  = false; // the mmproj has the speech encoder (in-context cloning)
    speech_audio::reference_limits limits; // of a cloned voice's recording
    void read_transcript(speech_voice & v, const std::string & wav_path);
    std::string voices_real; // the voices directory, resolved
    std::string type, size;
    std::vector<std::string> langs;
    std::vector<std::string> speakers;  // built-in, lower case
    std::vector<llama_token> end_tokens;

    common_threadpools threads;      // the CPU threads of the talker and of mctx
    llama_context * talker = nullptr; // every slot's sequence
    mtmd_context * mctx = nullptr;   // loaded once, shared by the slots
    std::mutex compute_mtx;
    bool batching = false;           // the pipeline generates in batches (Qwen3-TTS) and there are slots to batch

    // the frames wanted now (frame()), and the threads generating (class generating)
    struct frame_req {
        speech_segment * seg = nullptr;
        bool done = false;
        bool ok   = true;
    };
    void compute_frames(const std::vector<frame_req *> & batch);
    std::mutex batch_mtx;
    std::condition_variable batch_cv;
    std::vector<frame_req *> pending;
    int  n_generating = 0;
    bool computing    = false;
    bool can_lead() const { return !computing && !pending.empty() && (int) pending.size() >= n_generating; }
    // per slot: until when the next batch waits for its thread to return (generating::will_return), 0: not
    // waited for
    std::vector<int64_t> return_by_us;
    // the latest of those deadlines still ahead of now_us, 0 if none
    int64_t awaited_until(int64_t now_us) const;
    std::vector<std::unique_ptr<speech_slot>> slots;
    std::vector<speech_slot *> free_slots;
    int n_waiting = 0;
    std::mutex mtx;
    std::condition_variable cv;

    // keyed by voice id; a rewritten recording (any content change) is encoded again
    struct cached_embd {
        uint64_t digest = 0;
        size_t   bytes  = 0;
        std::vector<float> embd;
        std::vector<int32_t> codes; // empty until a request clones the voice in context
    };
    std::mutex embd_mtx;
    std::map<std::string, cached_embd> embd_cache;

    // the listing's verdict on each file, re-checked when its size or mtime changes; a request
    // always checks the bytes it actually reads
    struct cached_check {
        int64_t size = -1, mtime = 0;
        std::string reason;
    };
    std::mutex check_mtx;
    std::map<std::string, cached_check> check_cache;
};
