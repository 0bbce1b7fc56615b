/*
 * test_spec.c — the model descriptions (core/spec.c) and the files that record them:
 *  - the named tensors of an MLP and a GPT tile the flat parameter vector exactly (no
 *    gap, no overlap, in order), and the attributed layers point at their tensors;
 *  - GPT specs are checked (heads dividing dim, the end-of-text token in the vocabulary);
 *  - a GPT run file round-trips its spec, tokenizer and tensors; one without its
 *    tokenizer, or with a tokenizer of another vocabulary, is refused by name;
 *  - files written before the model seam still read: a run without /model's `kind` is
 *    an MLP; a factors file with an MLP's width chain `layers` instead of the layer list.
 */
#include <criterion/criterion.h>
#include <hdf5.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/spec.h"
#include "estimators/ekfac.h"
#include "models/model.h"
#include "store/store.h"
#include "testutil.h"

static const infl_gpt_spec G = {.n_layer = 3, .n_head = 2, .dim = 6, .context = 9, .vocab = 257, .eot = 256, .wd = 0.1};

// The tensors cover [0, nparams) in order, each right after the previous one.
static void tiles(const infl_model_spec *ms) {
    infl_tensor t[256];
    int n = infl_spec_tensors(ms, t, 256);
    cr_assert_gt(n, 0);
    cr_assert_leq(n, 256);
    size_t at = 0;
    for (int i = 0; i < n; i++) {
        cr_assert_eq(t[i].off, at, "tensor %s at %zu, expected %zu", t[i].name, t[i].off, at);
        at += (size_t)t[i].dims[0] * (t[i].rank == 2 ? (size_t)t[i].dims[1] : 1);
    }
    cr_assert_eq(at, infl_spec_nparams(ms), "the tensors hold %zu floats of %zu", at, infl_spec_nparams(ms));
    cr_assert_eq(infl_spec_tensors(ms, NULL, 0), n, "counting without room gives the same number");
}

static const infl_tensor *find(const infl_tensor *t, int n, const char *name) {
    for (int i = 0; i < n; i++)
        if (strcmp(t[i].name, name) == 0) return &t[i];
    cr_assert_fail("no tensor %s", name);
    return NULL;
}

Test(spec, tensors_tile_the_parameter_vector) {
    infl_model_spec mlp = {.kind = INFL_MODEL_MLP,
                           .mlp = {.L = 3, .widths = {5, 7, 4, 3}, .act = INFL_ACT_RELU, .loss = INFL_LOSS_SOFTMAX_CE}};
    tiles(&mlp);
    infl_model_spec gpt = {.kind = INFL_MODEL_GPT, .gpt = G};
    tiles(&gpt);
    // GPT-2's count: V C + T C + L (12 C² + 13 C) + 2 C
    size_t C = 6, want = 257 * C + 9 * C + 3 * (12 * C * C + 13 * C) + 2 * C;
    cr_assert_eq(infl_spec_nparams(&gpt), want);
    // the MLP's tensors are where its layout puts them
    infl_tensor t[64];
    int n = infl_spec_tensors(&mlp, t, 64);
    cr_assert_eq(n, 6);
    cr_assert_eq(find(t, n, "W1")->off, infl_mlp_woff(&mlp.mlp, 1));
    cr_assert_eq(find(t, n, "b2")->off, infl_mlp_boff(&mlp.mlp, 2));
}

Test(spec, attributed_layers_point_at_their_tensors) {
    infl_model_spec gpt = {.kind = INFL_MODEL_GPT, .gpt = G};
    infl_tensor t[256];
    int nt = infl_spec_tensors(&gpt, t, 256);
    infl_linear ly[64];
    int n = infl_spec_linears(&gpt, 1, ly, 64);
    cr_assert_eq(n, 4 * G.n_layer + 1);
    cr_assert_eq(infl_spec_linears(&gpt, 0, ly, 64), 4 * G.n_layer, "without the head");
    n = infl_spec_linears(&gpt, 1, ly, 64);
    for (int l = 0; l < n - 1; l++) {
        char w[64], b[64];
        snprintf(w, sizeof w, "%.47s.weight", ly[l].name);
        snprintf(b, sizeof b, "%.47s.bias", ly[l].name);
        const infl_tensor *tw = find(t, nt, w), *tb = find(t, nt, b);
        cr_assert_eq(ly[l].w_off, tw->off, "%s", w);
        cr_assert_eq(ly[l].b_off, tb->off, "%s", b);
        cr_assert_eq(tw->dims[0], ly[l].d_out, "%s: d_out", w);
        cr_assert_eq(tw->dims[1], ly[l].d_in, "%s: d_in", w);
        cr_assert_eq(ly[l].bias, 1);
    }
    // the tied head: wte, no bias
    cr_assert_str_eq(ly[n - 1].name, "lm_head");
    cr_assert_eq(ly[n - 1].w_off, find(t, nt, "wte")->off);
    cr_assert_eq(ly[n - 1].bias, 0);
    cr_assert_eq(ly[n - 1].d_out, G.vocab);
    cr_assert_eq(infl_linear_size(&ly[n - 1]), (size_t)G.vocab * G.dim);
    // a model over the spec: the layer space is the layers' sizes in order
    infl_ctx *ctx = tu_ctx();
    infl_model *m;
    cr_assert_eq(infl_model_create(ctx, &gpt, 1, &m), INFL_OK, "%s", infl_ctx_error(ctx));
    size_t at = 0;
    for (int l = 0; l < m->nlayers; l++) {
        cr_assert_eq(m->loff[l], at);
        at += infl_linear_size(&m->layer[l]);
    }
    cr_assert_eq(m->lsize, at);
    cr_assert_eq(m->wd, 0.0, "AdamW's decay is not part of the objective");
    infl_model_free(m);
    infl_ctx_free(ctx);
}

Test(spec, gpt_specs_are_checked) {
    infl_ctx *ctx = tu_ctx();
    infl_gpt_spec s = G;
    cr_assert_eq(infl_gpt_spec_check(ctx, &s), INFL_OK);
    s.n_head = 4;  // 6 % 4 != 0
    cr_assert_eq(infl_gpt_spec_check(ctx, &s), INFL_E_ARG);
    cr_assert(strstr(infl_ctx_error(ctx), "heads"), "%s", infl_ctx_error(ctx));
    s = G;
    s.eot = 257;
    cr_assert_eq(infl_gpt_spec_check(ctx, &s), INFL_E_ARG);
    cr_assert(strstr(infl_ctx_error(ctx), "end-of-text"), "%s", infl_ctx_error(ctx));
    s = G;
    s.context = 1;
    cr_assert_eq(infl_gpt_spec_check(ctx, &s), INFL_E_ARG);
    s = G;
    s.wd = NAN;
    cr_assert_eq(infl_gpt_spec_check(ctx, &s), INFL_E_ARG);
    infl_ctx_free(ctx);
}

// ---- files ----

static void write_gpt_run(infl_ctx *ctx, const char *path, const infl_tokenizer *tok, float **params) {
    infl_model_spec ms = {.kind = INFL_MODEL_GPT, .gpt = G};
    size_t P = infl_spec_nparams(&ms);
    float *p = malloc(P * sizeof(float));
    uint64_t st = 4;
    for (size_t i = 0; i < P; i++) p[i] = (float)(tu_uniform(&st) - 0.5);
    infl_runw *w;
    cr_assert_eq(store_run_create(ctx, path, 1, &ms, "d.h5:/train", "adamw", 7, &w), INFL_OK, "%s", infl_ctx_error(ctx));
    if (tok) cr_assert_eq(store_run_set_tokenizer(ctx, w, tok), INFL_OK, "%s", infl_ctx_error(ctx));
    cr_assert_eq(store_run_add_checkpoint(ctx, w, 10, 1.0, 1e-3, NAN, p), INFL_OK, "%s", infl_ctx_error(ctx));
    cr_assert_eq(store_run_commit(ctx, w), INFL_OK, "%s", infl_ctx_error(ctx));
    *params = p;
}

Test(spec, gpt_run_round_trip) {
    infl_ctx *ctx = tu_ctx();
    char path[1100];
    snprintf(path, sizeof path, "%s", tu_path("g.h5"));
    infl_tokenizer tok = {.kind = INFL_TOK_BYTES, .vocab = 257, .eot = 256};
    float *p;
    write_gpt_run(ctx, path, &tok, &p);
    infl_run *r;
    cr_assert_eq(store_run_open(ctx, path, &r), INFL_OK, "%s", infl_ctx_error(ctx));
    const infl_model_spec *ms = store_run_spec(r);
    cr_assert_eq(ms->kind, INFL_MODEL_GPT);
    cr_assert_eq(memcmp(&ms->gpt, &G, sizeof G), 0, "the spec comes back as written");
    cr_assert(store_tok_same(store_run_tokenizer(r), &tok));
    size_t P = infl_spec_nparams(ms);
    float *q = malloc(P * sizeof(float));
    cr_assert_eq(store_run_load(ctx, r, 0, q), INFL_OK, "%s", infl_ctx_error(ctx));
    cr_assert_eq(memcmp(p, q, P * sizeof(float)), 0);
    store_run_close(r);
    // h5py's view: the tensor names as datasets of the checkpoint
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    cr_assert(f >= 0);
    cr_assert(H5Lexists(f, "/checkpoints/000010/h2.mlp.c_proj.weight", H5P_DEFAULT) > 0);
    cr_assert(H5Lexists(f, "/model/tokenizer", H5P_DEFAULT) > 0);
    H5Fclose(f);
    // a tokenizer of another vocabulary is refused on writing
    infl_tokenizer wrong = {.kind = INFL_TOK_BYTES, .vocab = 257, .eot = 256};
    infl_gpt_spec g2 = G;
    g2.vocab = 300;
    infl_model_spec ms2 = {.kind = INFL_MODEL_GPT, .gpt = g2};
    infl_runw *w;
    cr_assert_eq(store_run_create(ctx, tu_path("g2.h5"), 1, &ms2, "d.h5:/train", "adamw", 7, &w), INFL_OK);
    cr_assert_eq(store_run_set_tokenizer(ctx, w, &wrong), INFL_E_ARG);
    store_run_abort(w);
    free(p);
    free(q);
    infl_ctx_free(ctx);
}

Test(spec, gpt_run_without_tokenizer_is_refused) {
    infl_ctx *ctx = tu_ctx();
    char path[1100];
    snprintf(path, sizeof path, "%s", tu_path("g.h5"));
    float *p;
    write_gpt_run(ctx, path, NULL, &p);
    infl_run *r = NULL;
    cr_assert_eq(store_run_open(ctx, path, &r), INFL_E_FORMAT);
    cr_assert(strstr(infl_ctx_error(ctx), "/model/tokenizer") && strstr(infl_ctx_error(ctx), path), "%s",
              infl_ctx_error(ctx));
    free(p);
    infl_ctx_free(ctx);
}

Test(spec, files_from_before_the_seam_still_read) {
    infl_ctx *ctx = tu_ctx();
    char run[1100], fac[1100];
    snprintf(run, sizeof run, "%s", tu_path("r.h5"));
    snprintf(fac, sizeof fac, "%s", tu_path("f.h5"));
    // a run: /model without `kind`
    const infl_mlp_spec s = {.L = 2, .widths = {4, 5, 3}, .act = INFL_ACT_TANH, .loss = INFL_LOSS_SOFTMAX_CE, .wd = 1e-3};
    size_t P = infl_mlp_nparams(&s);
    float *p = calloc(P, sizeof(float));
    infl_runw *w;
    cr_assert_eq(store_run_create(ctx, run, 1, TU_MS(s), "d.h5:/train", "sgd", 1, &w), INFL_OK);
    cr_assert_eq(store_run_add_checkpoint(ctx, w, 1, 1.0, 0.1, NAN, p), INFL_OK);
    cr_assert_eq(store_run_commit(ctx, w), INFL_OK);
    hid_t f = H5Fopen(run, H5F_ACC_RDWR, H5P_DEFAULT);
    cr_assert(f >= 0 && H5Adelete_by_name(f, "model", "kind", H5P_DEFAULT) >= 0);
    H5Fclose(f);
    infl_run *r;
    cr_assert_eq(store_run_open(ctx, run, &r), INFL_OK, "%s", infl_ctx_error(ctx));
    cr_assert_eq(store_run_spec(r)->kind, INFL_MODEL_MLP);
    cr_assert_eq(store_run_spec(r)->mlp.widths[1], 5);
    store_run_close(r);
    // a factors file: the width chain `layers` instead of d_in, d_out, bias, /layer_names
    infl_model *m;
    cr_assert_eq(infl_model_create(ctx, TU_MS(s), 0, &m), INFL_OK);
    infl_factors *fw;
    cr_assert_eq(infl_factors_alloc(ctx, m->nlayers, m->layer, &fw), INFL_OK);
    snprintf(fw->strategy, sizeof fw->strategy, "identity");
    snprintf(fw->fisher, sizeof fw->fisher, "true");
    for (int l = 0; l < fw->L; l++) {
        int ni = infl_linear_ni(&fw->layer[l]), no = fw->layer[l].d_out;
        for (int i = 0; i < ni; i++) fw->A_vecs[l][i * ni + i] = fw->A_vals[l][i] = 1;
        for (int i = 0; i < no; i++) fw->S_vecs[l][i * no + i] = fw->S_vals[l][i] = 1;
        for (int i = 0; i < ni * no; i++) fw->lambda[l][i] = 0.5 + l;
    }
    cr_assert_eq(store_factors_write(ctx, fac, 1, fw), INFL_OK, "%s", infl_ctx_error(ctx));
    f = H5Fopen(fac, H5F_ACC_RDWR, H5P_DEFAULT);
    cr_assert(f >= 0);
    cr_assert(H5Adelete(f, "d_in") >= 0 && H5Adelete(f, "d_out") >= 0 && H5Adelete(f, "bias") >= 0);
    cr_assert(H5Ldelete(f, "layer_names", H5P_DEFAULT) >= 0);
    hsize_t n = 3;
    int32_t chain[3] = {4, 5, 3};
    hid_t sp = H5Screate_simple(1, &n, NULL), a = H5Acreate2(f, "layers", H5T_STD_I32LE, sp, H5P_DEFAULT, H5P_DEFAULT);
    cr_assert(a >= 0 && H5Awrite(a, H5T_NATIVE_INT32, chain) >= 0);
    H5Aclose(a);
    H5Sclose(sp);
    H5Fclose(f);
    infl_factors *fr;
    cr_assert_eq(store_factors_read(ctx, fac, &fr), INFL_OK, "%s", infl_ctx_error(ctx));
    cr_assert_eq(fr->L, 2);
    cr_assert_eq(ekfac_check_shape(ctx, fr, fac, m), INFL_OK, "%s", infl_ctx_error(ctx));
    cr_assert_eq(fr->lambda[1][3], 1.5);
    // and a factors file of another model is refused, naming both shapes
    const infl_mlp_spec s2 = {.L = 2, .widths = {4, 6, 3}, .act = INFL_ACT_TANH, .loss = INFL_LOSS_SOFTMAX_CE};
    infl_model *m2;
    cr_assert_eq(infl_model_create(ctx, TU_MS(s2), 0, &m2), INFL_OK);
    cr_assert_eq(ekfac_check_shape(ctx, fr, fac, m2), INFL_E_SHAPE);
    cr_assert(strstr(infl_ctx_error(ctx), "4,5,3") && strstr(infl_ctx_error(ctx), "4,6,3"), "%s", infl_ctx_error(ctx));
    infl_model_free(m2);
    infl_factors_free(fw);
    infl_factors_free(fr);
    infl_model_free(m);
    free(p);
    infl_ctx_free(ctx);
}
