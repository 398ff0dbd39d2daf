"""Keys and values computed once and attended by many rows: the shared prefix, per-row middles, a pool.

mlx-lm's attention asks a cache for three things: `offset` (where the new tokens sit, for RoPE),
`make_mask` and `update_and_fetch` (the keys/values to attend). `PrefixCache` answers them for a
forward whose rows attend [shared prefix | their own middle | their new tokens]: the prefix is
stored once and broadcast, each row's middle (its question, its answer's stem) may have its own
length — the RoPE offset is then per row and the mask hides the unused middle slots — and only
the new tokens' keys/values are kept (`new`), to become a later forward's middles via `KVPool`.
"""

from __future__ import annotations

from typing import Sequence

import mlx.core as mx
import numpy as np


def _kv_cache_base():
    from mlx_lm.models.cache import KVCache

    return KVCache


def prefix_cache(prefix: tuple[mx.array, mx.array], middle: tuple[mx.array, mx.array] | None = None,
                 lengths: np.ndarray | None = None):
    """A PrefixCache (an mlx-lm KVCache) for one layer; `lengths` are the middles' used slots per row."""

    class PrefixCache(_kv_cache_base()):
        def __init__(self) -> None:
            super().__init__()
            self.prefix, self.middle, self.new = prefix, middle, None
            self.width = middle[0].shape[2] if middle is not None else 0
            self.lengths = lengths
            base = prefix[0].shape[2]
            self.offset = base + self.width if lengths is None else mx.array(base + np.asarray(lengths))

        def update_and_fetch(self, keys: mx.array, values: mx.array) -> tuple[mx.array, mx.array]:
            self.new = (keys, values)
            return tuple(self._joined(part, new) for part, new in ((0, keys), (1, values)))

        def _joined(self, part: int, new: mx.array) -> mx.array:
            shared = self.prefix[part]
            pieces = [mx.broadcast_to(shared, (new.shape[0], *shared.shape[1:]))]
            pieces += [self.middle[part]] if self.middle is not None else []
            return mx.concatenate(pieces + [new], axis=2)

        def make_mask(self, n: int, return_array: bool = False, window_size: int | None = None, **_):
            if self.lengths is None:
                return super().make_mask(n, return_array=return_array, window_size=window_size)
            return ragged_mask(self.prefix[0].shape[2], self.width, np.asarray(self.lengths), n)

    return PrefixCache()


def ragged_mask(prefix: int, width: int, lengths: np.ndarray, n: int) -> mx.array:
    """Boolean [rows, 1, n, prefix + width + n]: all of the prefix, a row's first `length` middle slots, causal new."""
    column = np.arange(prefix + width + n)
    in_middle = (column >= prefix) & (column < prefix + width)
    middle_ok = in_middle[None, :] & ((column - prefix)[None, :] < lengths[:, None])
    new_ok = (column[None, :] >= prefix + width) & ((column - prefix - width)[None, :] <= np.arange(n)[:, None])
    mask = (column < prefix)[None, None, :] | middle_ok[:, None, :] | new_ok[None, :, :]
    return mx.array(mask[:, None])


def layer_caches(prefix_kv: list, middles: list | None = None, lengths: np.ndarray | None = None) -> list:
    """One PrefixCache per layer (middles: per layer (keys, values) [rows, heads, width, dim])."""
    return [prefix_cache(prefix, middles[layer] if middles else None, lengths) for layer, prefix in enumerate(prefix_kv)]


class KVPool:
    """Keys/values of every position computed so far, per layer, addressed by one integer per position.

    A forward's new keys/values [rows, heads, width, dim] are added whole (row r's position t gets
    index base + r * width + t); a later batch gathers each row's middle from any positions.
    """

    def __init__(self, layers: int) -> None:
        self.parts: list[list[tuple[mx.array, mx.array]]] = [[] for _ in range(layers)]
        self.joined: list[tuple[mx.array, mx.array]] | None = None
        self.size = 0

    def add(self, caches: list) -> tuple[int, int]:
        """Keep a forward's new keys/values; returns (base index, width) to address its positions."""
        keys, _ = caches[0].new
        rows, heads, width, dim = keys.shape
        for layer, cache in enumerate(caches):
            flat = [part.transpose(1, 0, 2, 3).reshape(heads, rows * width, -1) for part in cache.new]
            self.parts[layer].append((flat[0], flat[1]))
        base, self.size, self.joined = self.size, self.size + rows * width, None
        return base, width

    def gather(self, index: Sequence[Sequence[int]]) -> tuple[list, np.ndarray]:
        """Per layer (keys, values) [rows, heads, width, dim] of each row's positions (padded), and their lengths."""
        lengths = np.array([len(row) for row in index])
        padded = np.zeros((len(index), max(1, int(lengths.max()))), dtype=np.int32)
        for row, positions in enumerate(index):
            padded[row, : len(positions)] = positions
        if self.joined is None:
            self.joined = [tuple(mx.concatenate([p[i] for p in parts], axis=1) for i in (0, 1)) for parts in self.parts]
        take = mx.array(padded)
        middles = [tuple(part[:, take].transpose(1, 0, 2, 3) for part in layer) for layer in self.joined]
        return middles, lengths
