"""The GGUF container and its tensors: our own reader, because `mx.load` is not safe for general GGUF files.

`mx.load` (mlx 0.32) reads GGUF but silently drops tensors it does not know (TQ1_0, TQ2_0, MXFP4, NVFP4),
fails on the whole file for Q5_0/Q5_1/Q3_K/Q5_K/IQ*, rounds BF16 to float16 and decodes Q4_K wrongly
(the odd sub-blocks get the even sub-block's scale). So we parse the header ourselves (the layout is in
ggml's docs/gguf.md) and decode tensors by type:

* Q4_0, Q4_1, Q8_0: repacked into MLX affine triples (weight, scales, biases) with group size 32, so the
  4-/8-bit base is kept *exactly*: MLX computes `scale * q + bias` per group of 32, GGML `d * q + m`
  (Q4_1), `d * (q - 8)` (Q4_0) or `d * q` with signed q (Q8_0), which are the same numbers.
* F32, F16, BF16: read as they are.
* anything else: dequantized to float16 with the PyPI `gguf` package (an optional dependency; the
  caller records a note), since MLX has no matching quantized layout.
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlx.core as mx
import numpy as np

GGUF_MAGIC = b"GGUF"
GROUP_SIZE = 32  # every GGML block type MLX can hold natively has 32 weights per block
DEFAULT_ALIGNMENT = 32  # gguf.md: tensor data starts at a multiple of general.alignment (default 32)

# GGML tensor type ids (ggml.h) of the types decoded without the `gguf` package.
F32, F16, Q4_0, Q4_1, Q8_0, BF16 = 0, 1, 2, 3, 8, 30
TYPE_NAMES = {F32: "F32", F16: "F16", Q4_0: "Q4_0", Q4_1: "Q4_1", Q8_0: "Q8_0", BF16: "BF16"}
FLOAT_TYPES = {F32: np.float32, F16: np.float16}
QUANT_TYPES = {Q4_0: (18, 4), Q4_1: (20, 4), Q8_0: (34, 8)}  # bytes per block of 32, bits per weight

# GGUF metadata value types (gguf.md): numeric ones by numpy dtype; 8 is a string, 9 an array.
VALUE_DTYPES = {0: np.uint8, 1: np.int8, 2: np.uint16, 3: np.int16, 4: np.uint32, 5: np.int32,
                6: np.float32, 7: np.bool_, 10: np.uint64, 11: np.int64, 12: np.float64}
STRING_TYPE, ARRAY_TYPE = 8, 9


@dataclass(frozen=True)
class TensorInfo:
    """Where one tensor lives in the file, with its row-major (MLX/numpy) shape."""

    name: str
    shape: tuple[int, ...]
    ggml_type: int
    offset: int  # absolute byte offset in the file


@dataclass
class GGUFFile:
    """A parsed GGUF: metadata, the tensor table, and the mapped bytes the tensors live in."""

    path: Path
    metadata: dict[str, Any]
    tensors: list[TensorInfo]
    data: mmap.mmap


class _Reader:
    """Sequential little-endian reads over the mapped header."""

    def __init__(self, buffer: mmap.mmap, path: Path) -> None:
        self.buffer, self.position, self.path = buffer, 0, path

    def scalar(self, fmt: str) -> Any:
        try:
            (value,) = struct.unpack_from(fmt, self.buffer, self.position)
        except struct.error as err:
            raise ValueError(f"{self.path}: truncated GGUF header at byte {self.position}") from err
        self.position += struct.calcsize(fmt)
        return value

    def string(self) -> str:
        length = self.scalar("<Q")
        raw = self.buffer[self.position:self.position + length]
        self.position += length
        return raw.decode("utf-8", errors="replace")

    def value(self, value_type: int) -> Any:
        if value_type == STRING_TYPE:
            return self.string()
        if value_type == ARRAY_TYPE:
            return self.array()
        if value_type not in VALUE_DTYPES:
            raise ValueError(f"{self.path}: unknown GGUF value type {value_type} at byte {self.position}")
        dtype = np.dtype(VALUE_DTYPES[value_type]).newbyteorder("<")
        return np.frombuffer(self._take(dtype.itemsize), dtype)[0].item()

    def _take(self, size: int) -> bytes:
        raw = self.buffer[self.position:self.position + size]
        if len(raw) < size:
            raise ValueError(f"{self.path}: truncated GGUF header at byte {self.position}")
        self.position += size
        return raw

    def array(self) -> Any:
        item_type, count = self.scalar("<I"), self.scalar("<Q")
        if item_type in VALUE_DTYPES:  # numeric arrays (token types, scores) in one slice
            dtype = np.dtype(VALUE_DTYPES[item_type]).newbyteorder("<")
            return np.frombuffer(self._take(dtype.itemsize * count), dtype).copy()
        return [self.value(item_type) for _ in range(count)]


def read_gguf(path: str | Path) -> GGUFFile:
    """Parse the header and tensor table once; tensor bytes stay mapped until decoded."""
    path = Path(path)
    with open(path, "rb") as handle:
        buffer = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
    if buffer[:4] != GGUF_MAGIC:
        raise ValueError(f"{path}: not a GGUF file (starts with {bytes(buffer[:4])!r}, expected b'GGUF')")
    reader = _Reader(buffer, path)
    reader.position = 4
    version = reader.scalar("<I")
    if version < 2:
        raise ValueError(f"{path}: GGUF version {version} is not supported (need 2 or later)")
    n_tensors, n_values = reader.scalar("<Q"), reader.scalar("<Q")
    metadata = {}
    for _ in range(n_values):
        key = reader.string()
        metadata[key] = reader.value(reader.scalar("<I"))
    table = []
    for _ in range(n_tensors):
        name = reader.string()
        dims = [reader.scalar("<Q") for _ in range(reader.scalar("<I"))]
        table.append((name, tuple(reversed(dims)), reader.scalar("<I"), reader.scalar("<Q")))
    alignment = int(metadata.get("general.alignment", DEFAULT_ALIGNMENT))
    data_start = -(-reader.position // alignment) * alignment
    tensors = [TensorInfo(name, shape, kind, data_start + offset) for name, shape, kind, offset in table]
    return GGUFFile(path, metadata, tensors, buffer)


def type_name(ggml_type: int) -> str:
    """A GGML type's name for notes and errors (the `gguf` package knows every name, we know ours)."""
    if ggml_type in TYPE_NAMES:
        return TYPE_NAMES[ggml_type]
    try:
        import gguf

        return gguf.GGMLQuantizationType(ggml_type).name
    except (ImportError, ValueError):
        return f"GGML type {ggml_type}"


# --- decoding -------------------------------------------------------------------------


def pack_bits(values: np.ndarray, bits: int) -> np.ndarray:
    """Pack unsigned ints along the last axis into uint32 words, lowest bits first, as MLX stores them."""
    per_word = 32 // bits
    words = values.astype(np.uint32).reshape(*values.shape[:-1], -1, per_word)
    shifts = np.arange(per_word, dtype=np.uint32) * bits
    return np.bitwise_or.reduce(words << shifts, axis=-1)


def _blocks(gguf: GGUFFile, info: TensorInfo, block_bytes: int) -> np.ndarray:
    """A block-quantized tensor as (rows, blocks per row, bytes per block) uint8."""
    rows, columns = int(np.prod(info.shape[:-1])), info.shape[-1]
    if columns % GROUP_SIZE:
        raise ValueError(f"{gguf.path}: {info.name}: row length {columns} is not a multiple of {GROUP_SIZE}")
    count = rows * (columns // GROUP_SIZE) * block_bytes
    return np.frombuffer(gguf.data, np.uint8, count, info.offset).reshape(rows, columns // GROUP_SIZE, block_bytes)


def _half_at(blocks: np.ndarray, start: int) -> np.ndarray:
    """The float16 stored at byte `start` of every block (GGML's per-block d and m)."""
    return np.ascontiguousarray(blocks[..., start:start + 2]).view(np.float16)[..., 0]


def decode_quantized(gguf: GGUFFile, info: TensorInfo, exact_q8: bool = True) -> dict[str, np.ndarray]:
    """Q4_0/Q4_1/Q8_0 blocks as MLX affine {weight, scales, biases}, group 32, the same numbers exactly.

    Q8_0 holds signed q with w = d·q; MLX's q is unsigned, so q + 128 with bias −128·d. MLX dequantizes
    in the scales' dtype, and in float16 `(q + 128)·d − 128·d` cancels away ~12 % of a step; `exact_q8`
    keeps Q8_0 scales and biases in float32 (3.5 MB more for SmolLM2's embedding) so nothing is lost.
    """
    block_bytes, bits = QUANT_TYPES[info.ggml_type]
    blocks = _blocks(gguf, info, block_bytes)
    scales = _half_at(blocks, 0)
    if info.ggml_type == Q8_0:
        quants = (blocks[..., 2:].view(np.int8).astype(np.int16) + 128).astype(np.uint8)
        dtype = np.float32 if exact_q8 else np.float16
        scales = scales.astype(dtype)
        biases = (scales.astype(np.float32) * -128).astype(dtype)
    else:  # 16 bytes of nibbles: the low nibbles are weights 0..15 of the block, the high ones 16..31
        nibbles = blocks[..., -16:]
        quants = np.concatenate([nibbles & 0x0F, nibbles >> 4], axis=-1)
        offset = -8 if info.ggml_type == Q4_0 else None
        biases = _half_at(blocks, 2) if offset is None else (scales.astype(np.float32) * offset).astype(np.float16)
    rows = quants.shape[0]
    return {"weight": pack_bits(quants.reshape(rows, -1), bits), "scales": scales, "biases": biases}


def decode_float(gguf: GGUFFile, info: TensorInfo) -> mx.array:
    """An F32/F16/BF16 tensor at its own precision (BF16 stays bfloat16)."""
    count = int(np.prod(info.shape))
    if info.ggml_type == BF16:
        raw = np.frombuffer(gguf.data, np.uint16, count, info.offset).reshape(info.shape)
        return mx.array(raw).view(mx.bfloat16)
    return mx.array(np.frombuffer(gguf.data, FLOAT_TYPES[info.ggml_type], count, info.offset).reshape(info.shape))


def decode_with_gguf_package(gguf: GGUFFile, info: TensorInfo) -> mx.array:
    """Any other GGML type (K-quants, IQ*, Q5_*), dequantized to float16 by the `gguf` package."""
    try:
        import gguf as gguf_package
    except ImportError as err:
        raise ValueError(f"{gguf.path}: {info.name} is {type_name(info.ggml_type)}, which MLX cannot hold "
                         "quantized; importing it needs the `gguf` package (pip install gguf)") from err
    try:
        quant_type = gguf_package.GGMLQuantizationType(info.ggml_type)
        block_weights, block_bytes = gguf_package.GGML_QUANT_SIZES[quant_type]
    except (ValueError, KeyError) as err:
        raise ValueError(f"{gguf.path}: {info.name} has unknown GGML type {info.ggml_type}") from err
    rows = int(np.prod(info.shape[:-1]))
    count = int(np.prod(info.shape)) // block_weights * block_bytes
    raw = np.frombuffer(gguf.data, np.uint8, count, info.offset).reshape(rows, -1)
    values = gguf_package.quants.dequantize(raw, quant_type)
    return mx.array(values.reshape(info.shape).astype(np.float16))


def decode_tensor(gguf: GGUFFile, info: TensorInfo, notes: list[str], exact_q8: bool = True) -> dict[str, mx.array]:
    """One tensor as {"weight": …} or the affine triple; a lossy conversion appends a note."""
    if info.ggml_type in QUANT_TYPES:
        return {key: mx.array(value) for key, value in decode_quantized(gguf, info, exact_q8).items()}
    if info.ggml_type in FLOAT_TYPES or info.ggml_type == BF16:
        return {"weight": decode_float(gguf, info)}
    notes.append(f"{info.name}: {type_name(info.ggml_type)} has no MLX quantized equivalent; dequantized to float16")
    return {"weight": decode_with_gguf_package(gguf, info)}
