#include "models.h"

#include <string>

// Qwen3-TTS speech encoder (the 12 Hz tokenizer's Mimi encoder), for in-context voice cloning:
// 24 kHz mono PCM -> SEANet (causal convs, ELU) -> transformer (LayerNorm, NeoX RoPE, causal
// attention, GELU MLP, layer scale) -> downsample conv (replicate padding) -> split RVQ: the
// semantic and the acoustic quantizer project the same embedding, and each codebook picks the
// nearest entry (euclidean) of what the ones before it left over.
// CODES_EMBD turns codes into talker input rows: the sum of the 16 codebook embeddings of a frame.
//
// SEANet tensors are time-first here, [T, C]; the transformer works on [C, T].

// causal conv, x: [T, IC], w: [K, IC, OC] -> [ceil(T / stride), OC]; K - stride zeros (or copies of the
// first frame) on the left, and on the right what makes the last window whole. im2col stays f32 (the
// upstream conv_1d helper rounds activations to f16), so the codes are the reference's.
ggml_tensor * clip_graph_qwen3tts_codec_enc::conv1d(ggml_tensor * x, ggml_tensor * w, ggml_tensor * b, int stride,
                                                    bool replicate) const {
    const int64_t k       = w->ne[0];
    const int64_t p_total = k - stride;
    const int64_t t       = x->ne[0];
    const int64_t n_out   = (t + stride - 1) / stride;
    const int64_t p_extra = (n_out - 1) * stride + k - p_total - t;

    if (replicate) {
        if (p_total > 0) {
            ggml_tensor * first = ggml_view_2d(ctx0, x, 1, x->ne[1], x->nb[1], 0);
            x = ggml_concat(ctx0, ggml_repeat_4d(ctx0, first, p_total, x->ne[1], 1, 1), x, 0);
        }
        if (p_extra > 0) {
            ggml_tensor * last = ggml_view_2d(ctx0, x, 1, x->ne[1], x->nb[1], (size_t) (x->ne[0] - 1) * x->nb[0]);
            x = ggml_concat(ctx0, x, ggml_repeat_4d(ctx0, last, p_extra, x->ne[1], 1, 1), 0);
        }
    } else if (p_total > 0 || p_extra > 0) {
        x = ggml_pad_ext(ctx0, x, (int) p_total, (int) p_extra, 0, 0, 0, 0, 0, 0);
    }

    ggml_tensor * col = ggml_im2col(ctx0, w, x, stride, 0, 0, 0, 1, 0, false, GGML_TYPE_F32); // [IC * K, OL]
    ggml_tensor * y   = ggml_mul_mat(ctx0,
                                     ggml_reshape_2d(ctx0, col, col->ne[0], col->ne[1] * col->ne[2]),
                                     ggml_reshape_2d(ctx0, w, w->ne[0] * w->ne[1], w->ne[2])); // [OL, OC]
    if (b) {
        y = ggml_add(ctx0, y, ggml_reshape_2d(ctx0, b, 1, b->ne[0]));
    }
    return y;
}

ggml_tensor * clip_graph_qwen3tts_codec_enc::encode(ggml_tensor * pcm) const {
    const auto & enc = model.q3enc;

    // SEANet
    ggml_tensor * cur = conv1d(ggml_reshape_2d(ctx0, pcm, pcm->ne[0], 1), enc.seanet.conv_in_w, enc.seanet.conv_in_b, 1, false);
    for (size_t s = 0; s < enc.seanet.stages.size(); s++) {
        const auto & st = enc.seanet.stages[s];
        ggml_tensor * h = conv1d(ggml_elu(ctx0, cur), st.res_conv1_w, st.res_conv1_b, 1, false);
        h   = conv1d(ggml_elu(ctx0, h), st.res_conv2_w, st.res_conv2_b, 1, false);
        cur = ggml_add(ctx0, cur, h);
        cur = conv1d(ggml_elu(ctx0, cur), st.scale_conv_w, st.scale_conv_b, hparams.enc_ratios[s], false);
        cb(cur, "q3enc_seanet_stage", (int) s);
    }
    cur = conv1d(ggml_elu(ctx0, cur), enc.seanet.conv_out_w, enc.seanet.conv_out_b, 1, false);
    cb(cur, "q3enc_seanet", -1);

    // transformer, [C, T]
    cur = ggml_cont(ctx0, ggml_transpose(ctx0, cur));
    const int64_t n_pos  = cur->ne[1];
    const int     n_h    = hparams.enc_n_head;
    const int64_t d_h    = hparams.enc_n_embd / n_h;
    const float   scale  = 1.0f / std::sqrt((float) d_h);
    ggml_tensor * pos = ggml_cast(ctx0, ggml_arange(ctx0, 0.0f, (float) n_pos, 1.0f), GGML_TYPE_I32);

    for (size_t il = 0; il < enc.layers.size(); il++) {
        const auto & l = enc.layers[il];
        ggml_tensor * res = cur;
        ggml_tensor * x = ggml_norm(ctx0, cur, hparams.enc_eps);
        x = ggml_add(ctx0, ggml_mul(ctx0, x, l.ln_1_w), l.ln_1_b);

        ggml_tensor * q = ggml_reshape_3d(ctx0, ggml_mul_mat(ctx0, l.q_w, x), d_h, n_h, n_pos);
        ggml_tensor * k = ggml_reshape_3d(ctx0, ggml_mul_mat(ctx0, l.k_w, x), d_h, n_h, n_pos);
        ggml_tensor * v = ggml_reshape_3d(ctx0, ggml_mul_mat(ctx0, l.v_w, x), d_h, n_h, n_pos);
        q = ggml_rope_ext(ctx0, q, pos, nullptr, (int) d_h, GGML_ROPE_TYPE_NEOX, 0, hparams.enc_rope_theta,
                          1.0f, 0.0f, 1.0f, 0.0f, 0.0f);
        k = ggml_rope_ext(ctx0, k, pos, nullptr, (int) d_h, GGML_ROPE_TYPE_NEOX, 0, hparams.enc_rope_theta,
                          1.0f, 0.0f, 1.0f, 0.0f, 0.0f);

        // causal over the whole recording: the reference builds a plain causal mask (its eager and
        // sdpa paths never apply the configured sliding window)
        q = ggml_permute(ctx0, q, 0, 2, 1, 3);                                    // [d, T, H]
        k = ggml_permute(ctx0, k, 0, 2, 1, 3);                                    // [d, T, H]
        ggml_tensor * kq = ggml_mul_mat(ctx0, k, q);                              // [T_k, T_q, H]
        kq = ggml_diag_mask_inf(ctx0, kq, 0);
        kq = ggml_soft_max_ext(ctx0, kq, nullptr, scale, 0.0f);
        ggml_tensor * vt  = ggml_cont(ctx0, ggml_permute(ctx0, v, 1, 2, 0, 3));  // [T_k, d, H]
        ggml_tensor * kqv = ggml_mul_mat(ctx0, vt, kq);                           // [d, T_q, H]
        kqv = ggml_cont(ctx0, ggml_permute(ctx0, kqv, 0, 2, 1, 3));               // [d, H, T_q]
        x = ggml_mul_mat(ctx0, l.o_w, ggml_reshape_2d(ctx0, kqv, d_h * n_h, n_pos));
        cur = ggml_add(ctx0, res, ggml_mul(ctx0, x, l.ls_1_w));

        res = cur;
        x = ggml_norm(ctx0, cur, hparams.enc_eps);
        x = ggml_add(ctx0, ggml_mul(ctx0, x, l.ln_2_w), l.ln_2_b);
        x = ggml_mul_mat(ctx0, l.ff_down_w, ggml_gelu_erf(ctx0, ggml_mul_mat(ctx0, l.ff_up_w, x)));
        cur = ggml_add(ctx0, res, ggml_mul(ctx0, x, l.ls_2_w));
        cb(cur, "q3enc_tfm", (int) il);
    }

    // 25 Hz -> 12.5 Hz
    cur = ggml_cont(ctx0, ggml_transpose(ctx0, cur));                             // [T, C]
    cur = conv1d(cur, enc.downsample_w, nullptr, 2, true);
    cur = ggml_cont(ctx0, ggml_transpose(ctx0, cur));                             // [C, F]
    cb(cur, "q3enc_latent", -1);
    return cur;
}

ggml_cgraph * clip_graph_qwen3tts_codec_enc::build() {
    const auto & enc = model.q3enc;

    if (process == CLIP_GEN_PROCESS_CODES_EMBD) {
        // codebook-major codes [F, n_codes] -> [n_embd, F]; codebook 0 from the talker's codec table
        const int64_t n_codes = model.gen_code_embd_w->ne[2] + 1;
        ggml_tensor * codes = ggml_new_tensor_2d(ctx0, GGML_TYPE_I32, n_in, n_codes);
        ggml_set_name(codes, "enc_codes_in");
        ggml_set_input(codes);
        ggml_tensor * out = ggml_get_rows(ctx0, model.gen_code_out_embd_w, ggml_view_1d(ctx0, codes, n_in, 0));
        for (int64_t g = 1; g < n_codes; g++) {
            ggml_tensor * table = ggml_view_2d(ctx0, model.gen_code_embd_w, model.gen_code_embd_w->ne[0],
                                               model.gen_code_embd_w->ne[1], model.gen_code_embd_w->nb[1],
                                               (size_t) (g - 1) * model.gen_code_embd_w->nb[2]);
            out = ggml_add(ctx0, out, ggml_get_rows(ctx0, table, ggml_view_1d(ctx0, codes, n_in, (size_t) g * codes->nb[1])));
        }
        ggml_set_name(out, "enc_embd");
        ggml_set_output(out);
        ggml_build_forward_expand(gf, out);
        return gf;
    }

    GGML_ASSERT(process == CLIP_GEN_PROCESS_ENC_CODES);
    ggml_tensor * pcm = ggml_new_tensor_1d(ctx0, GGML_TYPE_F32, n_in);
    ggml_set_name(pcm, "enc_pcm");
    ggml_set_input(pcm);

    ggml_tensor * latent = encode(pcm); // [C, F]

    // split RVQ, residual nearest-neighbour search: argmin |r - e|^2 = argmax 2 r.e - |e|^2; argmax keeps
    // the first of equal scores, as the reference's argmin does
    ggml_tensor * residual = nullptr;
    for (int q = 0; q < hparams.enc_n_quantizers; q++) {
        if (q == 0) {
            residual = ggml_mul_mat(ctx0, enc.sem_in_w, latent);
        } else if (q == 1) {
            residual = ggml_mul_mat(ctx0, enc.ac_in_w, latent);
        }
        ggml_tensor * book = ggml_view_2d(ctx0, enc.codebook_w, enc.codebook_w->ne[0], enc.codebook_w->ne[1],
                                          enc.codebook_w->nb[1], (size_t) q * enc.codebook_w->nb[2]); // [D, N]
        ggml_tensor * norm2 = ggml_reshape_2d(ctx0, ggml_sum_rows(ctx0, ggml_sqr(ctx0, book)), book->ne[1], 1);
        ggml_tensor * score = ggml_sub(ctx0, ggml_scale(ctx0, ggml_mul_mat(ctx0, book, residual), 2.0f), norm2);
        ggml_tensor * idx   = ggml_argmax(ctx0, score); // [F]
        ggml_set_name(idx, ("enc_code_" + std::to_string(q)).c_str());
        ggml_set_output(idx);
        ggml_build_forward_expand(gf, idx);
        if (q + 1 < hparams.enc_n_quantizers) {
            residual = ggml_sub(ctx0, residual, ggml_get_rows(ctx0, book, idx));
        }
    }
    return gf;
}
