"""The compressed delta of a finetuned model and its packed file format.

A :class:`CompressedDelta` holds one record per parameter tensor whose delta is not zero:

* :class:`SparseQuantised` — a pruned + quantised weight matrix (GPT-Zip, magnitude+RTN): the
  positions of the stored entries (a boolean mask), one ``bits``-bit code per stored entry, one
  float16 scale per row and (``grid="minmax"`` only) one integer zero point per row; value
  ``scale[r]·(code − zero[r])``.
* :class:`SignTensor` — BitDelta: one sign bit per weight and one float16 scale per matrix.
* :class:`DenseTensor` — any other delta (biases, layer norms, embeddings) as float16.

Matrices are kept in ``nn.Linear`` layout ``(out, in)``; ``transposed=True`` marks GPT-2's
``Conv1D`` whose parameter is stored ``(in, out)``.

File layout (all integers little-endian; ``pack``/``unpack``, written atomically by :func:`save_delta`)::

    offset 0    8 bytes   magic b"AMDELTA1"  (format analogmem-delta, version 1)
    offset 8    4 bytes   uint32 L: length of the compressed header
    offset 12   L bytes   zlib(JSON header): format, versions, method, settings, base-model
                          SHA-256, and per tensor: name, kind, shape, transposed, counts and
                          the byte length of each of its sections, in order
    then        sections  per tensor, in header order:
                  sparse:  mask  — ANS stream (uint32 words, ``constriction``) of the row-major
                                   mask under an i.i.d. Bernoulli(k/n) model: ≈ n·h₂(k/n) bits
                           codes — the k codes, ``bits`` bits each, packed LSB-first
                           scale — rows × float16
                           zero  — rows × uint8 (minmax grid only)
                  sign:    signs — n bits, row-major, packed LSB-first (1 = positive); alpha — float16
                  dense:   values — float16, row-major in the parameter's own layout
    last        32 bytes  SHA-256 of every preceding byte

The file's length is :attr:`CompressedDelta.nbytes`. Decoding gives back every array bit for
bit (:func:`unpack` ∘ :func:`pack` is the identity on the records).
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from analogmem._io import atomic_write_bytes

from ._validation import DeltaZipError

__all__ = [
    "CompressedDelta",
    "DenseTensor",
    "FORMAT",
    "MAGIC",
    "SignTensor",
    "SparseQuantised",
    "decode_mask",
    "encode_mask",
    "load_delta",
    "pack",
    "pack_codes",
    "save_delta",
    "unpack",
    "unpack_codes",
]

FORMAT = "analogmem-delta"
MAGIC = b"AMDELTA1"
_VERSION = 1
_DIGEST = 32


def _version() -> str:
    from analogmem._version import __version__

    return __version__


# --------------------------------------------------------------------------- records
@dataclass
class SparseQuantised:
    """A pruned + quantised matrix delta in ``(rows, cols) = (out, in)`` layout.

    Attributes:
        name: the parameter's name in the model.
        mask: ``(rows, cols)`` bool, the stored entries.
        codes: ``(mask.sum(),)`` uint8, the codes of the stored entries in row-major order.
        scale: ``(rows,)`` float16, the step of each row (weight units).
        zero: ``(rows,)`` float32 zero points (``(2^bits − 1)/2`` on the sparse grid).
        bits: bits per code (1–8).
        grid: ``"sparse"`` or ``"minmax"``.
        transposed: the parameter is stored ``(cols, rows)`` (GPT-2 ``Conv1D``).
        method: which compressor made it (``gptzip``, ``magnitude-rtn``, ``rtn``).
    """

    name: str
    mask: np.ndarray
    codes: np.ndarray
    scale: np.ndarray
    zero: np.ndarray
    bits: int
    grid: str
    transposed: bool = False
    method: str = "gptzip"
    kind: str = field(default="sparse", init=False)

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.mask.shape)

    def values(self) -> np.ndarray:
        """The delta ``(rows, cols)`` float32: ``scale[r]·(code − zero[r])`` where stored, else 0."""
        out = np.zeros(self.mask.shape, dtype=np.float32)
        r = np.nonzero(self.mask)[0]
        s = self.scale.astype(np.float32)[r]
        z = self.zero.astype(np.float32)[r]
        out[self.mask] = s * (self.codes.astype(np.float32) - z)
        return out


@dataclass
class SignTensor:
    """BitDelta: ``alpha·(+1 if positive else −1)``, ``(rows, cols)`` in ``(out, in)`` layout."""

    name: str
    positive: np.ndarray
    alpha: np.float16
    transposed: bool = False
    method: str = "bitdelta"
    kind: str = field(default="sign", init=False)

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.positive.shape)

    def values(self) -> np.ndarray:
        a = np.float32(self.alpha)
        return np.where(self.positive, a, -a).astype(np.float32)


@dataclass
class DenseTensor:
    """A float16 delta in the parameter's own layout and shape."""

    name: str
    delta: np.ndarray
    transposed: bool = False
    method: str = "dense-fp16"
    kind: str = field(default="dense", init=False)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.delta.shape)

    def values(self) -> np.ndarray:
        return self.delta.astype(np.float32)


Record = SparseQuantised | SignTensor | DenseTensor


@dataclass
class CompressedDelta:
    """The compressed delta of a finetuned model: ``records`` (name → record, in model order),
    ``meta`` (method, settings, base-model SHA-256, architecture; JSON-able, stored in the file)
    and ``report`` (per-layer statistics of the run that made it; not stored)."""

    records: dict[str, Record]
    meta: dict[str, Any]
    report: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def nbytes(self) -> int:
        """The exact size of the packed file in bytes."""
        return len(pack(self))

    def delta(self, name: str) -> np.ndarray:
        """The float32 delta of parameter ``name`` in the parameter's own layout and shape."""
        rec = self.records[name]
        v = rec.values()
        return np.ascontiguousarray(v.T) if rec.transposed else v

    def size_breakdown(self) -> dict[str, int]:
        """Bytes of the packed file by section kind: ``mask``, ``codes``, ``scale``, ``zero``,
        ``signs``, ``alpha``, ``dense``, ``header`` (magic + length + header), ``checksum``;
        their sum is :attr:`nbytes`."""
        blob = pack(self)
        header_len = struct.unpack("<I", blob[8:12])[0]
        out = {k: 0 for k in ("mask", "codes", "scale", "zero", "signs", "alpha", "dense")}
        for rec in self.records.values():
            for sec, data in _sections(rec):
                out["dense" if sec == "values" else sec] += len(data)
        out["header"] = 12 + header_len
        out["checksum"] = _DIGEST
        return out

    def n_weights(self, kind: str | None = None) -> int:
        """Number of delta entries in the records (of one ``kind``: sparse, sign, dense)."""
        return int(sum(int(np.prod(r.shape)) for r in self.records.values() if kind in (None, r.kind)))


# --------------------------------------------------------------------------- bit helpers
def pack_codes(codes: np.ndarray, bits: int) -> bytes:
    """Pack unsigned codes (< 2^bits) ``bits`` bits each, LSB first, into bytes."""
    codes = np.asarray(codes, dtype=np.uint8).reshape(-1)
    if codes.size and int(codes.max()) >= 2 ** bits:
        raise DeltaZipError(f"a code {int(codes.max())} does not fit in {bits} bits")
    b = ((codes[:, None] >> np.arange(bits, dtype=np.uint8)) & 1).astype(np.uint8).reshape(-1)
    return np.packbits(b, bitorder="little").tobytes()


def unpack_codes(data: bytes, n: int, bits: int) -> np.ndarray:
    """Inverse of :func:`pack_codes`: ``n`` codes of ``bits`` bits."""
    need = -(-n * bits // 8)
    if len(data) != need:
        raise DeltaZipError(f"code section has {len(data)} bytes, {n} codes of {bits} bits need {need}")
    b = np.unpackbits(np.frombuffer(data, dtype=np.uint8), bitorder="little")[: n * bits].reshape(n, bits)
    return (b.astype(np.uint8) << np.arange(bits, dtype=np.uint8)).sum(axis=1).astype(np.uint8)


def _mask_model(k: int, n: int):
    import constriction

    p = k / n
    return constriction.stream.model.Categorical(np.array([1.0 - p, p], dtype=np.float64), perfect=False)


def encode_mask(mask: np.ndarray) -> bytes:
    """Entropy-code a boolean mask (row-major) with ANS under an i.i.d. Bernoulli(k/n) model
    (``constriction``); ≈ ``n·h₂(k/n)`` bits. Empty when ``k`` is 0 or ``n`` (nothing to say)."""
    import constriction

    m = np.asarray(mask, dtype=bool).reshape(-1)
    n, k = m.size, int(m.sum())
    if k in (0, n):
        return b""
    coder = constriction.stream.stack.AnsCoder()
    coder.encode_reverse(m.astype(np.int32), _mask_model(k, n))
    return coder.get_compressed().astype("<u4").tobytes()


def decode_mask(data: bytes, n: int, k: int, name: str = "mask") -> np.ndarray:
    """Inverse of :func:`encode_mask` for a mask of ``n`` entries with ``k`` set."""
    import constriction

    if k == 0 or k == n:
        if data:
            raise DeltaZipError(f"{name}: a mask with {k} of {n} set has no stream, got {len(data)} bytes")
        return np.full(n, k == n, dtype=bool)
    if len(data) % 4 or not data:
        raise DeltaZipError(f"{name}: the mask stream has {len(data)} bytes, not a positive multiple of 4")
    try:
        coder = constriction.stream.stack.AnsCoder(np.frombuffer(data, dtype="<u4").astype(np.uint32))
        m = coder.decode(_mask_model(k, n), n).astype(bool)
    except Exception as exc:  # noqa: BLE001 - any decoder failure is a corrupt stream
        raise DeltaZipError(f"{name}: the mask stream cannot be decoded: {exc}") from None
    if int(m.sum()) != k:
        raise DeltaZipError(f"{name}: the mask stream decodes to {int(m.sum())} stored entries, header says {k}")
    return m


# --------------------------------------------------------------------------- pack / unpack
def _sections(rec: Record) -> list[tuple[str, bytes]]:
    if rec.kind == "sparse":
        out = [("mask", encode_mask(rec.mask)), ("codes", pack_codes(rec.codes, rec.bits)),
               ("scale", np.asarray(rec.scale, dtype="<f2").tobytes())]
        if rec.grid == "minmax":
            out.append(("zero", np.asarray(rec.zero, dtype=np.uint8).tobytes()))
        return out
    if rec.kind == "sign":
        return [("signs", np.packbits(rec.positive.reshape(-1), bitorder="little").tobytes()),
                ("alpha", np.asarray([rec.alpha], dtype="<f2").tobytes())]
    return [("values", np.ascontiguousarray(rec.delta, dtype="<f2").tobytes())]


def _record_header(rec: Record, sections: list[tuple[str, bytes]]) -> dict[str, Any]:
    h: dict[str, Any] = {"name": rec.name, "kind": rec.kind, "shape": list(rec.shape),
                         "transposed": bool(rec.transposed), "method": rec.method,
                         "sections": [[s, len(d)] for s, d in sections]}
    if rec.kind == "sparse":
        h.update(bits=rec.bits, grid=rec.grid, n_stored=int(rec.codes.size))
    return h


def pack(delta: CompressedDelta) -> bytes:
    """The packed file of ``delta`` (see the module docstring)."""
    header = {"format": FORMAT, "format_version": _VERSION, "analogmem_version": _version(),
              "meta": delta.meta, "tensors": []}
    payload = []
    for rec in delta.records.values():
        secs = _sections(rec)
        header["tensors"].append(_record_header(rec, secs))
        payload.extend(d for _, d in secs)
    hz = zlib.compress(json.dumps(header, sort_keys=True, separators=(",", ":")).encode(), 9)
    body = MAGIC + struct.pack("<I", len(hz)) + hz + b"".join(payload)
    return body + hashlib.sha256(body).digest()


def unpack(blob: bytes, source: str = "packed delta") -> CompressedDelta:
    """Parse a packed file (bytes). Raises :class:`DeltaZipError` naming ``source`` for a wrong
    magic, a checksum mismatch (any changed or missing byte) or inconsistent sections."""
    if len(blob) < len(MAGIC) + 4 + _DIGEST or blob[:8] != MAGIC:
        raise DeltaZipError(f"{source} is not an analogmem delta file (magic {blob[:8]!r}, {len(blob)} bytes)")
    body, digest = blob[:-_DIGEST], blob[-_DIGEST:]
    if hashlib.sha256(body).digest() != digest:
        raise DeltaZipError(f"{source} is corrupted or truncated: its SHA-256 does not match the recorded one")
    (hlen,) = struct.unpack("<I", body[8:12])
    try:
        header = json.loads(zlib.decompress(body[12:12 + hlen]))
    except Exception as exc:  # noqa: BLE001
        raise DeltaZipError(f"{source}: the header cannot be parsed: {exc}") from None
    if header.get("format") != FORMAT or header.get("format_version") != _VERSION:
        raise DeltaZipError(f"{source}: format {header.get('format')!r} version {header.get('format_version')!r} "
                            f"is not {FORMAT!r} version {_VERSION}")
    pos = 12 + hlen
    records: dict[str, Record] = {}
    for t in header["tensors"]:
        secs = {}
        for sec, length in t["sections"]:
            if pos + length > len(body):
                raise DeltaZipError(f"{source}: tensor {t['name']!r} section {sec!r} runs past the end of the file")
            secs[sec] = body[pos:pos + length]
            pos += length
        records[t["name"]] = _record_from(t, secs, source)
    if pos != len(body):
        raise DeltaZipError(f"{source}: {len(body) - pos} bytes after the last section")
    return CompressedDelta(records, header["meta"])


def _record_from(t: dict[str, Any], secs: dict[str, bytes], source: str) -> Record:
    name, shape, tr = t["name"], tuple(int(v) for v in t["shape"]), bool(t["transposed"])
    where = f"{source}: tensor {name!r}"
    if t["kind"] == "sparse":
        rows, cols = shape
        bits, k = int(t["bits"]), int(t["n_stored"])
        mask = decode_mask(secs["mask"], rows * cols, k, where).reshape(rows, cols)
        codes = unpack_codes(secs["codes"], k, bits)
        scale = np.frombuffer(secs["scale"], dtype="<f2").astype(np.float16)
        if scale.size != rows:
            raise DeltaZipError(f"{where}: {scale.size} scales for {rows} rows")
        if t["grid"] == "minmax":
            zero = np.frombuffer(secs["zero"], dtype=np.uint8).astype(np.float32)
        else:
            zero = np.full(rows, (2 ** bits - 1) / 2.0, dtype=np.float32)
        return SparseQuantised(name, mask, codes, scale, zero, bits, t["grid"], tr, t["method"])
    if t["kind"] == "sign":
        n = int(np.prod(shape))
        bits = np.unpackbits(np.frombuffer(secs["signs"], dtype=np.uint8), bitorder="little")
        if bits.size < n:
            raise DeltaZipError(f"{where}: sign section too short")
        alpha = np.frombuffer(secs["alpha"], dtype="<f2")[0].astype(np.float16)
        return SignTensor(name, bits[:n].astype(bool).reshape(shape), alpha, tr, t["method"])
    if t["kind"] == "dense":
        v = np.frombuffer(secs["values"], dtype="<f2").astype(np.float16)
        if v.size != math.prod(shape):
            raise DeltaZipError(f"{where}: {v.size} values for shape {shape}")
        return DenseTensor(name, v.reshape(shape), tr, t["method"])
    raise DeltaZipError(f"{where}: unknown record kind {t['kind']!r}")


def save_delta(delta: CompressedDelta, path: str | Path) -> Path:
    """Write the packed file of ``delta`` to ``path`` atomically; returns the path."""
    return atomic_write_bytes(path, pack(delta))


def load_delta(path: str | Path) -> CompressedDelta:
    """Read a file written by :func:`save_delta` (checksum verified)."""
    path = Path(path)
    try:
        blob = path.read_bytes()
    except OSError as exc:
        raise DeltaZipError(f"cannot read delta file {str(path)!r}: {exc}") from None
    return unpack(blob, f"delta file {str(path)!r}")
