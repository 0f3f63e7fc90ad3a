"""The compressed model artifact: one HDF5 file whose byte count is a trial's ``size_bytes``.

"Measured, never estimated" (ARCHITECTURE.md): the size objective is ``os.path.getsize`` of this file,
so the file is a real compressed format, not a count of nonzeros. It decodes with h5py and numpy
alone.

Format ``frontier-artifact``, version 1 (HDF5, written with ``libver="latest"``)::

    /                   attrs: format = "frontier-artifact", version = 1, and the caller's attrs
    index               one row per state-dict key, in state-dict order (compound, gzip):
        name            the key (UTF-8)
        encoding        how its values are stored: "dense", "sparse" or "shared"
        dtype           torch dtype name: "float32", "int64", "bfloat16", ...
        ndim, shape     the tensor's shape is shape[:ndim]
        offset, count   its values are <encoding>.<dtype>[offset : offset + count]
                        (shared: its codebook, k = count entries)
        aux_offset,     its bytes in <encoding>.aux[aux_offset : aux_offset + aux_count]
        aux_count       (sparse: the position mask; shared: the packed indices; else -1, 0)
        mask_offset,    shared only: its position mask in shared.mask[mask_offset : mask_offset
        mask_count      + mask_count]; -1, 0 when it has none (also every row of a file
                        written before the shared encoding existed, which lacks these columns)
    dense.<dtype>       1-D: every dense tensor of that dtype, flattened in C order and concatenated
    sparse.<dtype>      1-D: the nonzero values of every sparse tensor of that dtype, in C order
    sparse.aux          uint8: np.packbits(t.flatten() != 0) of every sparse tensor, each
                        starting on a byte boundary (ceil(numel / 8) bytes each)
    shared.<dtype>      1-D: the codebook of every shared tensor of that dtype, each sorted by value
    shared.aux          uint8: the codebook indices of every shared tensor, b = ceil(log2(k)) bits
                        each, most significant bit first, packed with no gaps; each tensor starts
                        on a byte boundary (ceil(n * b / 8) bytes). k = 1 needs no bits: no bytes.
    shared.mask         uint8: like sparse.aux, for the shared tensors that have a mask

    Decode a sparse row: v = np.zeros(numel, dtype); keep = np.unpackbits(aux, count=numel)
    v[keep.astype(bool)] = values; v.reshape(shape). bfloat16 has no numpy type: its streams hold
    the int16 bit patterns.

    Decode a shared row: codebook = values (k = count); without a mask n = numel, with one
    keep = np.unpackbits(mask, count=numel).astype(bool) and n = keep.sum(). For k = 1 the
    indices are n zeros; else, with b = ceil(log2(k)),
    i = np.packbits(np.unpackbits(aux, count=n * b).reshape(n, b), axis=1)[:, 0] >> (8 - b);
    then v = codebook[i] without a mask, or v = np.zeros(numel, dtype); v[keep] = codebook[i];
    v.reshape(shape).

Value streams of floats use the shuffle filter then gzip level 9; byte streams and integer streams
use gzip 9. Each stream is a single chunk (no chunk index). A stream under ``COMPACT_BYTES`` is
stored raw inside its object header; a stream no tensor uses is not written. Packing tensors into
a few streams instead of one HDF5 object per tensor keeps small models small: every HDF5 dataset or
group carries headers however small it is (``bench/storage.py`` measures both layouts).

Choice of encoding, per tensor: the smallest before gzip (ties go to the earlier of dense, sparse,
shared), with ``n = numel``, ``s = itemsize``, ``nnz`` nonzeros:

    dense               n * s
    sparse              nnz * s + ceil(n / 8)                           floating tensors
    shared, no mask     k * s + ceil(n * b / 8)                         k distinct values (zeros too)
    shared, mask        k * s + ceil(n / 8) + ceil(nnz * b / 8)         k distinct nonzero values

A floating tensor can be *shared* (weight sharing, sec. III-A of the quantization-retraining
paper: each value replaced by one of k centroids) when it has more than ``SHARED_MIN_NUMEL``
entries and at most ``MAX_CODEBOOK`` = 256 distinct nonzero values (b <= 8 bits); nothing marks a
tensor as shared, the values alone decide. "Distinct" means distinct bit patterns, so NaNs with
different payloads, and -0.0 in a tensor without a mask, come back as they were. By the table, a
float32 layer at k centroids costs ``k * 4 / n + b / 8`` bytes per weight before gzip instead of 4
(plus 1/8 for a mask and only the kept ``nnz`` indices when it is pruned as well); a constant
tensor (BatchNorm's initial weight) is a codebook of one entry. Telling whether a tensor is
shared reads its first ``_PROBE`` values before indexing the whole. The choice is made before
gzip, not by compressing every candidate (gzip 9 of large dense tensors is the costly step);
``bench/storage.py`` measures the bits per weight of the paper's settings in the file. Other
dtypes (e.g. BatchNorm's ``num_batches_tracked``) are ``dense`` with their own dtype.

The INT8 artifact (``model.int8.h5``, the ``size_bytes`` of a trial deployed in INT8; written by
``trainables.measure.int8_model.build_int8``) is this same format, attribute ``precision = "int8"``,
holding every initializer of the INT8 ONNX file by its ONNX name, in its stored type:

    <layer>.weight_quantized     int8, the layer's shape (after surgery): the weight codes, dense
                                 (integer tensors are never sparse or shared; gzip takes their zeros)
    <layer>.weight_scale         float32 [out_channels]: per-channel scale, w = scale[c] * code
    <layer>.weight_zero_point    int8 [out_channels]: all 0 (symmetric weights)
    <layer>.weight_bias_quantized,  int32 [out_channels] and float32: the bias (BatchNorm folded in),
    ..._bias_quantized_scale        b = scale[c] * code, scale = input scale * weight scale[c]
    <tensor>_scale, _zero_point  float32 and uint8 (int8 for TensorRT) scalars: each quantized
                                 activation, x = scale * (q - zero_point)
    <layer>.weight, <layer>.weight_bias  float32: a layer kept in float (BatchNorm folded in)

The graph itself is not stored (nor its int64 shape and axis constants, which the exporter names
differently from one export to the next): the architecture and the trial's plan rebuild it.

Loading returns the same values bit for bit, with one exception: a ``-0.0`` in a sparse tensor or
in a shared tensor with a mask is a zero like any other, so it comes back as ``+0.0``. The same
state dict saved twice gives the same bytes (HDF5 stores no timestamps here), so a file's hash can
key a cache. A reader that meets an encoding it does not know says so.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

import h5py
import numpy as np
import torch

from ..errors import FrontierError
from ..files import atomic_path

FORMAT = "frontier-artifact"
VERSION = 1
ENCODINGS = ("dense", "sparse", "shared")
GZIP_LEVEL = 9
COMPACT_BYTES = 512  # a stream smaller than this is stored raw inside its object header
MAX_NDIM = 8
MAX_CODEBOOK = 256  # the most distinct values a shared tensor may take: 8-bit indices
SHARED_MIN_NUMEL = 64  # a tensor this small or smaller is never shared (its codebook would not pay)
_PROBE = 4096  # elements read to guess a codebook before checking the whole tensor
_MAX_CHUNK_BYTES = 1 << 30  # HDF5 caps a chunk at 4 GiB; one chunk per stream below this
_RESERVED_ATTRS = ("format", "version")


def save_artifact(
    state_dict: Mapping[str, torch.Tensor],
    path: str | Path,
    *,
    attrs: Mapping[str, str | int | float] | None = None,
) -> int:
    """Write ``state_dict`` as a compressed artifact at ``path``; returns the file's size in bytes.

    The file is written under a temporary name in the same folder and moved into place
    (:func:`trainables.files.atomic_path`), so a reader never sees half a file.

    Example:
        >>> import torch
        >>> size = save_artifact({"w": torch.zeros(100, 100)}, "/tmp/a.h5", attrs={"trial": "t1"})
        >>> state, attrs = load_artifact("/tmp/a.h5")
        >>> attrs["trial"], state["w"].shape
        ('t1', torch.Size([100, 100]))

    Args:
        state_dict: tensor name -> tensor (any device; stored from the CPU).
        path: the ``.h5`` file to write; its folder is created if missing.
        attrs: metadata stored as root attributes (str, int, float or bool values); "format"
            and "version" are reserved.

    Raises:
        FrontierError: a reserved or unsupported attr, or a tensor that cannot be stored
            (a dtype numpy has no type for, more than ``MAX_NDIM`` dimensions).
    """
    path = Path(path)
    attrs = dict(attrs or {})
    for name, value in attrs.items():
        if name in _RESERVED_ATTRS:
            raise FrontierError(f"artifact attrs: '{name}' is reserved for the file format")
        if not isinstance(value, (str, int, float, np.integer, np.floating, np.bool_)):
            raise FrontierError(
                f"artifact attrs: '{name}' must be a str, int, float or bool but got {type(value).__name__}"
            )
    rows, streams = _encode(state_dict)
    with atomic_path(path) as tmp, h5py.File(tmp, "w", libver="latest") as f:
        f.attrs["format"] = np.bytes_(FORMAT)
        f.attrs["version"] = np.int64(VERSION)
        for name, value in attrs.items():
            f.attrs[name] = _attr_value(value)
        _write_stream(f, "index", _index_table(rows), shuffle=True)
        for name, parts in streams.items():
            array = np.concatenate(parts)
            _write_stream(f, name, array, shuffle=array.dtype.kind == "f" or name.endswith("bfloat16"))
    return os.path.getsize(path)


def load_artifact(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, object]]:
    """Read an artifact written by :func:`save_artifact`.

    Returns:
        The state dict (same keys in the same order, same shapes and dtypes; CPU tensors) and the
        caller's attrs as Python values (without "format" and "version").

    Raises:
        FrontierError: naming ``path`` when it is missing, not HDF5, not a frontier artifact,
            of a newer version, or holds an encoding this version does not know.
    """
    path = Path(path)
    if not path.is_file():
        raise FrontierError(f"artifact: file '{path}' does not exist")
    try:
        f = h5py.File(path, "r")
    except OSError:
        raise FrontierError(f"artifact: '{path}' is not an HDF5 file") from None
    with f:
        if _decode(f.attrs.get("format")) != FORMAT or "index" not in f:
            raise FrontierError(f"artifact: '{path}' is not a {FORMAT} file (no format attribute)")
        version = _decode(f.attrs.get("version"))
        if not isinstance(version, int) or not 1 <= version <= VERSION:
            raise FrontierError(f"artifact: '{path}' has format version {version}; this frontier reads 1..{VERSION}")
        attrs = {name: _decode(value) for name, value in f.attrs.items() if name not in _RESERVED_ATTRS}
        index = f["index"][()]
        streams = {name: f[name][()] for name in f if name != "index"}
    state = {}
    for row in index:
        key = row["name"].decode("utf-8")
        try:
            state[key] = _decode_row(row, key, streams, path)
        except (KeyError, ValueError, TypeError) as exc:  # a stream or a slice the index names is missing
            raise FrontierError(f"artifact: '{path}' is damaged at tensor '{key}' ({type(exc).__name__})") from None
    return state, attrs


# -- writing ----------------------------------------------------------------------------------


def _encode(state_dict: Mapping[str, torch.Tensor]) -> tuple[list[dict], dict[str, list[np.ndarray]]]:
    """Index rows and, per stream name, the arrays to concatenate into it (in row order)."""
    rows: list[dict] = []
    streams: dict[str, list[np.ndarray]] = {}
    lengths: dict[str, int] = {}

    def append(stream: str, array: np.ndarray) -> int:
        streams.setdefault(stream, []).append(array)
        start = lengths.get(stream, 0)
        lengths[stream] = start + array.size
        return start

    for key, tensor in state_dict.items():
        tensor = tensor.detach().cpu().contiguous()
        dtype = str(tensor.dtype).removeprefix("torch.")
        if tensor.dim() > MAX_NDIM:
            raise FrontierError(f"artifact: tensor '{key}' has {tensor.dim()} dimensions; at most {MAX_NDIM} fit")
        flat = _to_numpy(tensor, key).reshape(-1)
        row = {"name": key, "dtype": dtype, "shape": tuple(tensor.shape), "aux_offset": -1, "aux_count": 0,
               "mask_offset": -1, "mask_count": 0}  # fmt: skip
        encoding = "dense"
        if tensor.is_floating_point():
            nonzero = (tensor != 0).reshape(-1).numpy()
            nnz, numel, itemsize = int(nonzero.sum()), flat.size, flat.itemsize
            sparse_bytes = nnz * itemsize + math.ceil(numel / 8)
            shared = _shared(flat, nonzero, nnz, bfloat16=dtype == "bfloat16") if numel > SHARED_MIN_NUMEL else None
            best = min(numel * itemsize, sparse_bytes, math.inf if shared is None else shared.raw_bytes)
            encoding = "dense" if best == numel * itemsize else "sparse" if best == sparse_bytes else "shared"
        if encoding == "dense":
            row.update(encoding="dense", offset=append(f"dense.{dtype}", flat), count=flat.size)
        elif encoding == "sparse":
            values, mask = flat[nonzero], np.packbits(nonzero)
            row.update(encoding="sparse", offset=append(f"sparse.{dtype}", values), count=values.size)
            row.update(aux_offset=append("sparse.aux", mask), aux_count=mask.size)
        else:
            codebook = shared.codebook
            row.update(encoding="shared", offset=append(f"shared.{dtype}", codebook), count=codebook.size)
            packed = _pack_indices(shared.indices, _index_bits(codebook.size))
            if packed.size:
                row.update(aux_offset=append("shared.aux", packed), aux_count=packed.size)
            if shared.masked:
                mask = np.packbits(nonzero)
                row.update(mask_offset=append("shared.mask", mask), mask_count=mask.size)
        rows.append(row)
    return rows, streams


class _Shared(NamedTuple):
    """A tensor as codebook + indices: ``codebook[indices]`` gives its values (its nonzeros if masked)."""

    codebook: np.ndarray  # k distinct values (bit patterns for bfloat16), sorted by value
    indices: np.ndarray  # uint8, one per value, each < k
    masked: bool  # True: indices cover the nonzeros only and a position mask says where they go
    raw_bytes: int  # bytes before gzip: codebook + packed indices (+ mask)


def _shared(flat: np.ndarray, nonzero: np.ndarray, nnz: int, *, bfloat16: bool) -> _Shared | None:
    """The cheaper of the two shared forms of a flat floating tensor, or None when it has too many values.

    Without a mask the codebook holds every distinct bit pattern, zeros included; with one it
    holds the nonzero values only (a pruned and shared layer). Both need at most MAX_CODEBOOK
    entries.
    """
    found = _distinct(flat.view(f"u{flat.itemsize}"), MAX_CODEBOOK + 2)  # + the two zeros, +0.0 and -0.0
    if found is None:
        return None
    table, where = found
    sign = table.dtype.type(1 << (8 * flat.itemsize - 1))
    is_zero = (table & ~sign) == 0
    numel, itemsize, k_nonzero = flat.size, flat.itemsize, int((~is_zero).sum())
    options = []  # (raw bytes, masked)
    if table.size <= MAX_CODEBOOK:
        options.append((table.size * itemsize + math.ceil(numel * _index_bits(table.size) / 8), False))
    if nnz < numel and 0 < k_nonzero <= MAX_CODEBOOK:
        bits = _index_bits(k_nonzero)
        options.append((k_nonzero * itemsize + math.ceil(numel / 8) + math.ceil(nnz * bits / 8), True))
    if not options:
        return None
    raw_bytes, masked = min(options)
    if bfloat16:  # int16 bit patterns -> the float32 with the same sign, exponent and top mantissa bits
        values = (table.astype(np.uint32) << 16).view(np.float32)
    else:
        values = table.view(flat.dtype)
    order = np.lexsort((table, values))  # by value; -0.0 before +0.0 and NaNs by bit pattern
    if masked:
        order = order[~is_zero[order]]
    rank = np.zeros(table.size, dtype=np.uint8)
    rank[order] = np.arange(order.size)
    indices = rank[where[nonzero]] if masked else rank[where]
    return _Shared(table[order].view(flat.dtype), indices, masked, raw_bytes)


def _distinct(bits: np.ndarray, limit: int) -> tuple[np.ndarray, np.ndarray] | None:
    """The sorted distinct values of ``bits`` and each element's position among them; None past ``limit``.

    Guesses the table from a prefix and checks every element against it with a binary search, so a
    100M-element tensor with 32 values costs a few passes, not a full sort, and a tensor with many
    values usually stops at the prefix.
    """
    table = np.unique(bits[:_PROBE])
    while table.size <= limit:
        where = np.searchsorted(table, bits)
        np.minimum(where, table.size - 1, out=where)
        missed = bits[table[where] != bits]
        if missed.size == 0:
            return table, where
        table = np.union1d(table, np.unique(missed[: _PROBE * 16]))  # each round adds at least one value
    return None


def _index_bits(k: int) -> int:
    """ceil(log2(k)): bits per index into a codebook of k entries (0 for k = 1)."""
    return (k - 1).bit_length()


def _pack_indices(indices: np.ndarray, bits: int) -> np.ndarray:
    """uint8 indices below 2**bits -> their ``bits`` low bits each, most significant first, no gaps."""
    if bits == 0:
        return np.zeros(0, dtype=np.uint8)
    if bits == 8:
        return indices.astype(np.uint8)
    step = 1 << 22  # a multiple of 8 indices, so every chunk but the last ends on a byte boundary
    parts = []
    for start in range(0, indices.size, step):
        top = indices[start : start + step].astype(np.uint8) << (8 - bits)  # the index in the high bits
        parts.append(np.packbits(np.unpackbits(top[:, None], axis=1)[:, :bits]))
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint8)


def _unpack_indices(packed: np.ndarray, bits: int, n: int) -> np.ndarray:
    """The inverse of :func:`_pack_indices` for ``n`` indices."""
    if packed.size != math.ceil(n * bits / 8):
        raise ValueError(f"{packed.size} index bytes for {n} indices of {bits} bits")
    if bits == 0:
        return np.zeros(n, dtype=np.uint8)
    if bits == 8:
        return packed
    return np.packbits(np.unpackbits(packed, count=n * bits).reshape(n, bits), axis=1)[:, 0] >> (8 - bits)


def _index_table(rows: list[dict]) -> np.ndarray:
    names = [row["name"].encode("utf-8") for row in rows]
    width = max([len(n) for n in names] + [1])
    table = np.zeros(
        len(rows),
        dtype=[
            ("name", f"S{width}"),
            ("encoding", "S8"),
            ("dtype", "S16"),
            ("ndim", "i1"),
            ("shape", "i8", (MAX_NDIM,)),
            ("offset", "i8"),
            ("count", "i8"),
            ("aux_offset", "i8"),
            ("aux_count", "i8"),
            ("mask_offset", "i8"),
            ("mask_count", "i8"),
        ],
    )
    for i, (row, name) in enumerate(zip(rows, names)):
        shape = row["shape"]
        table[i] = (
            name, row["encoding"], row["dtype"], len(shape), tuple(shape) + (0,) * (MAX_NDIM - len(shape)),
            row["offset"], row["count"], row["aux_offset"], row["aux_count"], row["mask_offset"], row["mask_count"],
        )  # fmt: skip
    return table


def _write_stream(f: h5py.File, name: str, array: np.ndarray, *, shuffle: bool) -> None:
    """One 1-D dataset: raw in the object header when tiny, else a single gzip (+shuffle) chunk."""
    if array.nbytes < COMPACT_BYTES:
        dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        if array.size > 0:  # an empty stream keeps the default layout (nothing allocated)
            dcpl.set_layout(h5py.h5d.COMPACT)
        f.create_dataset(name, data=array, dcpl=dcpl)
        return
    rows = max(1, min(array.shape[0], _MAX_CHUNK_BYTES // array.itemsize))
    f.create_dataset(
        name,
        data=array,
        chunks=(rows,),
        compression="gzip",
        compression_opts=GZIP_LEVEL,
        shuffle=shuffle and array.itemsize > 1,
    )


def _to_numpy(tensor: torch.Tensor, key: str) -> np.ndarray:
    if tensor.dtype == torch.bfloat16:
        return tensor.view(torch.int16).numpy()
    try:
        return tensor.numpy()
    except TypeError:  # quantized, complex32 and other types numpy cannot hold
        raise FrontierError(f"artifact: tensor '{key}' has dtype {tensor.dtype}, which is not stored") from None


def _attr_value(value: object) -> object:
    if isinstance(value, str):
        return np.bytes_(value.encode("utf-8"))  # fixed-length: a vlen string costs a 4 KiB heap
    if isinstance(value, (bool, np.bool_)):
        return np.bool_(value)
    if isinstance(value, (int, np.integer)):
        return np.int64(value)
    return np.float64(value)


# -- reading ----------------------------------------------------------------------------------


def _decode_row(row: np.void, key: str, streams: dict[str, np.ndarray], path: Path) -> torch.Tensor:
    encoding, dtype = row["encoding"].decode(), row["dtype"].decode()
    shape = tuple(int(d) for d in row["shape"][: row["ndim"]])
    numel = math.prod(shape)
    offset, count = int(row["offset"]), int(row["count"])
    aux = slice(int(row["aux_offset"]), int(row["aux_offset"]) + int(row["aux_count"]))
    if encoding not in ENCODINGS:
        raise FrontierError(f"artifact: '{path}' stores tensor '{key}' with unknown encoding '{encoding}'")
    values = streams[f"{encoding}.{dtype}"][offset : offset + count] if count else None
    if encoding == "dense":
        if values is None:
            values = np.zeros(0, dtype=_storage_dtype(dtype))
        flat = values.copy()
    elif encoding == "sparse":
        flat = np.zeros(numel, dtype=_storage_dtype(dtype) if values is None else values.dtype)
        if values is not None:
            flat[np.unpackbits(streams["sparse.aux"][aux], count=numel).astype(bool)] = values
    else:
        if values is None or values.size != count:
            raise ValueError("a shared tensor without its codebook")
        keep, n = None, numel
        if int(row["mask_count"]):
            mask = streams["shared.mask"][int(row["mask_offset"]) : int(row["mask_offset"]) + int(row["mask_count"])]
            keep = np.unpackbits(mask, count=numel).astype(bool)
            n = int(keep.sum())
        bits = _index_bits(count)
        packed = streams["shared.aux"][aux] if bits else np.zeros(0, dtype=np.uint8)
        flat = values[_unpack_indices(packed, bits, n)]
        if keep is not None:
            flat, shared = np.zeros(numel, dtype=values.dtype), flat
            flat[keep] = shared
    tensor = torch.from_numpy(flat.reshape(shape))
    return tensor.view(torch.bfloat16) if dtype == "bfloat16" else tensor


def _storage_dtype(dtype: str) -> np.dtype:
    """The numpy type that holds torch dtype ``dtype`` (an empty tensor has no stream to ask)."""
    if dtype == "bfloat16":
        return np.dtype(np.int16)
    return torch.empty(0, dtype=getattr(torch, dtype)).numpy().dtype


def _decode(value: object) -> object:
    """HDF5 attribute -> Python value (bytes -> str, numpy scalars -> int, float, bool)."""
    if isinstance(value, (bytes, np.bytes_)):
        return value.decode("utf-8")
    if isinstance(value, np.generic):
        return value.item()
    return value
