"""_cdefs.py — the ctypes mirror of include/infl.h, written by python/gen_cdefs.py.

Do not edit: run `python3 python/gen_cdefs.py include/infl.h > python/infl/_cdefs.py`.
"""
# flake8: noqa
from ctypes import (CFUNCTYPE, POINTER, Structure, c_char, c_char_p, c_double, c_float, c_int,
                    c_int32, c_int64, c_size_t, c_uint, c_uint32, c_uint64, c_void_p)

VERSION = (0, 1, 0)
INFL_FORMAT_VERSION = 1
INFL_MAX_LAYERS = 16

# enum name -> [(constant, value)], in the header's order
ENUMS = {
    'infl_status': [
        ('INFL_OK', 0),
        ('INFL_E_NOMEM', -1),
        ('INFL_E_ARG', -2),
        ('INFL_E_IO', -3),
        ('INFL_E_FORMAT', -4),
        ('INFL_E_SHAPE', -5),
        ('INFL_E_VALUE', -6),
        ('INFL_E_EXISTS', -7),
        ('INFL_E_BACKEND', -8),
        ('INFL_E_NUMERIC', -9),
        ('INFL_E_UNSUPPORTED', -10),
        ('INFL_E_INTERRUPTED', -11),
        ('INFL_E_INTERNAL', -12),
    ],
    'infl_activation': [
        ('INFL_ACT_RELU', 0),
        ('INFL_ACT_TANH', 1),
        ('INFL_ACT_GELU', 2),
    ],
    'infl_loss': [
        ('INFL_LOSS_SOFTMAX_CE', 0),
        ('INFL_LOSS_SIGMOID_CE', 1),
        ('INFL_LOSS_MSE', 2),
    ],
    'infl_schedule': [
        ('INFL_SCHED_CONSTANT', 0),
        ('INFL_SCHED_COSINE', 1),
    ],
    'infl_optimizer': [
        ('INFL_OPT_AUTO', 0),
        ('INFL_OPT_SGD', 1),
        ('INFL_OPT_NEWTON', 2),
    ],
    'infl_model_kind': [
        ('INFL_MODEL_MLP', 0),
        ('INFL_MODEL_GPT', 1),
        ('INFL_MODEL_CAPTURED', 2),
    ],
    'infl_projection': [
        ('INFL_PROJ_GAUSSIAN', 0),
        ('INFL_PROJ_RADEMACHER', 1),
        ('INFL_PROJ_KRON', 2),
    ],
    'infl_method': [
        ('INFL_METHOD_GRADDOT', 0),
        ('INFL_METHOD_GRADCOS', 1),
        ('INFL_METHOD_TRACIN', 2),
        ('INFL_METHOD_IF', 3),
        ('INFL_METHOD_EKFAC', 4),
        ('INFL_METHOD_KFAC', 5),
        ('INFL_METHOD_DIAGONAL', 6),
        ('INFL_METHOD_REPRESENTER', 7),
        ('INFL_METHOD_SGD_INFLUENCE', 8),
        ('INFL_METHOD_TRAK', 9),
    ],
    'infl_strategy': [
        ('INFL_STRATEGY_EKFAC', 0),
        ('INFL_STRATEGY_KFAC', 1),
        ('INFL_STRATEGY_DIAGONAL', 2),
        ('INFL_STRATEGY_IDENTITY', 3),
    ],
    'infl_shapley_method': [
        ('INFL_SHAPLEY_TMC', 0),
        ('INFL_SHAPLEY_GSHAPLEY', 1),
        ('INFL_SHAPLEY_KNN', 2),
        ('INFL_SHAPLEY_EXACT', 3),
    ],
}

infl_progress_fn = CFUNCTYPE(None, c_void_p, c_char_p, c_uint64, c_uint64, c_char_p)
infl_comm_agree_fn = CFUNCTYPE(c_int, c_void_p, POINTER(c_int), c_char_p, c_size_t)
infl_comm_sum_f64_fn = CFUNCTYPE(c_int, c_void_p, POINTER(c_double), c_size_t)
infl_comm_sum_i64_fn = CFUNCTYPE(c_int, c_void_p, POINTER(c_int64), c_size_t)
infl_comm_bcast_fn = CFUNCTYPE(c_int, c_void_p, c_void_p, c_size_t, c_int)
infl_comm_take_fn = CFUNCTYPE(c_int, c_void_p, c_int, c_void_p)
infl_comm_gather_fn = CFUNCTYPE(c_int, c_void_p, c_void_p, c_size_t, c_int, infl_comm_take_fn, c_void_p)

class infl_ctx_options(Structure):
    pass


class infl_comm(Structure):
    pass


class infl_dataref(Structure):
    pass


class infl_import_fmnist_options(Structure):
    pass


class infl_import_csv_options(Structure):
    pass


class infl_import_text_options(Structure):
    pass


class infl_import_text_result(Structure):
    pass


class infl_train_options(Structure):
    pass


class infl_train_report(Structure):
    pass


class infl_eval_result(Structure):
    pass


class infl_generate_options(Structure):
    pass


class infl_generate_result(Structure):
    pass


class infl_index_options(Structure):
    pass


class infl_index_report(Structure):
    pass


class infl_rank_options(Structure):
    pass


class infl_token_shares(Structure):
    pass


class infl_representer_fit(Structure):
    pass


class infl_rank_result(Structure):
    pass


class infl_self_result(Structure):
    pass


class infl_loo_options(Structure):
    pass


class infl_loo_result(Structure):
    pass


class infl_fit_options(Structure):
    pass


class infl_fit_report(Structure):
    pass


class infl_lds_options(Structure):
    pass


class infl_lds_result(Structure):
    pass


class infl_debug_options(Structure):
    pass


class infl_debug_result(Structure):
    pass


class infl_compare_result(Structure):
    pass


class infl_shapley_options(Structure):
    pass


class infl_shapley_result(Structure):
    pass


infl_ctx_options._fields_ = [
    ('backend', c_char_p),
    ('threads', c_int),
    ('deterministic', c_int),
]
infl_comm._fields_ = [
    ('rank', c_int),
    ('size', c_int),
    ('user', c_void_p),
    ('agree', infl_comm_agree_fn),
    ('sum_f64', infl_comm_sum_f64_fn),
    ('sum_i64', infl_comm_sum_i64_fn),
    ('bcast', infl_comm_bcast_fn),
    ('gather', infl_comm_gather_fn),
]
infl_dataref._fields_ = [
    ('path', (c_char * 4096)),
    ('split', (c_char * 256)),
    ('begin', c_int64),
    ('end', c_int64),
]
infl_import_fmnist_options._fields_ = [
    ('dir', c_char_p),
    ('limit', c_int64),
    ('flip_labels', c_double),
    ('seed', c_uint64),
    ('pool', c_int),
    ('force', c_int),
]
infl_import_csv_options._fields_ = [
    ('label', c_char_p),
    ('delimiter', c_char),
    ('header', c_int),
    ('regression', c_int),
    ('test_fraction', c_double),
    ('seed', c_uint64),
    ('force', c_int),
]
infl_import_text_options._fields_ = [
    ('dir', c_char_p),
    ('files', POINTER(c_char_p)),
    ('nfiles', c_int),
    ('sep', c_char_p),
    ('bpe_vocab', c_int),
    ('max_len', c_int64),
    ('limit', c_int64),
    ('test_fraction', c_double),
    ('seed', c_uint64),
    ('force', c_int),
]
infl_import_text_result._fields_ = [
    ('docs_train', c_int64),
    ('docs_test', c_int64),
    ('tokens_train', c_int64),
    ('tokens_test', c_int64),
    ('bytes_train', c_int64),
    ('bytes_test', c_int64),
    ('empty', c_int64),
    ('truncated', c_int64),
    ('longest', c_int64),
    ('files', c_int),
    ('classes', c_int),
    ('vocab', c_int),
    ('bpe', c_int),
    ('unigram_bits', c_double),
    ('unigram_nats', c_double),
    ('byte_unigram_bits', c_double),
    ('seconds_learn', c_double),
    ('seconds', c_double),
]
infl_train_options._fields_ = [
    ('data', c_char_p),
    ('model', c_int),
    ('nlayers', c_int),
    ('widths', (c_int * 17)),
    ('activation', c_int),
    ('loss', c_int),
    ('optimizer', c_int),
    ('epochs', c_int),
    ('batch', c_int),
    ('lr', c_double),
    ('momentum', c_double),
    ('weight_decay', c_double),
    ('schedule', c_int),
    ('seed', c_uint64),
    ('checkpoint_every', c_int),
    ('shard_rows', c_int64),
    ('shard_mb', c_double),
    ('tol', c_double),
    ('max_iters', c_int),
    ('subset_fraction', c_double),
    ('subset_seed', c_uint64),
    ('subset_draw', c_int),
    ('exclude', POINTER(c_int64)),
    ('nexclude', c_int64),
    ('force', c_int),
    ('heads', c_int),
    ('dim', c_int),
    ('context', c_int),
    ('beta1', c_double),
    ('beta2', c_double),
    ('adam_eps', c_double),
    ('clip', c_double),
    ('warmup', c_int),
]
infl_train_report._fields_ = [
    ('steps', c_int64),
    ('checkpoints', c_int),
    ('final_loss', c_double),
    ('grad_norm', c_double),
    ('seconds', c_double),
    ('examples_per_s', c_double),
    ('tokens', c_int64),
    ('tokens_per_s', c_double),
    ('flops', c_double),
    ('truncated', c_int64),
    ('diverged', c_int),
    ('diverged_step', c_int64),
]
infl_eval_result._fields_ = [
    ('n', c_int64),
    ('loss', c_double),
    ('accuracy', c_double),
    ('tokens', c_int64),
    ('perplexity', c_double),
    ('truncated', c_int64),
]
infl_generate_options._fields_ = [
    ('run', c_char_p),
    ('checkpoint', c_char_p),
    ('prompt', c_char_p),
    ('tokens', c_int),
    ('temperature', c_double),
    ('top_k', c_int),
    ('seed', c_uint64),
]
infl_generate_result._fields_ = [
    ('completion', c_char_p),
    ('length', c_size_t),
    ('prompt_tokens', c_int),
    ('tokens', c_int),
    ('ended', c_int),
]
infl_index_options._fields_ = [
    ('run', c_char_p),
    ('train', c_char_p),
    ('checkpoints', c_char_p),
    ('projection', c_int),
    ('dim', c_int),
    ('kron_out', c_int),
    ('kron_in', c_int),
    ('seed', c_uint64),
    ('float16', c_int),
    ('shard_rows', c_int64),
    ('shard_mb', c_double),
    ('force', c_int),
]
infl_index_report._fields_ = [
    ('N', c_int64),
    ('k', c_int),
    ('checkpoints', c_int),
    ('resumed_rows', c_int64),
    ('seconds', c_double),
    ('seconds_wait', c_double),
    ('flops_project', c_double),
    ('flops_fb', c_double),
    ('bytes_per_example', c_double),
]
infl_rank_options._fields_ = [
    ('run', c_char_p),
    ('train', c_char_p),
    ('query', c_char_p),
    ('method', c_int),
    ('checkpoint', c_char_p),
    ('checkpoints', c_char_p),
    ('top', c_int),
    ('hessian', c_int),
    ('solver', c_int),
    ('damping', c_double),
    ('damping_auto', c_int),
    ('damping_factor', c_double),
    ('factors', c_char_p),
    ('query_rank', c_int),
    ('hessian_samples', c_int64),
    ('cg_iters', c_int),
    ('cg_tol', c_double),
    ('lissa_depth', c_int),
    ('lissa_scale', c_double),
    ('lissa_repeats', c_int),
    ('seed', c_uint64),
    ('shard_rows', c_int64),
    ('shard_mb', c_double),
    ('output', c_char_p),
    ('save_scores', c_int),
    ('force', c_int),
    ('ntext', c_int),
    ('prompt', POINTER(c_char_p)),
    ('completion', POINTER(c_char_p)),
    ('complete_tokens', c_int),
    ('token_shares', c_int),
    ('prefilter_bm25', c_int),
    ('rerank', c_int),
    ('score_form', c_int),
    ('representer_lambda', c_double),
    ('representer_class', c_int),
    ('index', c_char_p),
    ('prefilter_knn', c_int),
    ('knn_features', c_int),
    ('query_rows', POINTER(c_int64)),
    ('nquery_rows', c_int),
    ('sgd_variant', c_int),
    ('sgd_segment', c_int),
]
infl_token_shares._fields_ = [
    ('n', c_int),
    ('token', POINTER(c_int32)),
    ('share', POINTER(c_float)),
]
infl_representer_fit._fields_ = [
    ('lambda', c_double),
    ('grad_norm', c_double),
    ('decomposition_bound', c_double),
    ('iters', c_int),
    ('cg_iters', c_int),
    ('seconds', c_double),
    ('n', c_int64),
    ('train_pearson', c_double),
    ('train_acc_before', c_double),
    ('train_acc_after', c_double),
    ('query_pearson', c_double),
    ('query_acc_before', c_double),
    ('query_acc_after', c_double),
]
infl_rank_result._fields_ = [
    ('M', c_int),
    ('k', c_int),
    ('N', c_int64),
    ('query_begin', c_int64),
    ('top_index', POINTER(c_int64)),
    ('top_score', POINTER(c_float)),
    ('bottom_index', POINTER(c_int64)),
    ('bottom_score', POINTER(c_float)),
    ('query_label', POINTER(c_int32)),
    ('query_pred', POINTER(c_int32)),
    ('query_loss', POINTER(c_double)),
    ('checkpoints', c_int),
    ('seconds_prepare', c_double),
    ('seconds_score', c_double),
    ('seconds_wait', c_double),
    ('seconds_rerank', c_double),
    ('flops', c_double),
    ('query_rank_energy', c_double),
    ('layers', c_int),
    ('layer_damping', POINTER(c_double)),
    ('layer_mean_eigenvalue', POINTER(c_double)),
    ('weight_decay', c_double),
    ('query_prompt', POINTER(c_char_p)),
    ('query_completion', POINTER(c_char_p)),
    ('top_shares', POINTER(infl_token_shares)),
    ('bottom_shares', POINTER(infl_token_shares)),
    ('seconds_prefilter', c_double),
    ('candidates', c_int64),
    ('layer_paths', c_int),
    ('layer_path', POINTER(c_int)),
    ('representer', infl_representer_fit),
    ('query_class', POINTER(c_int32)),
    ('query_logit', POINTER(c_double)),
    ('sgd_steps', c_int64),
    ('sgd_segment', c_int),
    ('sgd_replay_dev', c_double),
    ('seconds_replay', c_double),
]
infl_self_result._fields_ = [
    ('N', c_int64),
    ('self', POINTER(c_float)),
    ('order', POINTER(c_int64)),
    ('has_flipped', c_int),
    ('flipped', c_int64),
    ('recall', (c_double * 3)),
    ('seconds', c_double),
    ('representer', infl_representer_fit),
]
infl_loo_options._fields_ = [
    ('remove_top', c_int),
    ('remove_bottom', c_int),
    ('remove_random', c_int),
    ('tol', c_double),
]
infl_loo_result._fields_ = [
    ('n', c_int),
    ('query', POINTER(c_int32)),
    ('query_begin', c_int64),
    ('removed', POINTER(c_int64)),
    ('predicted', POINTER(c_double)),
    ('actual', POINTER(c_double)),
    ('pearson', c_double),
    ('spearman', c_double),
    ('seconds', c_double),
]
infl_fit_options._fields_ = [
    ('run', c_char_p),
    ('checkpoint', c_char_p),
    ('data', c_char_p),
    ('strategy', c_int),
    ('fisher_empirical', c_int),
    ('seed', c_uint64),
    ('samples', c_int),
    ('shard_rows', c_int64),
    ('shard_mb', c_double),
    ('force', c_int),
]
infl_fit_report._fields_ = [
    ('examples', c_int64),
    ('seconds_cov', c_double),
    ('seconds_eig', c_double),
    ('seconds_lambda', c_double),
    ('flops_cov', c_double),
    ('flops_lambda', c_double),
    ('seconds_wait', c_double),
]
infl_lds_options._fields_ = [
    ('run', c_char_p),
    ('query', c_char_p),
    ('state', c_char_p),
    ('models', c_int),
    ('fraction', c_double),
    ('seed', c_uint64),
    ('output_margin', c_int),
    ('epochs', c_int),
    ('scores', POINTER(c_char_p)),
    ('nscores', c_int),
    ('force', c_int),
]
infl_lds_result._fields_ = [
    ('models', c_int),
    ('trained_now', c_int),
    ('M', c_int),
    ('outputs', POINTER(c_double)),
    ('nmethods', c_int),
    ('method', POINTER(c_char * 64)),
    ('lds', POINTER(c_double)),
    ('ci', POINTER(c_double)),
    ('per_query', POINTER(c_double)),
    ('valid', POINTER(c_int)),
    ('seconds_train', c_double),
]
infl_debug_options._fields_ = [
    ('rank', infl_rank_options),
    ('val', c_char_p),
    ('test', c_char_p),
    ('fix', c_int),
    ('per_example', c_int),
    ('random', c_int),
    ('seed', c_uint64),
    ('epochs', c_int),
    ('keep_prefix', c_char_p),
    ('force', c_int),
]
infl_debug_result._fields_ = [
    ('val_n', c_int64),
    ('val_wrong', c_int64),
    ('M', c_int),
    ('fixed', POINTER(c_int64)),
    ('nremoved', c_int64),
    ('removed', POINTER(c_int64)),
    ('before_fixed', c_double),
    ('after_fixed', c_double),
    ('before_test', c_double),
    ('after_test', c_double),
    ('nrandom', c_int),
    ('random_fixed', POINTER(c_double)),
    ('random_test', POINTER(c_double)),
    ('seconds_rank', c_double),
    ('seconds_train', c_double),
    ('test', (c_char * 4400)),
]
infl_compare_result._fields_ = [
    ('M', c_int),
    ('N', c_int64),
    ('k', c_int),
    ('pearson', POINTER(c_double)),
    ('spearman', POINTER(c_double)),
    ('top_overlap', POINTER(c_double)),
    ('bottom_overlap', POINTER(c_double)),
    ('mean_pearson', c_double),
    ('mean_spearman', c_double),
    ('mean_top', c_double),
    ('mean_bottom', c_double),
    ('method_a', (c_char * 64)),
    ('method_b', (c_char * 64)),
]
infl_shapley_options._fields_ = [
    ('train', c_char_p),
    ('valid', c_char_p),
    ('test', c_char_p),
    ('method', c_int),
    ('utility_loss', c_int),
    ('model_mlp', c_int),
    ('hidden', c_int),
    ('epochs', c_int),
    ('weight_decay', c_double),
    ('lr', c_double),
    ('newton_tol', c_double),
    ('run', c_char_p),
    ('checkpoint', c_char_p),
    ('permutations', c_int),
    ('tolerance', c_double),
    ('converge', c_double),
    ('window', c_int),
    ('knn_k', c_int),
    ('seed', c_uint64),
    ('threads', c_int),
    ('state', c_char_p),
    ('output', c_char_p),
    ('curve_points', c_int),
    ('curve_max', c_double),
    ('shard_rows', c_int64),
    ('shard_mb', c_double),
    ('block_mb', c_double),
    ('log', c_void_p),
    ('force', c_int),
]
infl_shapley_result._fields_ = [
    ('n', c_int64),
    ('begin', c_int64),
    ('classes', c_int),
    ('features', c_int64),
    ('values', POINTER(c_double)),
    ('se', POINTER(c_double)),
    ('label', POINTER(c_int32)),
    ('order', POINTER(c_int64)),
    ('flipped', POINTER(c_int32)),
    ('nflipped', c_int64),
    ('recall', (c_double * 2)),
    ('permutations', c_int),
    ('permutations_now', c_int),
    ('fits', c_int64),
    ('truncated', c_double),
    ('convergence', c_double),
    ('u_all', c_double),
    ('u_empty', c_double),
    ('sum', c_double),
    ('lr', c_double),
    ('curve_points', c_int),
    ('curve_fraction', POINTER(c_double)),
    ('curve_high', POINTER(c_double)),
    ('curve_low', POINTER(c_double)),
    ('curve_random', POINTER(c_double)),
    ('seconds', c_double),
    ('seconds_curves', c_double),
]

STRUCTS = [infl_ctx_options, infl_comm, infl_dataref, infl_import_fmnist_options, infl_import_csv_options, infl_import_text_options, infl_import_text_result, infl_train_options, infl_train_report, infl_eval_result, infl_generate_options, infl_generate_result, infl_index_options, infl_index_report, infl_rank_options, infl_token_shares, infl_representer_fit, infl_rank_result, infl_self_result, infl_loo_options, infl_loo_result, infl_fit_options, infl_fit_report, infl_lds_options, infl_lds_result, infl_debug_options, infl_debug_result, infl_compare_result, infl_shapley_options, infl_shapley_result]

# function -> (restype, argtypes)
FUNCTIONS = {
    'infl_version_number': (c_uint, []),
    'infl_version_string': (c_char_p, []),
    'infl_build_info': (c_char_p, []),
    'infl_status_name': (c_char_p, [c_int]),
    'infl_status_str': (c_char_p, [c_int]),
    'infl_ctx_options_default': (infl_ctx_options, []),
    'infl_ctx_create': (c_int, [POINTER(infl_ctx_options), POINTER(c_void_p)]),
    'infl_ctx_free': (None, [c_void_p]),
    'infl_ctx_error': (c_char_p, [c_void_p]),
    'infl_ctx_backend': (c_char_p, [c_void_p]),
    'infl_ctx_backend_note': (c_char_p, [c_void_p]),
    'infl_ctx_notes': (c_char_p, [c_void_p]),
    'infl_ctx_clear_notes': (None, [c_void_p]),
    'infl_ctx_set_progress': (None, [c_void_p, infl_progress_fn, c_void_p]),
    'infl_ctx_set_cancel': (None, [c_void_p, POINTER(c_int)]),
    'infl_ctx_set_comm': (None, [c_void_p, POINTER(infl_comm)]),
    'infl_dataref_parse': (c_int, [c_void_p, c_char_p, POINTER(infl_dataref)]),
    'infl_import_fmnist_options_default': (infl_import_fmnist_options, []),
    'infl_import_fashion_mnist': (c_int, [c_void_p, POINTER(infl_import_fmnist_options), c_char_p]),
    'infl_import_csv_options_default': (infl_import_csv_options, []),
    'infl_import_csv': (c_int, [c_void_p, c_char_p, POINTER(infl_import_csv_options), c_char_p]),
    'infl_import_text_options_default': (infl_import_text_options, []),
    'infl_import_text': (c_int, [c_void_p, POINTER(infl_import_text_options), c_char_p, POINTER(infl_import_text_result)]),
    'infl_train_options_default': (infl_train_options, []),
    'infl_train_options_gpt_default': (infl_train_options, []),
    'infl_train': (c_int, [c_void_p, POINTER(infl_train_options), c_char_p, POINTER(infl_train_report)]),
    'infl_eval': (c_int, [c_void_p, c_char_p, c_char_p, c_char_p, POINTER(infl_eval_result)]),
    'infl_generate_options_default': (infl_generate_options, []),
    'infl_generate': (c_int, [c_void_p, POINTER(infl_generate_options), POINTER(POINTER(infl_generate_result))]),
    'infl_generate_result_free': (None, [POINTER(infl_generate_result)]),
    'infl_projection_name': (c_char_p, [c_int]),
    'infl_index_options_default': (infl_index_options, []),
    'infl_index': (c_int, [c_void_p, POINTER(infl_index_options), c_char_p, POINTER(infl_index_report)]),
    'infl_method_name': (c_char_p, [c_int]),
    'infl_rank_options_default': (infl_rank_options, []),
    'infl_rank': (c_int, [c_void_p, POINTER(infl_rank_options), POINTER(POINTER(infl_rank_result))]),
    'infl_rank_result_free': (None, [POINTER(infl_rank_result)]),
    'infl_self': (c_int, [c_void_p, POINTER(infl_rank_options), POINTER(POINTER(infl_self_result))]),
    'infl_self_result_free': (None, [POINTER(infl_self_result)]),
    'infl_loo_options_default': (infl_loo_options, []),
    'infl_loo': (c_int, [c_void_p, POINTER(infl_rank_options), POINTER(infl_loo_options), POINTER(POINTER(infl_loo_result))]),
    'infl_loo_result_free': (None, [POINTER(infl_loo_result)]),
    'infl_fit_options_default': (infl_fit_options, []),
    'infl_fit': (c_int, [c_void_p, POINTER(infl_fit_options), c_char_p, POINTER(infl_fit_report)]),
    'infl_lds_options_default': (infl_lds_options, []),
    'infl_lds': (c_int, [c_void_p, POINTER(infl_lds_options), POINTER(POINTER(infl_lds_result))]),
    'infl_lds_result_free': (None, [POINTER(infl_lds_result)]),
    'infl_debug_options_default': (infl_debug_options, []),
    'infl_debug': (c_int, [c_void_p, POINTER(infl_debug_options), POINTER(POINTER(infl_debug_result))]),
    'infl_debug_result_free': (None, [POINTER(infl_debug_result)]),
    'infl_compare': (c_int, [c_void_p, c_char_p, c_char_p, c_int, POINTER(POINTER(infl_compare_result))]),
    'infl_compare_result_free': (None, [POINTER(infl_compare_result)]),
    'infl_shapley_method_name': (c_char_p, [c_int]),
    'infl_shapley_options_default': (infl_shapley_options, []),
    'infl_shapley': (c_int, [c_void_p, POINTER(infl_shapley_options), POINTER(POINTER(infl_shapley_result))]),
    'infl_shapley_result_free': (None, [POINTER(infl_shapley_result)]),
    'infl_info': (c_int, [c_void_p, c_char_p, c_void_p]),
}
