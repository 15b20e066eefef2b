// Quantized matrix products with the weight in each of ggml-cpu's extra buffer types (AMX on CPUs with
// AMX_INT8, CPU_REPACK) against the same product with the weight in the plain CPU buffer, at the shapes
// Qwen3-TTS runs: the talker's projections for one row (a generated step) and for a prompt, and the
// code predictor's [n_embd, 1, n_frames] activations against a 2D weight (the broadcast patch 0053
// fixed), and a weight with one matrix per batch, which AMX must refuse (0055). test-backend-ops cannot
// reach these kernels: it allocates every weight in the default buffer. With AMX, a product of 2-4 rows
// must also give each row exactly the bits that row gets alone (0059: the one-row kernel per row).
//
// Both sides quantize the activations the same way (q8_0, or q8_K for the k-quants), so they differ
// only by the order of float sums. Prints one line per case and "ran N failed M" per buffer type;
// exits 1 if any case fails.
//
// usage: cpu_extra_bufts_mul_mat [threads]

#include "ggml.h"
#include "ggml-alloc.h"
#include "ggml-backend.h"
#include "ggml-cpu.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

struct shape {
    int k, n, m, batches;    // weight [k, n] (or [k, n, batches]); activations [k, m, batches]
    bool batched_weight = false;
};

struct product {
    bool supported = false;
    std::vector<float> y;
};

static product mul_mat(ggml_backend_t backend, ggml_backend_buffer_type_t weight_buft, ggml_type type,
                       const shape & s, const std::vector<float> & w, const std::vector<float> & x) {
    product out;
    ggml_init_params ip = { 8 * ggml_tensor_overhead() + ggml_graph_overhead(), nullptr, true };
    ggml_context * ctx_w = ggml_init(ip);
    ggml_context * ctx   = ggml_init(ip);
    ggml_tensor * weight = ggml_new_tensor_3d(ctx_w, type, s.k, s.n, s.batched_weight ? s.batches : 1);
    ggml_tensor * act    = ggml_new_tensor_3d(ctx, GGML_TYPE_F32, s.k, s.m, s.batches);
    ggml_tensor * y      = ggml_mul_mat(ctx, weight, act);

    ggml_backend_buffer_t buf_w = ggml_backend_alloc_ctx_tensors_from_buft(ctx_w, weight_buft);
    ggml_backend_buffer_set_usage(buf_w, GGML_BACKEND_BUFFER_USAGE_WEIGHTS);
    ggml_backend_buffer_t buf = ggml_backend_alloc_ctx_tensors(ctx, backend);

    // the loader asks the same question before it places a weight in an extra buffer
    out.supported = ggml_backend_dev_supports_op(ggml_backend_get_device(backend), y);
    if (out.supported) {
        std::vector<uint8_t> q(ggml_nbytes(weight));
        ggml_quantize_chunk(type, w.data(), q.data(), 0, ggml_nrows(weight), s.k, nullptr);
        ggml_backend_tensor_set(weight, q.data(), 0, q.size());
        ggml_backend_tensor_set(act, x.data(), 0, x.size() * sizeof(float));

        ggml_cgraph * gf = ggml_new_graph(ctx);
        ggml_build_forward_expand(gf, y);
        if (ggml_backend_graph_compute(backend, gf) != GGML_STATUS_SUCCESS) {
            fprintf(stderr, "graph compute failed\n");
            exit(2);
        }
        out.y.resize(ggml_nelements(y));
        ggml_backend_tensor_get(y, out.y.data(), 0, out.y.size() * sizeof(float));
    }
    ggml_backend_buffer_free(buf_w);
    ggml_backend_buffer_free(buf);
    ggml_free(ctx_w);
    ggml_free(ctx);
    return out;
}

int main(int argc, char ** argv) {
    ggml_backend_t backend = ggml_backend_cpu_init();
    ggml_backend_cpu_set_n_threads(backend, argc > 1 ? atoi(argv[1]) : 2);
    ggml_backend_dev_t dev = ggml_backend_get_device(backend);
    auto get_extra_bufts = (ggml_backend_dev_get_extra_bufts_t)
        ggml_backend_reg_get_proc_address(ggml_backend_dev_backend_reg(dev), "ggml_backend_dev_get_extra_bufts");
    if (!get_extra_bufts) {
        fprintf(stderr, "the CPU backend exports no extra buffer types\n");
        return 2;
    }

    const std::vector<shape> shapes = {
        {1024, 3072, 1, 1}, {1024, 3072, 19, 1}, {3072, 1024, 1, 1}, {3072, 1024, 17, 1},  // talker ffn
        {1024, 2048, 1, 1}, {2048, 1024, 40, 1}, {1024, 1024, 64, 1},                        // talker attention
        {1024, 1024, 1, 15}, {1024, 3072, 1, 4}, {3072, 1024, 3, 5},                         // predictor batches
        {1024, 3072, 2, 1}, {3072, 1024, 3, 1}, {1024, 2048, 4, 1},                          // a step of 2-4 streams
        {1024, 3072, 1, 8}, {3072, 1024, 5, 1}, {1024, 1024, 2, 3}, {2048, 1024, 7, 1},      // 5-8 rows (q8_0: 0059)
        {3072, 1024, 6, 1}, {1024, 3072, 8, 1},                                              // q8_0: the tile kernel's 6 and 8 rows
        {512, 1024, 16, 1}, {1024, 512, 16, 1}, {1024, 4096, 32, 1}, {4096, 1024, 64, 1},     // codec decoder (0063)
        {256, 32, 1, 1}, {768, 160, 33, 1}, {2304, 96, 7, 1},                                // odd sizes
        {256, 64, 1, 3, true}, {256, 64, 5, 3, true},  // one matrix per batch (0055: AMX must refuse these)
    };
    const ggml_type types[] = { GGML_TYPE_Q8_0, GGML_TYPE_Q4_0, GGML_TYPE_Q4_1, GGML_TYPE_Q4_K,
                                GGML_TYPE_Q5_K, GGML_TYPE_Q6_K, GGML_TYPE_IQ4_XS };

    std::mt19937 rng(1234);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    int n_failed_total = 0;
    for (ggml_backend_buffer_type_t * p = get_extra_bufts(dev); p && *p; ++p) {
        const std::string name = ggml_backend_buft_name(*p);
        int n_run = 0, n_failed = 0;
        for (ggml_type type : types) {
            for (const shape & s : shapes) {
                if (s.k % ggml_blck_size(type)) {
                    continue;
                }
                std::vector<float> w((size_t) s.k * s.n * (s.batched_weight ? s.batches : 1));
                std::vector<float> x((size_t) s.k * s.m * s.batches);
                for (float & v : w) v = normal(rng);
                for (float & v : x) v = normal(rng);
                product got = mul_mat(backend, *p, type, s, w, x);
                if (!got.supported) {
                    continue;
                }
                if (s.batched_weight && name == "AMX") {
                    // its buffer holds one packed 2D matrix: a 3D weight overran it (0055)
                    printf("%s %s k=%d n=%d m=%d batches=%d accepted a batched weight FAIL\n", name.c_str(),
                           ggml_type_name(type), s.k, s.n, s.m, s.batches);
                    n_run++;
                    n_failed++;
                    continue;
                }
                product ref = mul_mat(backend, ggml_backend_cpu_buffer_type(), type, s, w, x);
                double err = 0.0, norm = 0.0;
                for (size_t i = 0; i < ref.y.size(); ++i) {
                    err  += (got.y[i] - ref.y[i]) * (double) (got.y[i] - ref.y[i]);
                    norm += ref.y[i] * (double) ref.y[i];
                }
                const double rel = std::sqrt(err / norm);
                bool ok = std::isfinite(rel) && rel <= 1e-5;
                // AMX (0059): a product of 2-4 rows (q8_0: 2-8) gives each row the bits it gets alone
                const char * solo = "";
                const int n_rows = s.m * s.batches;
                if (name == "AMX" && n_rows > 1 && (n_rows <= 4 || (type == GGML_TYPE_Q8_0 && n_rows <= 8))) {
                    bool same = true;
                    for (int r = 0; r < s.m * s.batches; r++) {
                        const shape one = { s.k, s.n, 1, 1 };
                        const std::vector<float> xr(x.begin() + (size_t) r * s.k, x.begin() + (size_t) (r + 1) * s.k);
                        product alone = mul_mat(backend, *p, type, one, w, xr);
                        same = same && memcmp(alone.y.data(), &got.y[(size_t) r * s.n], s.n * sizeof(float)) == 0;
                    }
                    solo = same ? " rows_as_alone=yes" : " rows_as_alone=NO";
                    ok = ok && same;
                }
                printf("%s %s k=%d n=%d m=%d batches=%d rel_rms=%.3g%s %s\n", name.c_str(), ggml_type_name(type),
                       s.k, s.n, s.m, s.batches, rel, solo, ok ? "ok" : "FAIL");
                n_run++;
                n_failed += !ok;
            }
        }
        printf("%s ran %d failed %d\n", name.c_str(), n_run, n_failed);
        n_failed_total += n_failed;
    }
    ggml_backend_free(backend);
    return n_failed_total ? 1 : 0;
}
