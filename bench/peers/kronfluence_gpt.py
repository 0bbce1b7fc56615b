"""kronfluence's EK-FAC on an infl GPT run: the peer of `infl fit` + `infl rank --method ekfac` over token documents.

The model is export_gpt.py's PyTorch copy of the run (checked against `infl eval`).
Attributed layers: infl's, the four linears of every block (h.{i}.attn.c_attn C->3C,
h.{i}.attn.c_proj C->C, h.{i}.mlp.c_fc C->4C, h.{i}.mlp.c_proj 4C->C), with their
biases (kronfluence's TrackedLinear appends a constant-1 input column, as infl's
a~ = [a; 1] does); not the tied head (F.linear on wte, no module), not the embeddings or
LayerNorms (Task.get_influence_tracked_modules).

Loss of a document: the sum over its positions of the next-token cross-entropy; a
batch's train loss is the sum over its documents (kronfluence wants sums). Padding
positions carry no loss (ignore_index) and are masked out of the activation covariance
by Task.get_attention_mask (kronfluence zeroes the masked rows of A, their bias column
included, and counts only the real tokens); their output gradients are exactly 0, since
attention is causal and the padding comes after every real position, so neither S, the
per-document gradients nor the scores see them. Covariances are token-level (sums of
a aT and g gT over the real tokens / their count); Lambda is per document (per-document
gradients rotated into the eigenbasis, squared, summed, / N). The scale of A and S does
not matter for EK-FAC: only their eigenvectors are used.

--fisher empirical: the data's next tokens (use_empirical_fisher=True); true: targets
drawn from the model at every real position (torch.multinomial under torch.manual_seed).
--damping V: V added to every layer's Lambda/N; auto: 0.1 x mean(Lambda/N) per layer
(damping_factor=None). infl's convention is the same (lambda added to the eigenvalues
Lambda of each layer); a GPT run's objective has no weight-decay term (AdamW's decay is
decoupled: infl_spec_objective_wd is 0), so there is nothing else to add.

Measurement of a query: the same summed cross-entropy over the query document; with
--prompt-len P, only over the completion (positions whose targets are t_P, ..., EOT).

Scores: pairwise [M, N], score(q, z) = grad L_q' (G + lambda)^-1 grad l_z (no 1/N, no
minus sign: positive = proponent), infl's convention.

    python kronfluence_gpt.py --run gpt.h5 --train 'fortunes.h5:/train[0:2000]' \
        --query 'fortunes.h5:/test[0:8]' --fisher empirical --damping 1e-3 --threads 2 \
        -o kfl_gpt.npy --times kfl_gpt.json --workdir /tmp/peers/kronfluence-gpt
"""

import argparse
import json
import logging
import os
import platform
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

import kronfluence
from kronfluence.analyzer import Analyzer, prepare_model
from kronfluence.arguments import FactorArguments, ScoreArguments
from kronfluence.task import Task
from kronfluence.utils.dataset import DataLoaderKwargs

import export_gpt
from export_gpt import IGNORE


class NextTokenTask(Task):
    """Summed next-token cross-entropy over the real positions of a batch of documents."""

    def __init__(self, modules):
        self.modules = modules

    def compute_train_loss(self, batch, model, sample=False):
        logits = model(batch["input_ids"])
        logits = logits.reshape(-1, logits.shape[-1])
        tgt = batch["labels"].reshape(-1)
        if sample:  # true Fisher: a target drawn from the model at each real position
            with torch.no_grad():
                drawn = torch.multinomial(F.softmax(logits.detach(), dim=-1), num_samples=1).flatten()
                tgt = torch.where(tgt != IGNORE, drawn, tgt)
        return F.cross_entropy(logits, tgt, ignore_index=IGNORE, reduction="sum")

    def compute_measurement(self, batch, model):
        logits = model(batch["input_ids"])
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch["labels"].reshape(-1),
                               ignore_index=IGNORE, reduction="sum")

    def get_influence_tracked_modules(self):
        return self.modules

    def get_attention_mask(self, batch):
        return batch["mask"]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True)
    p.add_argument("--checkpoint", default="final")
    p.add_argument("--train", default=None, help="FILE:/split[a:b] (default: the run's data)")
    p.add_argument("--query", required=True, help="FILE:/split[a:b]")
    p.add_argument("--prompt-len", type=int, default=0,
                   help="measure only the completion: the loss at positions whose targets are t_P and later")
    p.add_argument("--damping", default="auto", help="auto (0.1 x mean lambda per layer) or a value")
    p.add_argument("--fisher", default="empirical", choices=["true", "empirical"])
    p.add_argument("--seed", type=int, default=0, help="torch seed for the sampled targets (true Fisher)")
    p.add_argument("--fit-batch", type=int, default=32, help="documents per batch when fitting")
    p.add_argument("--score-batch", type=int, default=32, help="train documents per batch when scoring")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--workdir", default="/tmp/peers/kronfluence-gpt", help="kronfluence's output_dir (factors, scores)")
    p.add_argument("--reuse-factors", action="store_true", help="score with factors already in --workdir")
    p.add_argument("-o", "--output", required=True, help="scores .npy [M, N]")
    p.add_argument("--times", help="write the times as JSON")
    a = p.parse_args(argv)

    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    logging.getLogger("kronfluence").setLevel(logging.WARNING)
    t_setup = time.perf_counter()
    run = export_gpt.load_gpt_run(a.run)
    model, ck = export_gpt.build_gpt(run, a.checkpoint)
    model.eval()
    train_ref = a.train or run.data
    train_docs, _ = export_gpt.load_docs(train_ref)
    query_docs, _ = export_gpt.load_docs(a.query)
    train_ds = export_gpt.DocDataset(train_docs, run.context, run.eot)
    query_ds = export_gpt.DocDataset(query_docs, run.context, run.eot, a.prompt_len)
    modules = export_gpt.attributed_modules(run)
    task = NextTokenTask(modules)
    model = prepare_model(model, task)
    analyzer = Analyzer(analysis_name="infl_peers_gpt", model=model, task=task, cpu=True, output_dir=a.workdir,
                        disable_tqdm=True, disable_model_save=True)
    analyzer.set_dataloader_kwargs(DataLoaderKwargs(collate_fn=export_gpt.collate(run.eot)))
    N, M = len(train_ds), len(query_ds)
    factor_args = FactorArguments(strategy="ekfac", use_empirical_fisher=(a.fisher == "empirical"),
                                  covariance_max_examples=N, lambda_max_examples=N)
    damping = None if a.damping == "auto" else float(a.damping)
    score_args = ScoreArguments(damping_factor=damping)
    setup_s = time.perf_counter() - t_setup

    fit_s = fit_cpu = None
    if not a.reuse_factors:
        t0, c0 = time.perf_counter(), time.process_time()
        analyzer.fit_all_factors(factors_name="ekfac", dataset=train_ds, per_device_batch_size=a.fit_batch,
                                 factor_args=factor_args, overwrite_output_dir=True)
        fit_s, fit_cpu = time.perf_counter() - t0, time.process_time() - c0

    t0, c0 = time.perf_counter(), time.process_time()
    analyzer.compute_pairwise_scores(scores_name="ekfac_scores", factors_name="ekfac", query_dataset=query_ds,
                                     train_dataset=train_ds, per_device_query_batch_size=M,
                                     per_device_train_batch_size=a.score_batch, score_args=score_args,
                                     overwrite_output_dir=True)
    score_s, score_cpu = time.perf_counter() - t0, time.process_time() - c0
    scores = analyzer.load_pairwise_scores("ekfac_scores")["all_modules"].float().numpy()
    assert scores.shape == (M, N), scores.shape
    np.save(a.output, scores)

    phases, cpu = {"score": score_s}, {"score": score_cpu}
    if fit_s is not None:
        phases, cpu = {"fit": fit_s, "score": score_s}, {"fit": fit_cpu, "score": score_cpu}
    ntok = sum(len(x) for x, _ in train_ds)
    times = {
        "tool": "kronfluence", "method": "ekfac", "model": "gpt", "version": kronfluence.__version__,
        "torch": torch.__version__, "threads": torch.get_num_threads(), "M": M, "N": N, "train_tokens": ntok,
        "checkpoint": ck, "modules": modules, "damping": a.damping, "fisher": a.fisher, "seed": a.seed,
        "prompt_len": a.prompt_len, "fit_batch": a.fit_batch, "score_batch": a.score_batch, "setup_s": setup_s,
        "phases": phases, "total_s": sum(phases.values()), "cpu_s": cpu, "load_avg": os.getloadavg(),
        "what": "fit = Analyzer.fit_all_factors (token-level covariances, float64 eigendecompositions, "
                "eigenvalue-corrected lambdas over per-document gradients; writes them to --workdir); score = "
                "compute_pairwise_scores (query gradients, preconditioning, per-document train gradients, dot "
                "products; writes the [M,N] scores to --workdir); excludes imports, reading HDF5 and building the "
                "model/Analyzer (setup_s) and loading the scores back",
        "python": platform.python_version(),
    }
    if a.times:
        with open(a.times, "w") as f:
            json.dump(times, f, indent=1)
    print(f"kronfluence EK-FAC (gpt): {M} queries x {N} train documents ({ntok} positions) at {ck}, {a.fisher} Fisher, "
          f"damping {a.damping}: setup {setup_s:.2f} s, " + (f"fit {fit_s:.2f} s, " if fit_s is not None else "")
          + f"scoring {score_s:.2f} s -> {a.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
