"""kronfluence's EK-FAC on an infl run: the peer of `infl fit --strategy ekfac` + `infl rank --method ekfac`.

Factors: strategy "ekfac", true Fisher (labels sampled from the model's own predictive
distribution: kronfluence's default use_empirical_fisher=False), covariance and lambda
over every train row (covariance_max_examples / lambda_max_examples raised to N),
eigendecomposition in float64 (kronfluence's default), bias folded in as a constant-1
input column exactly like infl (kronfluence's TrackedLinear appends ones when the layer
has a bias).

Damping: `--damping auto` passes damping_factor=None, for which kronfluence uses
0.1 * mean(lambda) of each module separately (kronfluence/factor/config.py, class
Ekfac.prepare: `if damping_factor is None: damping_factor = HEURISTIC_DAMPING_SCALE *
torch.mean(lambda_matrix)`, HEURISTIC_DAMPING_SCALE = 0.1 in utils/constants.py; the
lambda matrix there is already divided by the number of examples). That is infl's
`auto`. Note kronfluence's own default is damping_factor=1e-8, not the heuristic.
`--damping V` passes V to every layer.

Scores: pairwise, score(q, z) = sum_l grad_l L_q' P_l grad_l l_z with the query loss
and the train loss both per-example cross-entropy with the data labels (no 1/N, no
minus sign: positive = proponent), which is infl's convention.

    python kronfluence_ekfac.py --run run.h5 --train 'fmnist.h5:/train' \
        --query 'fmnist.h5:/test[0:100]' --damping auto --seed 0 \
        -o kfl_ekfac.npy --times kfl_ekfac.json --workdir /tmp/peers/kronfluence
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
from torch.utils.data import TensorDataset

import kronfluence
from kronfluence.analyzer import Analyzer, prepare_model
from kronfluence.arguments import FactorArguments, ScoreArguments
from kronfluence.task import Task

import export


class ClassificationTask(Task):
    """Per-example cross-entropy, summed over the batch (kronfluence wants sums)."""

    def compute_train_loss(self, batch, model, sample=False):
        x, y = batch
        logits = model(x)
        if sample:  # true Fisher: labels drawn from the model's predictive distribution
            with torch.no_grad():
                y = torch.multinomial(F.softmax(logits.detach(), dim=-1), num_samples=1).flatten()
        return F.cross_entropy(logits, y, reduction="sum")

    def compute_measurement(self, batch, model):
        x, y = batch
        return F.cross_entropy(model(x), y, reduction="sum")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True)
    p.add_argument("--checkpoint", default="final")
    p.add_argument("--train", default=None, help="FILE:/split[a:b] (default: the run's data)")
    p.add_argument("--query", required=True, help="FILE:/split[a:b]")
    p.add_argument("--damping", default="auto", help="auto (0.1 x mean lambda per layer) or a value")
    p.add_argument("--fisher", default="true", choices=["true", "empirical"])
    p.add_argument("--seed", type=int, default=0, help="torch seed for the sampled labels")
    p.add_argument("--fit-batch", type=int, default=512, help="train rows per batch when fitting")
    p.add_argument("--score-batch", type=int, default=512, help="train rows per batch when scoring")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--workdir", default="/tmp/peers/kronfluence", help="kronfluence's output_dir (factors, scores)")
    p.add_argument("--reuse-factors", action="store_true", help="score with factors already in --workdir")
    p.add_argument("-o", "--output", required=True, help="scores .npy [M, N]")
    p.add_argument("--times", help="write the times as JSON")
    a = p.parse_args(argv)

    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    logging.getLogger("kronfluence").setLevel(logging.WARNING)
    t_setup = time.perf_counter()
    run = export.load_run(a.run)
    ck = run.checkpoint(a.checkpoint)
    train_ref = a.train or run.data
    xt, yt, _ = export.load_split(train_ref)
    xq, yq, _ = export.load_split(a.query)
    train_ds = TensorDataset(torch.from_numpy(xt), torch.from_numpy(yt))
    query_ds = TensorDataset(torch.from_numpy(xq), torch.from_numpy(yq))
    model = export.build_model(run, ck).eval()
    task = ClassificationTask()
    model = prepare_model(model, task)
    analyzer = Analyzer(analysis_name="infl_peers", model=model, task=task, cpu=True, output_dir=a.workdir,
                        disable_tqdm=True, disable_model_save=True)
    N = len(train_ds)
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
                                     train_dataset=train_ds, per_device_query_batch_size=len(query_ds),
                                     per_device_train_batch_size=a.score_batch, score_args=score_args,
                                     overwrite_output_dir=True)
    score_s, score_cpu = time.perf_counter() - t0, time.process_time() - c0
    scores = analyzer.load_pairwise_scores("ekfac_scores")["all_modules"].float().numpy()
    assert scores.shape == (len(yq), N), scores.shape
    np.save(a.output, scores)

    phases, cpu = {"score": score_s}, {"score": score_cpu}
    if fit_s is not None:
        phases, cpu = {"fit": fit_s, "score": score_s}, {"fit": fit_cpu, "score": score_cpu}
    times = {
        "tool": "kronfluence", "method": "ekfac", "version": kronfluence.__version__, "torch": torch.__version__,
        "threads": torch.get_num_threads(), "M": int(len(yq)), "N": int(N), "checkpoint": ck.name,
        "damping": a.damping, "fisher": a.fisher, "seed": a.seed, "fit_batch": a.fit_batch,
        "score_batch": a.score_batch, "setup_s": setup_s, "phases": phases, "total_s": sum(phases.values()),
        "cpu_s": cpu, "load_avg": os.getloadavg(),
        "what": "fit = Analyzer.fit_all_factors (covariances, float64 eigendecompositions, eigenvalue-corrected "
                "lambdas; writes them to --workdir); score = compute_pairwise_scores (query gradients, "
                "preconditioning, per-sample train gradients, dot products; writes the [M,N] scores to --workdir); "
                "excludes imports, reading HDF5 and building the model/Analyzer (setup_s) and loading the scores back",
        "python": platform.python_version(),
    }
    if a.times:
        with open(a.times, "w") as f:
            json.dump(times, f, indent=1)
    print(f"kronfluence EK-FAC: {len(yq)} queries x {N} train at {ck.name}, damping {a.damping}: setup {setup_s:.2f} s, "
          + (f"fit {fit_s:.2f} s, " if fit_s is not None else "") + f"scoring {score_s:.2f} s -> {a.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
