"""The cell model on torch tensors: :class:`TorchBench` (``make_bench(..., backend="torch")``).

The same device model as :mod:`analogmem.emulator.reference` (README, "Device cards") — programming
noise (polynomial, or the empirical quantile-function channel in the card's input domain),
stuck-at faults, a drift exponent ν ~ |N(μ_ν, σ_ν)| drawn once per cell, relaxation
(polynomial or tabulated in x, linear in ln t, held outside the published times), the PCM
accumulated 1/f read noise, program-and-verify (tolerance windows with a re-draw per pulse,
or the card's pulse-response model) — with the per-cell state kept as torch tensors on
``torch_device`` (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...), for users whose weights already
live there: targets may be given as tensors on that device and reads come back as tensors on
it, with no round trip through numpy.

Randomness: every operation (the stuck-at draw when the bench is made, each ``program``,
each ``read``) spawns one child of the bench's :class:`~numpy.random.SeedSequence`, and a
``torch.Generator`` on ``torch_device`` seeded from it draws that operation's numbers,
chunk after chunk of :data:`TORCH_CHUNK_CELLS` cells (the chunk size bounds the memory of
temporaries and is part of the reproducibility contract). The same seed and calls give
identical results on the same kind of device (torch's CPU generator is a Mersenne Twister
that keeps 32 bits of the 64-bit seed; CUDA's is Philox). Results are *not* bit-identical
to the compiled kernels (other generators, other order of draws): the torch backend is
tested against the numpy reference by distribution tests (``tests/test_torch_backend.py``).

torch is imported when a :class:`TorchBench` is made, so ``import analogmem`` does not
import it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._seeding import SeedLike, as_seed_sequence
from ..errors import BenchSizeError, SettingError, TargetRangeError
from .bench import _DEPRECATED_BACKENDS, ChunkedTargets, EmulatedBench, ProgramReport, WriteVerify, check_read_at
from .card_params import card_params, pulse_arrays
from .pulse_response import PulseTable
from .validation import as_target_array, check_addresses, check_read_time, check_targets
from .cells import X_FLOOR, DeviceModel, load_device

__all__ = ["TorchBench", "TorchProgramReport", "TORCH_CHUNK_CELLS"]

#: Cells per chunk of work (temporaries are a few arrays of this size). Part of the
#: reproducibility contract: changing it changes which numbers each cell draws.
TORCH_CHUNK_CELLS = 1 << 22

_DTYPES = ("float64", "float32")


@dataclass(frozen=True)
class TorchProgramReport(ProgramReport):
    """A :class:`~analogmem.emulator.bench.ProgramReport` whose per-cell arrays (``stuck``
    int8, ``addresses`` int64, ``pulses`` int32, ``success`` bool) are torch tensors on the
    bench's device."""

    @property
    def n_stuck(self) -> int:
        import torch

        return int(torch.count_nonzero(self.stuck))


class _Card:
    """A device card's parameters as Python floats and small tensors on one torch device,
    with the model's formulas (README, "Device cards") on tensors of relative conductance ``x``."""

    def __init__(self, device: DeviceModel, torch_device: Any, dtype: Any):
        import torch

        self.p = p = card_params(device)  # the card flattened, as the compiled kernels take it
        self.device = device

        def t(a: Any, dt: Any = dtype) -> Any:
            return torch.as_tensor(np.asarray(a, dtype=np.float64), device=torch_device).to(dt)

        self.emp = bool(p.emp_on)
        if self.emp:
            self.emp_levels, self.emp_probs, self.emp_q = t(p.emp_levels), t(p.emp_probs), t(p.emp_q)
        self.relax = bool(p.relax_on)
        if self.relax:
            self.relax_lnt = [math.log(v) for v in p.relax_t]
            self.relax_x = t(p.relax_x) if p.relax_table else None
            # tabulated rows as tensors; polynomial rows as coefficient lists
            self.relax_rows = [t(row) if self.relax_x is not None else list(row) for row in p.relax_c]
            self.relax_mean_rows = [t(row) for row in p.relax_m]
        if p.nu_table:
            self.nu_x, self.nu_mu, self.nu_sg = t(p.nu_x), t(p.nu_mu), t(p.nu_sg)
        self._t = t

    def pulse_tensors(self, table: PulseTable) -> "_PulseTensors":
        """A ``WriteVerify.card`` call's pulse-response table as tensors (the kernels' arrays)."""
        import torch

        a = pulse_arrays(table)
        t = self._t
        return _PulseTensors(t(a.lo, torch.float64), t(a.hi, torch.float64), t(a.cumw, torch.float64),
                             t(a.p_hit, torch.float64), t(a.offset, torch.float64), t(a.probs), t(a.q), a.max_pulses)

    # ---- formulas (x: relative conductance g/g_max)
    @staticmethod
    def poly(c: list[float], x: Any, scale: float = 1.0) -> Any:
        """``scale · Σ_k c_k x^k`` (coefficients low → high order), Horner's rule, in place
        on one new tensor."""
        acc = x.new_full(x.shape, scale * c[-1])
        for ck in reversed(c[:-1]):
            acc.mul_(x).add_(scale * ck)
        return acc

    def log_x(self, x: Any) -> Any:
        return x.clamp(min=X_FLOOR).log_()

    def sigma_program(self, x: Any) -> Any:
        """σ_P (S) of a polynomial write channel."""
        return self.poly(self.p.prog_c, x, self.p.prog_scale)

    def piecewise(self, log_x: Any, x: Any, lin: tuple[float, ...], lxb: float, cubic: list[float]) -> Any:
        """clip(slope ln x + intercept, min, max) below the break (ln x < ``lxb``), the
        cubic ``cubic`` in x from it on (``lxb = inf``: the first branch only)."""
        slope, icpt, lo, hi = lin[:4]
        low = (log_x * slope).add_(icpt).clamp_(lo, hi)
        if math.isinf(lxb):
            return low
        return low.where(log_x < lxb, self.poly(cubic, x))

    def drift_mu_sigma(self, log_x: Any, x: Any) -> tuple[Any, Any]:
        """μ_ν and σ_ν of the drift exponent's normal at relative conductances ``x``."""
        p = self.p
        if p.nu_table:
            return self.lerp_table(self.nu_x, self.nu_mu, x), self.lerp_table(self.nu_x, self.nu_sg, x)
        return (self.piecewise(log_x, x, p.mu, p.mu_lxb, p.mu_hc),
                self.piecewise(log_x, x, p.sigma_nu, p.sg_lxb, p.sg_hc))

    def q_read(self, x_eff: Any) -> Any:
        """The per-cell read-noise factor: Q_s(x) = min(q_coefficient / x^q_exponent, q_max),
        the piecewise Q_s(x), or the constant K (S per decade) of a log10 read noise."""
        p = self.p
        if p.q_form == 2:
            return x_eff.new_full(x_eff.shape, p.q_coef)
        if p.q_form == 1:
            return self.piecewise(self.log_x(x_eff), x_eff, p.q_piece, p.q_piece[4], p.q_hc)
        return self.log_x(x_eff).mul_(-p.q_exp).exp_().mul_(p.q_coef).clamp_(max=p.q_max)

    def read_scale(self, g: Any) -> Any:
        """|g| (S), or log10(|g| / 1 µS) for a log10 read noise: what multiplies q·F·z."""
        if self.p.read_log10:
            floor = self.p.x_floor * self.p.g_max
            return g.abs().clamp(min=floor).log().sub_(math.log(1e-6)).mul_(1.0 / math.log(10.0))
        return g.abs()

    def read_time_factor(self, age: Any) -> Any:
        """sqrt(max(ln((t + t0 + t_read)/(2 t_read)), 0)) (float or tensor)."""
        p = self.p
        if isinstance(age, float):
            return math.sqrt(max(math.log((age + p.t0_read + p.t_read) / (2.0 * p.t_read)), 0.0))
        return ((age + p.t0_read + p.t_read) / (2.0 * p.t_read)).log().clamp(min=0.0).sqrt()

    def drift_log(self, age: Any) -> Any:
        """ln((t + t0)/t0) (float or tensor)."""
        t0 = self.p.t0
        return math.log((age + t0) / t0) if isinstance(age, float) else ((age + t0) / t0).log()

    @staticmethod
    def lerp_table(knots: Any, values: Any, x: Any) -> Any:
        """Piecewise-linear ``values`` at ``knots`` (1-D) evaluated at ``x``, held outside."""
        k = (_searchsorted_right(knots, x) - 1).clamp(0, knots.numel() - 2)
        x0, x1 = knots[k], knots[k + 1]
        w = ((x - x0) / (x1 - x0)).clamp(0.0, 1.0)
        v0 = values[k]
        return v0 + w * (values[k + 1] - v0)

    def relax_row(self, row: int, x: Any) -> Any:
        """σ_tot (µS at g_ref) of published time ``row`` at relative conductances ``x``."""
        if self.relax_x is not None:
            return self.lerp_table(self.relax_x, self.relax_rows[row], x)
        return self.poly(self.relax_rows[row], x)

    def relax_mean(self, x: Any, age: Any) -> Any:
        """Mean shift (S) of the relaxation (0 for cards without one), interpolated as σ_tot."""
        if not self.relax_mean_rows:
            return None
        rows = [self.lerp_table(self.relax_x, r, x) for r in self.relax_mean_rows]
        return self._in_log_time(rows, age).mul_(self.p.relax_scale)

    def _in_log_time(self, rows: list[Any], age: Any) -> Any:
        """Per-time tensors ``rows`` interpolated linearly in ln t at ``age``, held outside."""
        lnt, n_t = self.relax_lnt, len(self.relax_lnt)
        if n_t == 1:
            return rows[0].clone()
        if isinstance(age, float):
            lt = math.log(max(age, 1e-300))
            a = 0
            while a < n_t - 2 and lt >= lnt[a + 1]:
                a += 1
            w = min(max((lt - lnt[a]) / (lnt[a + 1] - lnt[a]), 0.0), 1.0)
            return rows[a] + w * (rows[a + 1] - rows[a])
        lt = age.clamp(min=1e-300).log()
        for a in range(n_t - 1):
            w = ((lt - lnt[a]) / (lnt[a + 1] - lnt[a])).clamp(0.0, 1.0)
            seg = rows[a] + w * (rows[a + 1] - rows[a])
            out = seg if a == 0 else seg.where(lt >= lnt[a], out)
        return out

    def sigma_relax(self, x: Any, age: Any) -> Any:
        """Relaxation spread sqrt(max(σ_tot(x, t)² − σ_P(x)², 0)) (S), σ_tot linear in ln t
        between the published times and held outside them; σ_tot itself when additive."""
        lnt, n_t = self.relax_lnt, len(self.relax_lnt)
        if n_t == 1:
            tot = self.relax_row(0, x)
        elif isinstance(age, float):
            lt = math.log(max(age, 1e-300))
            a = 0
            while a < n_t - 2 and lt >= lnt[a + 1]:
                a += 1
            w = min(max((lt - lnt[a]) / (lnt[a + 1] - lnt[a]), 0.0), 1.0)
            sa = self.relax_row(a, x)
            tot = sa + w * (self.relax_row(a + 1, x) - sa)
        else:
            lt = age.clamp(min=1e-300).log()
            rows = [self.relax_row(r, x) for r in range(n_t)]
            for a in range(n_t - 1):  # segment a: the last published time at or below t (a <= T-2)
                w = ((lt - lnt[a]) / (lnt[a + 1] - lnt[a])).clamp(0.0, 1.0)
                seg = rows[a] + w * (rows[a + 1] - rows[a])
                tot = seg if a == 0 else seg.where(lt >= lnt[a], tot)
        st = self.p.relax_scale * tot
        if self.p.relax_add:
            return st
        sp = self.sigma_program(x)
        return (st * st - sp * sp).clamp(min=0.0).sqrt()

    def quantile(self, table: Any, probs: Any, row: Any, u: Any) -> Any:
        """Row ``row`` (tensor of indices) of a quantile ``table`` (rows × probs) at
        probabilities ``u``, linear between knots."""
        n_p = probs.numel()
        j = (_searchsorted_right(probs, u) - 1).clamp(0, n_p - 2)
        p0 = probs[j]
        t = (u - p0) / (probs[j + 1] - p0)
        flat = table.reshape(-1)
        base = row * n_p + j
        q0 = flat[base]
        return q0 + t * (flat[base + 1] - q0)

    def empirical_log_g(self, x_in: Any, u: Any) -> Any:
        """ln(g/S) of the empirical channel at write inputs ``x_in`` and probabilities ``u``."""
        levels = self.emp_levels
        if levels.numel() == 1:
            return self.quantile(self.emp_q, self.emp_probs, _zeros_long(u), u)
        k = (_searchsorted_right(levels, x_in) - 1).clamp(0, levels.numel() - 2)
        w = ((x_in - levels[k]) / (levels[k + 1] - levels[k])).clamp(0.0, 1.0)
        a = self.quantile(self.emp_q, self.emp_probs, k, u)
        return a + w * (self.quantile(self.emp_q, self.emp_probs, k + 1, u) - a)


@dataclass(frozen=True)
class _PulseTensors:
    """A pulse-response table on the torch device: windows (S), cumulative class weights,
    hit probabilities, offsets, and the verified quantiles (ln S) per window; the budget."""

    pr_lo: Any
    pr_hi: Any
    pr_cumw: Any
    pr_p: Any
    pr_off: Any
    pr_probs: Any
    pr_q: Any
    max_pulses: int

    def level_of(self, g: Any) -> Any:
        """Index of the table's verify window holding each target (validated: one does)."""
        import torch

        out = torch.zeros(g.shape, dtype=torch.long, device=g.device)
        g64 = g.double()
        for j in range(self.pr_lo.numel() - 1, -1, -1):
            out = torch.where((g64 >= self.pr_lo[j]) & (g64 <= self.pr_hi[j]), j, out)
        return out


def _searchsorted_right(sorted_1d: Any, values: Any) -> Any:
    """Index of the first knot > each value (numpy's ``searchsorted(..., side="right")``)."""
    import torch

    return torch.searchsorted(sorted_1d, values.contiguous(), right=True)


def _zeros_long(u: Any) -> Any:
    import torch

    return torch.zeros(u.shape, dtype=torch.long, device=u.device)


class TorchBench:
    """An emulated array of ``n_cells`` cells whose state lives in torch tensors on
    ``torch_device``; the :class:`~analogmem.emulator.bench.Bench` protocol, the clock,
    ``bake``, write-verify and the errors of :class:`~analogmem.emulator.bench.EmulatedBench`.

    Args:
        device: a :class:`~analogmem.emulator.cells.DeviceModel`, a bundled card name or a card path.
        n_cells: number of cells.
        seed: randomness (None, int, SeedSequence, Generator).
        torch_device: where the state lives and the model runs (``"cpu"``, ``"cuda"``, ...).
        dtype: ``"float64"`` (default) or ``"float32"`` for the conductances and drift
            exponents (programming times stay float64).

    ``program`` takes targets as a numpy array, a sequence or a torch tensor (moved to
    ``torch_device`` if elsewhere); ``read`` returns a tensor of ``dtype`` on
    ``torch_device`` (S). Addresses may be numpy arrays or integer tensors. The program
    report's per-cell arrays are tensors on ``torch_device``.
    """

    backend = "torch"

    def __init__(self, device: DeviceModel | str, n_cells: int, seed: SeedLike = None, *,
                 torch_device: Any = "cpu", dtype: str = "float64"):
        import torch

        self.device = load_device(device)
        if isinstance(n_cells, bool) or not isinstance(n_cells, (int, np.integer)) or n_cells < 1:
            raise BenchSizeError(f"n_cells must be a positive integer, got {n_cells!r}")
        if dtype not in _DTYPES:
            raise SettingError(f"dtype must be one of {_DTYPES}, got {dtype!r}")
        try:
            tdev = torch.device(torch_device)
        except (RuntimeError, TypeError):
            raise SettingError(f"torch_device must name a torch device, got {torch_device!r}") from None
        if tdev.type == "cuda" and not torch.cuda.is_available():
            raise SettingError(f"torch_device {torch_device!r}: CUDA is not available to this torch "
                             f"({torch.__version__})")
        self.n_cells = int(n_cells)
        self.torch_device = tdev
        self.dtype = getattr(torch, dtype)
        self._seed = as_seed_sequence(seed)
        self._card = _Card(self.device, tdev, self.dtype)
        self._time_s = 0.0
        self._last_program_s = 0.0
        n, r = self.n_cells, self.device.range
        self.stuck = self._draw_stuck()
        g0 = self._full(n, r.g_min_S).masked_fill_(self.stuck == 2, r.g_max_S)
        # g_eff: each cell's effective target in the card's input domain (S, V or level)
        g_eff = g0.clone() if not self.device.empirical else self._full(n, self.device.input_range[0])
        self._state = {"g_eff": g_eff, "g_prog": g0}
        if self.device.drift.enabled:
            self._state["nu"] = self._full(n, 0.0)
        if self.device.relaxation.enabled:
            self._state["z_relax"] = self._full(n, 0.0)
        if self.device.read_noise.enabled:  # Q_s of the effective target, kept as the kernels keep it
            self._state["q_read"] = self._card.q_read(g0 / r.g_max_S)
        self._uniform_t_prog: float | None = 0.0
        self._t_prog: Any = None  # float64 tensor of per-cell programming times once they differ

    # ------------------------------------------------------------------ helpers
    def _full(self, n: int, value: float) -> Any:
        import torch

        return torch.full((n,), float(value), dtype=self.dtype, device=self.torch_device)

    def _generator(self) -> Any:
        """A torch generator on the bench's device for one operation, seeded from a fresh
        child of the bench's SeedSequence."""
        import torch

        gen = torch.Generator(device=self.torch_device)
        gen.manual_seed(int(self._seed.spawn(1)[0].generate_state(1, np.uint64)[0]))
        return gen

    def _normal(self, n: int, gen: Any) -> Any:
        import torch

        return torch.randn(n, generator=gen, dtype=self.dtype, device=self.torch_device)

    def _uniform(self, n: int, gen: Any, dtype: Any = None) -> Any:
        import torch

        return torch.rand(n, generator=gen, dtype=dtype or self.dtype, device=self.torch_device)

    def _draw_stuck(self) -> Any:
        import torch

        f = self.device.faults
        gen = self._generator()
        stuck = torch.zeros(self.n_cells, dtype=torch.int8, device=self.torch_device)
        if f.p_stuck_low > 0 or f.p_stuck_high > 0:
            for lo in range(0, self.n_cells, TORCH_CHUNK_CELLS):
                hi = min(self.n_cells, lo + TORCH_CHUNK_CELLS)
                u = self._uniform(hi - lo, gen, torch.float64)
                s = stuck[lo:hi]
                s.masked_fill_(u < f.p_stuck_low, 1)
                s.masked_fill_((u >= f.p_stuck_low) & (u < f.p_stuck_low + f.p_stuck_high), 2)
        return stuck

    def _addresses(self, addresses: Any) -> Any:
        """Validated addresses as an int64 tensor on the device (None: every cell): checked
        on the device; anything wrong is reported by
        :func:`~analogmem.emulator.bench.check_addresses` (the same error and message)."""
        import torch

        if addresses is None:
            return None
        if not torch.is_tensor(addresses):
            return torch.as_tensor(check_addresses(addresses, self.n_cells), device=self.torch_device)
        a = addresses.detach()
        ok = a.ndim == 1 and not (a.numel() and (a.is_floating_point() or a.is_complex() or a.dtype == torch.bool))
        if ok and a.numel():
            a = a.to(device=self.torch_device, dtype=torch.long)
            lo, hi = (int(v) for v in torch.aminmax(a))
            ok = lo >= 0 and hi < self.n_cells
            if ok and a.numel() > 1 and not bool((a[1:] > a[:-1]).all()):
                s = torch.sort(a).values
                ok = not bool((s[1:] == s[:-1]).any())
        if not ok:
            check_addresses(a.cpu().numpy(), self.n_cells)  # raises AddressError naming the entry
        return a.to(device=self.torch_device, dtype=torch.long)

    def _targets(self, targets: Any, n_expected: int) -> Any:
        """Validated targets as a tensor of the bench's dtype on its device: checked on the
        device; anything wrong is reported by ``EmulatedBench``'s own target check (the same
        error and message: numbers, shape, finite, input range)."""
        import torch

        unit = self.device.input_unit or "level"
        if not torch.is_tensor(targets):
            targets = torch.as_tensor(as_target_array(targets, n_expected, unit))
        if targets.dtype == torch.bool or targets.is_complex():
            raise TargetRangeError(f"targets must be numbers ({unit}), got a {targets.dtype} tensor")
        g = targets.detach().to(self.torch_device)  # checked as given (as EmulatedBench checks float64 values)
        ok = g.ndim == 1 and g.shape[0] == n_expected
        if ok and g.numel():
            lo_ok, hi_ok = self.device.input_range
            lo, hi = (float(v) for v in torch.aminmax(g))  # NaN propagates into both
            ok = math.isfinite(lo) and math.isfinite(hi) and lo >= lo_ok and hi <= hi_ok
        if not ok:
            check_targets(g.double().cpu().numpy(), n_expected, self.device)  # raises TargetRangeError
        return g.to(self.dtype)

    def _check_verify(self, verify: WriteVerify | None, g_t: Any) -> "_PulseTensors | None":
        """Check the verify settings (EmulatedBench's own checks); returns a
        ``WriteVerify.card`` call's pulse-response table as tensors (None otherwise). Only a
        card call needs the targets on the CPU."""
        if isinstance(verify, WriteVerify) and verify.windows == "card":
            return self._card.pulse_tensors(EmulatedBench._check_verify(self, g_t.double().cpu().numpy(), verify))
        EmulatedBench._check_verify(self, None, verify)  # type and card-kind checks; no table to build
        return None

    # ------------------------------------------------------------------ protocol
    # The clock (``time_s``, ``wait``, ``bake``: no cell state), ``shutdown``, the context
    # manager and ``seed_sequence`` are EmulatedBench's own.
    time_s = EmulatedBench.time_s
    wait = EmulatedBench.wait
    bake = EmulatedBench.bake
    shutdown = EmulatedBench.shutdown
    __enter__ = EmulatedBench.__enter__
    __exit__ = EmulatedBench.__exit__
    seed_sequence = EmulatedBench.seed_sequence
    _clock_change = EmulatedBench._clock_change

    def close(self) -> None:
        """Nothing to release: a torch bench keeps no state in files."""

    def _save_header(self) -> None:
        """Nothing to save when the clock moves: a torch bench keeps no state in files."""

    def program(self, targets: Any, addresses: Any = None, verify: WriteVerify | None = None) -> TorchProgramReport:
        """Program cells to ``targets`` (card's input domain; S for the published cards),
        single-shot or with program-and-verify; as :meth:`EmulatedBench.program`. Raises
        :class:`~analogmem.errors.TargetRangeError` / :class:`~analogmem.errors.AddressError` /
        :class:`~analogmem.errors.DeviceCardError` before touching any cell."""
        import torch

        addr = self._addresses(addresses)
        n = self.n_cells if addr is None else addr.numel()
        if isinstance(targets, ChunkedTargets):  # every cell, made chunk by chunk: all checked first
            if addr is not None or verify is not None or targets.n != self.n_cells:
                raise TargetRangeError(f"ChunkedTargets program every cell, without verify: need n = {self.n_cells} "
                                       f"and no addresses, got n = {targets.n}")
            for lo in range(0, n, TORCH_CHUNK_CELLS):
                self._targets(targets.fn(lo, min(n, lo + TORCH_CHUNK_CELLS)), min(n, lo + TORCH_CHUNK_CELLS) - lo)
            g_t, table = None, None
        else:
            g_t = self._targets(targets, n)
            table = self._check_verify(verify, g_t)
        now = self._time_s
        gen = self._generator()
        stuck = self.stuck if addr is None else self.stuck[addr]
        if verify is not None:
            pulses = torch.empty(n, dtype=torch.int32, device=self.torch_device)
            success = torch.empty(n, dtype=torch.bool, device=self.torch_device)
        for lo in range(0, n, TORCH_CHUNK_CELLS):
            hi = min(n, lo + TORCH_CHUNK_CELLS)
            chunk = g_t[lo:hi] if g_t is not None else self._targets(targets.fn(lo, hi), hi - lo)
            new = self._program_chunk(chunk, stuck[lo:hi], gen, verify, table)
            if verify is not None:
                pulses[lo:hi], success[lo:hi] = new.pop("pulses"), new.pop("success")
            cells = slice(lo, hi) if addr is None else addr[lo:hi]
            for key, values in new.items():
                self._state[key][cells] = values
        if addr is None:
            self._uniform_t_prog, self._t_prog = now, None
        else:
            if self._t_prog is None:
                self._t_prog = torch.full((self.n_cells,), self._uniform_t_prog, dtype=torch.float64,
                                          device=self.torch_device)
            self._t_prog[addr] = now
            self._uniform_t_prog = None
        self._last_program_s = now
        return TorchProgramReport(n_cells=n, time_s=now, stuck=stuck.clone(), addresses=addr,
                                  pulses=pulses if verify is not None else None,
                                  success=success if verify is not None else None)

    def read(self, t_s: float | None = None, addresses: Any = None) -> Any:
        """Conductances (S) ``t_s`` seconds after the most recent ``program`` call (None: at
        the clock), as a tensor of shape (n_cells,) or (len(addresses),) on the bench's
        device; as :meth:`EmulatedBench.read`."""
        import torch

        addr = self._addresses(addresses)
        when = check_read_time(t_s, self._last_program_s, self._time_s)
        self._time_s = when
        n = self.n_cells if addr is None else addr.numel()
        out = torch.empty(n, dtype=self.dtype, device=self.torch_device)
        gen = self._generator()
        for lo in range(0, n, TORCH_CHUNK_CELLS):
            hi = min(n, lo + TORCH_CHUNK_CELLS)
            cells = slice(lo, hi) if addr is None else addr[lo:hi]
            if self._t_prog is None:
                age: Any = max(when - self._uniform_t_prog, 0.0)
            else:
                age = (when - self._t_prog[cells]).clamp(min=0.0).to(self.dtype)
            out[lo:hi] = self._read_chunk({k: v[cells] for k, v in self._state.items()}, age, gen)
        return out

    def read_at(self, t_s: float, lo: int = 0, hi: int | None = None, *, read_index: int = 0) -> Any:
        """A counterfactual read of cells ``lo .. hi-1`` (S, a tensor of ``dtype`` on the
        bench's device) ``t_s`` seconds after the most recent ``program``, as
        :meth:`EmulatedBench.read_at`: neither the clock nor the bench's random state moves,
        each cell's programmed state is the one :meth:`read` uses, and the read noise comes
        from a generator seeded by (bench seed, ``read_index``, ``t_s``, ``lo``, ``hi``) — so
        the same call gives the same values whenever it is made, distributed exactly as a
        :meth:`read` at ``t_s``. (The kernels key the noise by cell; here it is keyed by the
        range, so read a range as a whole to get its values again, as
        :class:`~analogmem.storage.analog_model.AnalogModel` does per tensor.)"""
        import torch

        lo, hi, when, tag = check_read_at(self, t_s, lo, hi, read_index)
        child = np.random.SeedSequence(self._seed.entropy, spawn_key=tuple(self._seed.spawn_key) + tag + (
            lo >> 32, lo & 0xFFFFFFFF, hi >> 32, hi & 0xFFFFFFFF))
        gen = torch.Generator(device=self.torch_device)
        gen.manual_seed(int(child.generate_state(1, np.uint64)[0]))
        out = torch.empty(hi - lo, dtype=self.dtype, device=self.torch_device)
        for a in range(lo, hi, TORCH_CHUNK_CELLS):
            b = min(hi, a + TORCH_CHUNK_CELLS)
            if self._t_prog is None:
                age: Any = max(when - self._uniform_t_prog, 0.0)
            else:
                age = (when - self._t_prog[a:b]).clamp(min=0.0).to(self.dtype)
            out[a - lo:b - lo] = self._read_chunk({k: v[a:b] for k, v in self._state.items()}, age, gen)
        return out

    @property
    def n_threads(self) -> int:
        """Kernel threads of the host-side encoders (torch picks its own on the device)."""
        import torch

        return max(1, int(torch.get_num_threads()))

    @property
    def bytes_per_cell(self) -> int:
        """Bytes of per-cell state on the device (state arrays, the stuck flag, per-cell times)."""
        size = sum(v.element_size() for v in self._state.values()) + 1
        return size + (8 if self._t_prog is not None else 0)

    def cell_state(self) -> dict[str, Any]:
        """Copies of the per-cell state as tensors on the device, keys as
        :meth:`EmulatedBench.cell_state` (``g_eff``, ``g_prog``, ``nu``, ``z_relax``,
        ``q_read``, ``t_prog_s``, ``stuck``), each shape (n_cells,)."""
        import torch

        out = {k: v.clone() for k, v in self._state.items()}
        zeros = torch.zeros_like(out["g_prog"])
        out.setdefault("nu", zeros)
        out.setdefault("z_relax", zeros.clone())
        out.setdefault("q_read", zeros.clone())
        out["t_prog_s"] = (self._t_prog.clone() if self._t_prog is not None else
                           torch.full((self.n_cells,), self._uniform_t_prog, dtype=torch.float64,
                                      device=self.torch_device))
        out["stuck"] = self.stuck.clone()
        return out

    # ------------------------------------------------------------------ the model
    def _write(self, g_t: Any, x: Any, gen: Any) -> Any:
        """One write pulse per cell: the conductance (S) each takes."""
        c, r = self._card, self.device.range
        if c.emp:
            v = c.empirical_log_g(g_t, self._uniform(g_t.numel(), gen)).exp()
        else:
            v = c.sigma_program(x).mul_(self._normal(g_t.numel(), gen)).add_(g_t)
        return v.clamp_(r.clip_min_S, r.clip_max_S)

    def _program_chunk(self, g_t: Any, stuck: Any, gen: Any, verify: WriteVerify | None,
                       table: "_PulseTensors | None" = None) -> dict[str, Any]:
        """New state of one chunk of cells (plus ``pulses``/``success`` with verify;
        ``table``: the pulse-response table of a ``WriteVerify.card`` call)."""
        c, dev, r = self._card, self.device, self.device.range
        n = g_t.numel()
        x = g_t / r.g_max_S
        f = dev.faults
        has_stuck = f.p_stuck_low > 0 or f.p_stuck_high > 0
        low, high = stuck == 1, stuck == 2
        g_eff = g_t.masked_fill(low, r.g_min_S).masked_fill_(high, r.g_max_S) if has_stuck else g_t.clone()
        out: dict[str, Any] = {}
        if dev.read_noise.enabled:
            out["q_read"] = c.q_read(g_eff / r.g_max_S)
        if verify is None:
            v = self._write(g_t, x, gen)
        elif table is not None:
            v, out["pulses"], out["success"] = self._verify_card(g_t, x, stuck, gen, table)
        else:
            h = verify.tolerance_S + verify.tolerance_rel * g_t.double().abs()
            lo, hi = g_t.double() - h, g_t.double() + h
            v, out["pulses"], out["success"] = self._verify_tolerance(g_t, x, g_eff, out.get("q_read"), stuck, gen,
                                                                     verify.pulse_budget(dev), lo, hi)
        if dev.drift.enabled:
            mu, sg = c.drift_mu_sigma(c.log_x(x), x)
            out["nu"] = sg.mul_(self._normal(n, gen)).add_(mu).abs_()
        if dev.relaxation.enabled:
            out["z_relax"] = self._normal(n, gen)
        if has_stuck:  # stuck cells: at their stuck value, no drift, no relaxation
            for key in ("nu", "z_relax"):
                if key in out:
                    out[key].masked_fill_(stuck != 0, 0.0)
            v = v.masked_fill_(low, r.g_min_S).masked_fill_(high, r.g_max_S)
        out["g_prog"] = v
        out["g_eff"] = g_eff
        return out

    def _verify_tolerance(self, g_t: Any, x: Any, g_eff: Any, q: Any, stuck: Any, gen: Any, budget: int,
                          lo: Any, hi: Any) -> tuple[Any, Any, Any]:
        """Program-and-verify with tolerance windows ``[lo, hi]`` (S): pulse (a write
        draw), read right away (with the card's read noise), stop inside the window or
        after ``budget`` pulses. Returns the last written value, pulses and success."""
        import torch

        c = self._card
        n = g_t.numel()
        v = self._write(g_t, x, gen)
        pulses = torch.ones(n, dtype=torch.int32, device=self.torch_device)
        success = torch.zeros(n, dtype=torch.bool, device=self.torch_device)
        seen = torch.where(stuck == 0, 0.0, g_eff)  # what a verify read sees of a stuck cell
        q_f0 = q * c.read_time_factor(0.0) if q is not None else None
        active = torch.arange(n, device=self.torch_device)
        k = 1
        while active.numel():
            s = stuck[active]
            rd = torch.where(s == 0, v[active], seen[active])
            if q_f0 is not None:
                rd = rd + c.read_scale(rd) * q_f0[active] * self._normal(active.numel(), gen)
            ok = (lo[active] <= rd) & (rd <= hi[active])
            success[active] = ok
            pulses[active] = k
            if k >= budget:
                break
            active = active[~ok]
            k += 1
            if active.numel():
                v[active] = self._write(g_t[active], x[active], gen)
        return v, pulses, success

    def _verify_card(self, g_t: Any, x: Any, stuck: Any, gen: Any, c: "_PulseTensors") -> tuple[Any, Any, Any]:
        """Program-and-verify with the card's pulse-response table ``c``: response class k ~
        weights (a uniform), pulses needed T = offset + Geometric(p_k) − 1 (by inversion of
        a uniform); T ≤ budget: verified, value from the level's quantiles (a uniform);
        otherwise a failure after ``budget`` pulses at a single-shot write. Stuck cells fail."""
        import torch

        r, budget = self.device.range, c.max_pulses
        n = g_t.numel()
        level = c.level_of(g_t)
        k_max = c.pr_cumw.shape[1]
        u = self._uniform(n, gen, torch.float64)
        comp = torch.zeros(n, dtype=torch.long, device=self.torch_device)
        for k in range(k_max - 1):
            comp += (u >= c.pr_cumw[level, k]).long()
        p = c.pr_p[level, comp]
        u_geo = 1.0 - self._uniform(n, gen, torch.float64)  # in (0, 1]
        geo = torch.where(p >= 1.0, 1.0, (u_geo.log() / torch.log1p(-p.clamp(max=1.0 - 1e-16))).ceil().clamp(min=1.0))
        need = c.pr_off[level] + geo - 1.0
        verified = need <= budget
        q = self._card.quantile(c.pr_q, c.pr_probs, level, self._uniform(n, gen)).exp().clamp(r.clip_min_S, r.clip_max_S)
        v = torch.where(verified, q, self._write(g_t, x, gen))
        ok = verified & (stuck == 0)
        pulses = torch.where(ok, need, float(budget)).to(torch.int32)
        return v, pulses, ok

    def _read_chunk(self, st: dict[str, Any], age: Any, gen: Any) -> Any:
        """Reads (S) of one chunk of cells of state ``st`` at ``age`` s after programming
        (a float, or a tensor per cell). Temporaries are updated in place (never ``st``)."""
        c, dev = self._card, self.device
        g = st["g_prog"]
        if dev.drift.enabled:
            g = (st["nu"] * -c.drift_log(age)).exp_().mul_(g)
        if dev.relaxation.enabled:
            x_eff = st["g_eff"] / dev.g_max_S
            g = c.sigma_relax(x_eff, age).mul_(st["z_relax"]).add_(g)
            shift = c.relax_mean(x_eff, age)
            if shift is not None:
                g = g.add_(shift)
        if dev.read_noise.enabled:
            noise = self._normal(g.numel(), gen).mul_(st["q_read"]).mul_(c.read_time_factor(age)).mul_(c.read_scale(g))
            g = noise.add_(g)
        return g.clamp(dev.range.clip_min_S, dev.range.clip_max_S)

    def __repr__(self) -> str:
        return (f"TorchBench(device={self.device.name!r}, n_cells={self.n_cells}, "
                f"torch_device={str(self.torch_device)!r}, dtype={str(self.dtype).replace('torch.', '')!r}, "
                f"time_s={self._time_s:g})")


_DEPRECATED_BACKENDS["torch"] = TorchBench  # EmulatedBench(..., backend="torch"), kept for old callers
