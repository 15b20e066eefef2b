// llama-qwen3tts-gen-batch: checks and times mtmd_gen_audio_process_batch() (the Qwen3-TTS code predictor
// over N frames of independent generations in one graph) against N mtmd_gen_audio_process() calls.
//
//   llama-qwen3tts-gen-batch -m talker.gguf --mmproj mmproj.gguf [-t THREADS] [--no-repack] [-fa on|off] [-v]
//                            (--check N[,N..] | --bench N[,N..] [--iters K])
//
// -v passes every log line through (e.g. GGML_SCHED_DEBUG=2's graph dump); otherwise only errors.
//
// --check N: N frames (deterministic hidden states, varied code0s and fixed seeds, a frame that continues
//   the previous frame's random stream, a frame with another top_k and one with another top_p once N >= 3)
//   run as N solo calls and as one batch call; one JSON line per N: codes equal, embd byte-equal, the
//   largest relative embd difference. Exit code 1 when a frame's codes differ.
// --bench N: predictor time per frame (wall and process CPU time) for batches of N frames (all with the same
//   top_k/top_p) against N solo calls, K rounds of each after one warm-up, alternating; one JSON line per N.

#include "ggml-cpu.h"
#include "llama.h"
#include "mtmd.h"

#include <chrono>
#include <cmath>
#include <ctime>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

struct frame_in {
    std::vector<float> embd;
    mtmd_gen_inp       inp;
};

struct frame_out {
    std::vector<int32_t> codes;
    std::vector<float>   embd;
};

static std::vector<int> parse_list(const char * s) {
    std::vector<int> out;
    for (const char * p = s; *p;) {
        char * end = nullptr;
        const long v = std::strtol(p, &end, 10);
        if (end == p || v < 1 || v > 64) {
            return {};
        }
        out.push_back((int) v);
        p = *end == ',' ? end + 1 : end;
        if (*end != ',' && *end != '\0') {
            return {};
        }
    }
    return out;
}

// deterministic hidden states of a talker's scale (xorshift, roughly uniform in [-2, 2])
static std::vector<float> hidden_state(size_t n_embd, uint32_t seed) {
    std::vector<float> h(n_embd);
    uint32_t x = seed * 2654435761u + 1u;
    for (auto & v : h) {
        x ^= x << 13; x ^= x >> 17; x ^= x << 5;
        v = ((float) (x >> 8) / (float) (1u << 24)) * 4.0f - 2.0f;
    }
    return h;
}

static std::vector<frame_in> make_frames(mtmd_context * mctx, size_t n_embd, int n, bool vary_sampling) {
    std::vector<frame_in> frames((size_t) n);
    for (int i = 0; i < n; i++) {
        frame_in & f = frames[(size_t) i];
        f.embd = hidden_state(n_embd, 1000u + (uint32_t) i);
        f.inp = mtmd_gen_inp_default(mctx);
        f.inp.type   = MTMD_GEN_PROCESS_TYPE_GEN_CODE;
        f.inp.code0  = (37 * i + 5) % 64;
        f.inp.seed   = 4242u + 977u * (uint32_t) i;
        f.inp.reseed = true;
        if (vary_sampling) {
            if (i == 1) { // continues frame 0's random stream (same seed, no reseed)
                f.inp.seed   = frames[0].inp.seed;
                f.inp.reseed = false;
            }
            if (i == 2) {
                f.inp.top_k = 7;
            }
            if (i == 3) {
                f.inp.top_p = 0.8f;
            }
        }
    }
    for (auto & f : frames) {
        f.inp.embd = f.embd.data();
    }
    return frames;
}

static bool run_solo(mtmd_context * mctx, std::vector<frame_in> & frames, size_t n_embd, std::vector<frame_out> * outs) {
    for (size_t i = 0; i < frames.size(); i++) {
        mtmd_gen_out out{};
        if (mtmd_gen_audio_process(mctx, &frames[i].inp, &out) != 0) {
            return false;
        }
        if (outs) {
            (*outs)[i].codes.assign(out.codes, out.codes + out.n_codes);
            (*outs)[i].embd.assign(out.embd, out.embd + n_embd);
        }
    }
    return true;
}

static bool run_batch(mtmd_context * mctx, std::vector<frame_in> & frames, size_t n_embd, std::vector<frame_out> * outs) {
    std::vector<mtmd_gen_inp> inps;
    for (auto & f : frames) {
        inps.push_back(f.inp);
    }
    std::vector<mtmd_gen_out> res(frames.size());
    if (mtmd_gen_audio_process_batch(mctx, inps.data(), (int32_t) inps.size(), res.data()) != 0) {
        return false;
    }
    if (outs) {
        for (size_t i = 0; i < frames.size(); i++) {
            (*outs)[i].codes.assign(res[i].codes, res[i].codes + res[i].n_codes);
            (*outs)[i].embd.assign(res[i].embd, res[i].embd + n_embd);
        }
    }
    return true;
}

static double now_ms() {
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// CPU time of the process (all its threads): under load from other processes a steadier measure of the
// work than wall time, with one thread especially (more threads add their spin-waits)
static double cpu_ms() {
    timespec ts{};
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

int main(int argc, char ** argv) {
    std::string model_path, mmproj_path;
    int  n_threads = 2;
    bool no_repack = false;
    int  fa        = -1; // auto
    int  iters     = 20;
    static bool verbose = false;
    std::vector<int> check_ns, bench_ns;

    for (int i = 1; i < argc; i++) {
        const std::string a = argv[i];
        auto next = [&]() -> const char * {
            if (i + 1 >= argc) {
                fprintf(stderr, "error: %s needs a value\n", a.c_str());
                exit(2);
            }
            return argv[++i];
        };
        if (a == "-m") {
            model_path = next();
        } else if (a == "--mmproj") {
            mmproj_path = next();
        } else if (a == "-t") {
            n_threads = std::atoi(next());
        } else if (a == "--no-repack") {
            no_repack = true;
        } else if (a == "-fa") {
            const std::string v = next();
            fa = v == "on" ? 1 : v == "off" ? 0 : -2;
            if (fa == -2) {
                fprintf(stderr, "error: -fa takes on or off, not %s\n", v.c_str());
                return 2;
            }
        } else if (a == "-v") {
            verbose = true;
        } else if (a == "--iters") {
            iters = std::atoi(next());
        } else if (a == "--check" || a == "--bench") {
            const char * v = next();
            auto ns = parse_list(v);
            if (ns.empty()) {
                fprintf(stderr, "error: %s takes frame counts 1..64 separated by commas, not %s\n", a.c_str(), v);
                return 2;
            }
            (a == "--check" ? check_ns : bench_ns) = ns;
        } else {
            fprintf(stderr, "error: unknown argument %s\n", a.c_str());
            return 2;
        }
    }
    if (model_path.empty() || mmproj_path.empty() || (check_ns.empty() && bench_ns.empty()) || n_threads < 1 || iters < 1) {
        fprintf(stderr, "usage: %s -m talker.gguf --mmproj mmproj.gguf [-t N] [--no-repack] [-fa on|off] [-v] "
                        "(--check N[,N..] | --bench N[,N..] [--iters K])\n", argv[0]);
        return 2;
    }

    llama_log_set([](ggml_log_level level, const char * text, void *) {
        if (verbose || level >= GGML_LOG_LEVEL_ERROR) {
            fputs(text, stderr);
        }
    }, nullptr);
    mtmd_log_set([](ggml_log_level level, const char * text, void *) {
        if (verbose || level >= GGML_LOG_LEVEL_ERROR) {
            fputs(text, stderr);
        }
    }, nullptr);
    llama_backend_init();

    llama_model_params mparams = llama_model_default_params();
    mparams.use_extra_bufts = !no_repack;
    llama_model * model = llama_model_load_from_file(model_path.c_str(), mparams);
    if (!model) {
        fprintf(stderr, "error: cannot load the talker %s\n", model_path.c_str());
        return 1;
    }

    ggml_threadpool_params tpp = ggml_threadpool_params_default(n_threads);
    ggml_threadpool * tp = ggml_threadpool_new(&tpp);

    mtmd_context_params cparams = mtmd_context_params_default();
    cparams.use_gpu         = false;
    cparams.n_threads       = n_threads;
    cparams.print_timings   = false;
    cparams.threadpool      = tp;
    cparams.use_extra_bufts = !no_repack;
    if (fa >= 0) {
        cparams.flash_attn_type = fa ? LLAMA_FLASH_ATTN_TYPE_ENABLED : LLAMA_FLASH_ATTN_TYPE_DISABLED;
    }
    mtmd_context * mctx = mtmd_init_from_file(mmproj_path.c_str(), model, cparams);
    if (!mctx || mtmd_gen_audio_get_info(mctx).type != MTMD_GEN_AUDIO_TYPE_QWEN3TTS) {
        fprintf(stderr, "error: %s is not a Qwen3-TTS mmproj\n", mmproj_path.c_str());
        return 1;
    }
    const size_t n_embd = (size_t) llama_model_n_embd(model);

    int rc = 0;
    for (int n : check_ns) {
        auto frames = make_frames(mctx, n_embd, n, true);
        std::vector<frame_out> solo((size_t) n), batch((size_t) n);
        if (!run_solo(mctx, frames, n_embd, &solo) || !run_batch(mctx, frames, n_embd, &batch)) {
            fprintf(stderr, "error: gen_code failed (%d frames)\n", n);
            return 1;
        }
        bool codes_equal = true, embd_bytes_equal = true;
        double max_rel = 0.0;
        std::string differing;
        for (int i = 0; i < n; i++) {
            const auto & s = solo[(size_t) i];
            const auto & b = batch[(size_t) i];
            if (s.codes != b.codes) {
                codes_equal = false;
                differing += (differing.empty() ? "" : ",") + std::to_string(i);
            }
            if (s.embd.size() != b.embd.size() || std::memcmp(s.embd.data(), b.embd.data(), s.embd.size() * sizeof(float)) != 0) {
                embd_bytes_equal = false;
            }
            for (size_t j = 0; j < s.embd.size() && j < b.embd.size(); j++) {
                const double d = std::fabs((double) s.embd[j] - (double) b.embd[j]);
                const double m = std::fmax(std::fabs((double) s.embd[j]), 1e-6);
                max_rel = std::fmax(max_rel, d / m);
            }
        }
        // the solo codes of the frames, so a test can see that they differ between frames
        std::string codes0;
        for (int i = 0; i < n; i++) {
            codes0 += (i ? "," : "") + std::to_string(solo[(size_t) i].codes[1]);
        }
        printf("{\"mode\": \"check\", \"n\": %d, \"codes_equal\": %s, \"embd_bytes_equal\": %s, \"embd_max_rel\": %.3g, "
               "\"differing_frames\": [%s], \"code1_per_frame\": [%s], \"n_codes\": %zu}\n",
               n, codes_equal ? "true" : "false", embd_bytes_equal ? "true" : "false", max_rel,
               differing.c_str(), codes0.c_str(), solo[0].codes.size());
        fflush(stdout);
        if (!codes_equal) {
            rc = 1;
        }
    }

    for (int n : bench_ns) {
        auto frames = make_frames(mctx, n_embd, n, false);
        if (!run_solo(mctx, frames, n_embd, nullptr) || !run_batch(mctx, frames, n_embd, nullptr)) { // warm-up
            fprintf(stderr, "error: gen_code failed (%d frames)\n", n);
            return 1;
        }
        // solo and batch calls alternate, so that a change in the machine's load hits both alike
        double solo_ms = 0, batch_ms = 0, solo_cpu = 0, batch_cpu = 0;
        for (int k = 0; k < iters; k++) {
            const double t0 = now_ms(), c0 = cpu_ms();
            run_solo(mctx, frames, n_embd, nullptr);
            const double t1 = now_ms(), c1 = cpu_ms();
            run_batch(mctx, frames, n_embd, nullptr);
            const double t2 = now_ms(), c2 = cpu_ms();
            solo_ms += t1 - t0; batch_ms += t2 - t1; solo_cpu += c1 - c0; batch_cpu += c2 - c1;
        }
        solo_ms /= iters; batch_ms /= iters; solo_cpu /= iters; batch_cpu /= iters; // per n solo calls, per batch call
        printf("{\"mode\": \"bench\", \"n\": %d, \"threads\": %d, \"iters\": %d, \"solo_ms_per_frame\": %.2f, "
               "\"batch_ms_per_frame\": %.2f, \"batch_vs_solo\": %.3f, \"solo_cpu_ms_per_frame\": %.2f, "
               "\"batch_cpu_ms_per_frame\": %.2f, \"batch_vs_solo_cpu\": %.3f}\n",
               n, n_threads, iters, solo_ms / n, batch_ms / n, batch_ms / solo_ms,
               solo_cpu / n, batch_cpu / n, batch_cpu / solo_cpu);
        fflush(stdout);
    }

    mtmd_free(mctx);
    ggml_threadpool_free(tp);
    llama_model_free(model);
    return rc;
}
