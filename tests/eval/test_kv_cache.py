"""Per-row middles: the mask a ragged batch attends with, and the pool rows gather their middles from."""

from __future__ import annotations

import mlx.core as mx
import numpy as np

from yourai.eval.kv_cache import KVPool, layer_caches, ragged_mask


def test_ragged_mask_shows_the_prefix_a_rows_own_middle_and_earlier_new_tokens():
    mask = np.array(ragged_mask(prefix=2, width=3, lengths=np.array([1, 3]), n=2))
    assert mask.shape == (2, 1, 2, 7)
    #                      prefix | middle (3 slots) | new
    expected_row0 = [[1, 1, 1, 0, 0, 1, 0], [1, 1, 1, 0, 0, 1, 1]]
    expected_row1 = [[1, 1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 1, 1]]
    np.testing.assert_array_equal(mask[0, 0], expected_row0)
    np.testing.assert_array_equal(mask[1, 0], expected_row1)


class _Forward:
    def __init__(self, keys, values):
        self.new = (keys, values)


def test_the_pool_gathers_each_rows_positions_in_order_across_forwards():
    first = mx.arange(2 * 1 * 3 * 2).reshape(2, 1, 3, 2).astype(mx.float32)  # rows, heads, width, dim
    second = 100 + mx.arange(1 * 1 * 2 * 2).reshape(1, 1, 2, 2).astype(mx.float32)
    pool = KVPool(layers=1)
    base_a, width_a = pool.add([_Forward(first, -first)])
    base_b, width_b = pool.add([_Forward(second, -second)])
    assert (base_a, width_a, base_b, width_b) == (0, 3, 6, 2)
    index = [[base_a + 1 * width_a + 0, base_b + 1], [base_a + 2]]  # row 1 pos 0 then second's pos 1; row 0 pos 2
    (keys, values), = [layer for layer in pool.gather(index)[0]]
    lengths = pool.gather(index)[1]
    np.testing.assert_array_equal(np.array(keys[0, 0, :2]), np.array([first[1, 0, 0], second[0, 0, 1]]))
    np.testing.assert_array_equal(np.array(keys[1, 0, 0]), np.array(first[0, 0, 2]))
    np.testing.assert_array_equal(np.array(values), -np.array(keys))
    assert lengths.tolist() == [2, 1]


def test_ragged_caches_offset_each_row_by_its_middle():
    prefix = [(mx.zeros((1, 1, 4, 2)), mx.zeros((1, 1, 4, 2)))]
    middle = [(mx.zeros((2, 1, 3, 2)), mx.zeros((2, 1, 3, 2)))]
    cache, = layer_caches(prefix, middle, np.array([1, 3]))
    assert np.array(cache.offset).tolist() == [5, 7]
    assert layer_caches(prefix)[0].offset == 4 and layer_caches(prefix)[0].make_mask(3) == "causal"
