// CPU time per GEMV (1 token, 1 thread) of the predictor's layer-0 matrices: CPU vs CPU_REPACK buffer, interleaved rounds
#include "ggml.h"
#include "ggml-alloc.h"
#include "ggml-backend.h"
#include "ggml-cpu.h"
#include "gguf.h"
#include <cstdio>
#include <ctime>
#include <fstream>
#include <random>
#include <vector>
#include <string>

struct setup { ggml_context * cw, * c; ggml_backend_buffer_t bw, bx; ggml_cgraph * gf; };

static setup make(ggml_backend_buffer_type_t buft, std::vector<ggml_tensor *> & metas, std::vector<std::vector<uint8_t>> & datas) {
    setup s;
    ggml_init_params p = { ggml_tensor_overhead() * 64 + ggml_graph_overhead(), nullptr, true };
    s.cw = ggml_init(p); s.c = ggml_init(p);
    std::vector<ggml_tensor *> ws;
    for (auto * m : metas) ws.push_back(ggml_dup_tensor(s.cw, m));
    s.bw = ggml_backend_alloc_ctx_tensors_from_buft(s.cw, buft);
    for (size_t i = 0; i < ws.size(); i++) ggml_backend_tensor_set(ws[i], datas[i].data(), 0, datas[i].size());
    s.gf = ggml_new_graph(s.c);
    std::vector<ggml_tensor *> xs;
    for (auto * w : ws) { auto * x = ggml_new_tensor_2d(s.c, GGML_TYPE_F32, w->ne[0], 1); xs.push_back(x); ggml_build_forward_expand(s.gf, ggml_mul_mat(s.c, w, x)); }
    s.bx = ggml_backend_alloc_ctx_tensors_from_buft(s.c, ggml_backend_cpu_buffer_type());
    std::mt19937 rng(1); std::normal_distribution<float> nd;
    for (auto * x : xs) { std::vector<float> v(ggml_nelements(x)); for (auto & f : v) f = nd(rng); ggml_backend_tensor_set(x, v.data(), 0, ggml_nbytes(x)); }
    return s;
}

static double cpu_s() { timespec t; clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t); return t.tv_sec + t.tv_nsec * 1e-9; }
static double wall_s() { timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec * 1e-9; }

int main(int argc, char ** argv) {
    ggml_context * meta_ctx = nullptr;
    gguf_init_params gp = { true, &meta_ctx };
    gguf_context * g = gguf_init_from_file(argv[1], gp);
    std::vector<ggml_tensor *> metas; std::vector<std::vector<uint8_t>> datas;
    for (const char * n : {"attn_q", "attn_k", "attn_v", "attn_out", "ffn_gate", "ffn_up", "ffn_down"}) {
        std::string name = std::string("a.gen.code.blk.0.") + n + ".weight";
        ggml_tensor * m = ggml_get_tensor(meta_ctx, name.c_str());
        size_t off = gguf_get_data_offset(g) + gguf_get_tensor_offset(g, gguf_find_tensor(g, name.c_str()));
        std::vector<uint8_t> d(ggml_nbytes(m)); std::ifstream f(argv[1], std::ios::binary); f.seekg(off); f.read((char *) d.data(), d.size());
        metas.push_back(m); datas.push_back(std::move(d));
    }
    ggml_backend_dev_t dev = ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_CPU);
    auto get_extra = (ggml_backend_dev_get_extra_bufts_t) ggml_backend_reg_get_proc_address(ggml_backend_dev_backend_reg(dev), "ggml_backend_dev_get_extra_bufts");
    setup a = make(ggml_backend_cpu_buffer_type(), metas, datas), b = make(get_extra(dev)[0], metas, datas);
    ggml_backend_t be = ggml_backend_cpu_init(); ggml_backend_cpu_set_n_threads(be, 1);
    const int iters = atoi(argv[2]);
    for (int round = 0; round < 4; round++) {
        for (setup * s : {&a, &b}) {
            ggml_backend_graph_compute(be, s->gf);
            double c0 = cpu_s(), w0 = wall_s();
            for (int i = 0; i < iters; i++) ggml_backend_graph_compute(be, s->gf);
            double c = (cpu_s() - c0) / iters * 1e6, w = (wall_s() - w0) / iters * 1e6;
            printf("round %d %-10s one layer's 7 GEMVs (%.2f MB q4_0): %.0f us CPU, %.0f us wall\n", round, s == &a ? "CPU" : "CPU_REPACK",
                   ggml_backend_buffer_get_size(s->bw) / 1e6, c, w);
        }
    }
    return 0;
}
