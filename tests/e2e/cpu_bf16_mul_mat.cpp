// BF16 x BF16 matrix products on the CPU backend, as the Qwen3-TTS codec decoder runs its convolutions
// with BF16 kernels (patch 0046): the kernel as the weight, the input converted to BF16 and read either
// as contiguous rows or as the overlapping rows of a convolution's taps (row stride = input channels,
// row length = taps * channels). Each product is checked against a double-precision product of the
// same BF16 values (products of two BF16 values are exact in F32, so the kernels differ from it only by
// the order and rounding of their F32 sums).
//
// Prints one line per case: the shape, the relative error (max |y - ref| / rms(ref)), an FNV-1a hash
// of the output bytes (a caller running this with and without GGML_CPU_AMX_BF16=0 sees which cases the
// AMX kernel took: their hashes differ) and, with --bench, the best of 5 products in ms.
// Exits 1 if any case is off by more than 1e-5.
//
// usage: cpu_bf16_mul_mat [threads] [--bench]

#include "ggml.h"
#include "ggml-alloc.h"
#include "ggml-backend.h"
#include "ggml-cpu.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

struct shape {
    const char * name;
    int64_t m;     // output channels (weight rows)
    int64_t k;     // values per row (taps * input channels)
    int64_t n;     // rows of the input (output samples)
    int64_t taps;  // > 1: input rows overlap, one input channel block apart (a convolution's taps)
};

static uint64_t fnv1a(const void * data, size_t size) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < size; i++) {
        h = (h ^ ((const uint8_t *) data)[i]) * 1099511628211ull;
    }
    return h;
}

int main(int argc, char ** argv) {
    const int  threads = argc > 1 ? atoi(argv[1]) : 2;
    const bool bench   = argc > 2 && strcmp(argv[2], "--bench") == 0;

    // the decoder's shapes for a few frames (0.6B/1.7B codec: the DAC blocks' residual convolutions with
    // 7 taps, a pointwise one, a transposed convolution's half), the early stages' products with few
    // rows, which the AMX kernel leaves to tinyBLAS (n < 32), a partial block of rows, and a weight
    // row count that is not a multiple of 32 (tinyBLAS)
    const shape shapes[] = {
        { "dac3_res_conv1",  96,  672, 1920 * 2, 7 },
        { "dac2_res_conv1", 192, 1344,  640 * 2, 7 },
        { "dac1_res_conv1", 384, 2688,  160 * 2, 7 },
        { "dac0_res_conv1", 768, 5376,   32 * 2, 7 },
        { "dac0_res_conv1_n32", 768, 5376, 32, 7 },
        { "dac1_res_conv2", 384,  384,  160 * 3, 1 },
        { "dac1_tconv_half", 1920, 768,  32 * 3, 1 },
        { "rows_not_32",     96,  672,  101,    7 },
        { "dac_entry_n8",  1536, 7168,    8,    7 },
        { "dac0_tconv_n16", 6144, 1536,  16,    1 },
        { "m_not_32",        48,  336,  200,    7 },
    };

    ggml_backend_t backend = ggml_backend_cpu_init();
    ggml_backend_cpu_set_n_threads(backend, threads);
    std::mt19937 rng(42);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    int failed = 0;

    for (const shape & s : shapes) {
        const int64_t ic     = s.k / s.taps;
        const int64_t n_in   = s.taps > 1 ? s.n + s.taps - 1 : s.n;   // input samples (rows of ic values)
        const int64_t n_vals = s.taps > 1 ? n_in * ic : s.n * s.k;

        std::vector<ggml_bf16_t> w(s.m * s.k), x(n_vals);
        for (auto & v : w) v = ggml_fp32_to_bf16(normal(rng) * 0.05f);
        for (auto & v : x) v = ggml_fp32_to_bf16(normal(rng));

        ggml_init_params ip = { 8 * ggml_tensor_overhead() + ggml_graph_overhead(), nullptr, true };
        ggml_context * ctx = ggml_init(ip);
        ggml_tensor * weight = ggml_new_tensor_2d(ctx, GGML_TYPE_BF16, s.k, s.m);
        ggml_tensor * input  = ggml_new_tensor_1d(ctx, GGML_TYPE_BF16, n_vals);
        ggml_tensor * rows   = ggml_view_1d(ctx, input, 1, 0);
        rows->ne[0] = s.k;
        rows->ne[1] = s.n;
        rows->nb[1] = (s.taps > 1 ? ic : s.k) * sizeof(ggml_bf16_t);
        rows->nb[2] = rows->nb[3] = rows->nb[1] * s.n;
        ggml_tensor * y = ggml_mul_mat(ctx, weight, rows);
        ggml_backend_buffer_t buf = ggml_backend_alloc_ctx_tensors(ctx, backend);
        ggml_backend_tensor_set(weight, w.data(), 0, ggml_nbytes(weight));
        ggml_backend_tensor_set(input, x.data(), 0, ggml_nbytes(input));
        ggml_cgraph * gf = ggml_new_graph(ctx);
        ggml_build_forward_expand(gf, y);

        double best_ms = 1e30;
        for (int rep = 0; rep < (bench ? 5 : 1); rep++) {
            const auto t0 = std::chrono::steady_clock::now();
            if (ggml_backend_graph_compute(backend, gf) != GGML_STATUS_SUCCESS) {
                fprintf(stderr, "graph compute failed\n");
                return 2;
            }
            const auto t1 = std::chrono::steady_clock::now();
            best_ms = std::min(best_ms, std::chrono::duration<double, std::milli>(t1 - t0).count());
        }
        std::vector<float> out(s.m * s.n);
        ggml_backend_tensor_get(y, out.data(), 0, out.size() * sizeof(float));

        std::vector<float> wf(w.size()), xf(x.size());
        for (size_t i = 0; i < w.size(); i++) wf[i] = ggml_bf16_to_fp32(w[i]);
        for (size_t i = 0; i < x.size(); i++) xf[i] = ggml_bf16_to_fp32(x[i]);
        const int64_t row_stride = s.taps > 1 ? ic : s.k;
        double max_err = 0.0, sum_sq = 0.0;
        for (int64_t j = 0; j < s.n; j++) {
            const float * xr = &xf[j * row_stride];
            for (int64_t i = 0; i < s.m; i++) {
                const float * wr = &wf[i * s.k];
                double acc = 0.0;
                for (int64_t l = 0; l < s.k; l++) {
                    acc += (double) wr[l] * xr[l];
                }
                max_err = std::max(max_err, std::fabs(acc - out[j * s.m + i]));
                sum_sq += acc * acc;
            }
        }
        const double rel = max_err / std::sqrt(sum_sq / (double) out.size());
        const bool   ok  = rel <= 1e-5;
        failed += !ok;
        printf("%s m=%lld k=%lld n=%lld taps=%lld rel=%.3g hash=%016llx", s.name, (long long) s.m, (long long) s.k,
               (long long) s.n, (long long) s.taps, rel, (unsigned long long) fnv1a(out.data(), out.size() * sizeof(float)));
        if (bench) {
            printf(" ms=%.3f gflops=%.1f", best_ms, 2e-6 * s.m * s.k * s.n / best_ms);
        }
        printf(" %s\n", ok ? "ok" : "FAILED");

        ggml_backend_buffer_free(buf);
        ggml_free(ctx);
    }
    printf("ran %zu failed %d\n", sizeof(shapes) / sizeof(shapes[0]), failed);
    ggml_backend_free(backend);
    return failed ? 1 : 0;
}
