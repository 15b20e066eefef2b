// one predictor matrix (from the mmproj) times random activations, in the CPU and the CPU_REPACK buffer
// types; both against a double-precision product of the dequantised weights
#include "ggml.h"
#include "ggml-alloc.h"
#include "ggml-backend.h"
#include "ggml-cpu.h"
#include "gguf.h"
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>
#include <fstream>

static std::vector<float> run(ggml_backend_buffer_type_t buft, const char * name, const std::vector<uint8_t> & wdata,
                              ggml_tensor * meta, const std::vector<float> & x, int64_t n_tok) {
    ggml_init_params p = { ggml_tensor_overhead() * 8 + ggml_graph_overhead(), nullptr, true };
    ggml_context * ctx_w = ggml_init(p);
    ggml_tensor * w = ggml_dup_tensor(ctx_w, meta);
    ggml_backend_buffer_t bw = ggml_backend_alloc_ctx_tensors_from_buft(ctx_w, buft);
    ggml_backend_tensor_set(w, wdata.data(), 0, wdata.size());
    ggml_context * ctx = ggml_init(p);
    ggml_tensor * xt = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, meta->ne[0], n_tok);
    ggml_tensor * y = ggml_mul_mat(ctx, w, xt);
    ggml_cgraph * gf = ggml_new_graph(ctx);
    ggml_build_forward_expand(gf, y);
    ggml_backend_buffer_t bx = ggml_backend_alloc_ctx_tensors_from_buft(ctx, ggml_backend_cpu_buffer_type());
    ggml_backend_tensor_set(xt, x.data(), 0, x.size() * sizeof(float));
    ggml_backend_t be = ggml_backend_cpu_init();
    ggml_backend_cpu_set_n_threads(be, 1);
    ggml_backend_graph_compute(be, gf);
    std::vector<float> out(ggml_nelements(y));
    ggml_backend_tensor_get(y, out.data(), 0, ggml_nbytes(y));
    fprintf(stderr, "%s: weight buffer %s\n", name, ggml_backend_buffer_name(bw));
    ggml_backend_free(be); ggml_backend_buffer_free(bx); ggml_backend_buffer_free(bw); ggml_free(ctx); ggml_free(ctx_w);
    return out;
}

int main(int argc, char ** argv) {
    const char * fname = argv[1];
    ggml_context * meta_ctx = nullptr;
    gguf_init_params gp = { true, &meta_ctx };
    gguf_context * g = gguf_init_from_file(fname, gp);
    ggml_backend_dev_t dev = ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_CPU);
    auto get_extra = (ggml_backend_dev_get_extra_bufts_t) ggml_backend_reg_get_proc_address(ggml_backend_dev_backend_reg(dev), "ggml_backend_dev_get_extra_bufts");
    ggml_backend_buffer_type_t repack = get_extra(dev)[0];
    printf("extra buft: %s\n", ggml_backend_buft_name(repack));
    std::mt19937 rng(1);
    std::normal_distribution<float> nd(0.f, 1.f);
    for (int a = 2; a < argc; a++) {
        const char * tname = argv[a];
        ggml_tensor * meta = ggml_get_tensor(meta_ctx, tname);
        int64_t id = gguf_find_tensor(g, tname);
        size_t off = gguf_get_data_offset(g) + gguf_get_tensor_offset(g, id);
        std::vector<uint8_t> wdata(ggml_nbytes(meta));
        std::ifstream f(fname, std::ios::binary); f.seekg(off); f.read((char *) wdata.data(), wdata.size());
        const int64_t K = meta->ne[0], N = meta->ne[1];
        for (int64_t n_tok : {1, 2}) {
            std::vector<float> x(K * n_tok);
            for (auto & v : x) v = nd(rng);
            auto y0 = run(ggml_backend_cpu_buffer_type(), "CPU", wdata, meta, x, n_tok);
            auto y1 = run(repack, "REPACK", wdata, meta, x, n_tok);
            // reference: dequantised weights, double
            std::vector<float> wf(K * N);
            ggml_get_type_traits(meta->type)->to_float(wdata.data(), wf.data(), K * N);
            double e0 = 0, e1 = 0, d01 = 0, ref_max = 0; int64_t exact = 0;
            for (int64_t t = 0; t < n_tok; t++) for (int64_t n = 0; n < N; n++) {
                double r = 0; for (int64_t k = 0; k < K; k++) r += (double) wf[n*K+k] * x[t*K+k];
                ref_max = std::max(ref_max, std::fabs(r));
                e0 = std::max(e0, std::fabs(y0[t*N+n] - r)); e1 = std::max(e1, std::fabs(y1[t*N+n] - r));
                d01 = std::max(d01, (double) std::fabs(y0[t*N+n] - y1[t*N+n])); exact += y0[t*N+n] == y1[t*N+n];
            }
            printf("%s [%lld x %lld] %s, %lld token(s): max|y| %.3f, max err vs f64: vec_dot %.5f, repack %.5f; max |vec_dot - repack| %.6f; bit-equal %lld/%lld\n",
                   tname, (long long) K, (long long) N, ggml_type_name(meta->type), (long long) n_tok, ref_max, e0, e1, d01, (long long) exact, (long long) (N*n_tok));
        }
    }
    return 0;
}
