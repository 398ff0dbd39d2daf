"""ll(continuation | context) for many requests, each token computed once: lm-eval's `loglikelihood`, batched.

Definition: ll = sum over the continuation's tokens of log p(token | context + the tokens before it).

Every TruthfulQA context is the same few-shot primer plus a short question, and each question has
~7 choices, so a direct reading (one forward per choice over primer + question + choice) computes
the primer ~5,900 times. Here:

1. the prefix common to all contexts (the primer) runs once; its per-layer keys/values are kept;
2. contexts are grouped by the length of their own tail; a group's tails run as one batch on the
   shared prefix (equal lengths: no padding, one RoPE offset) and their keys/values are kept;
3. every continuation then runs on [prefix | its own context's tail], continuations of many
   contexts batched together, sorted by length and right-padded (the causal mask keeps every pad
   after every scored position, so no scored position attends a pad);
4. the head runs only on positions whose next token is scored, in chunks (yourai.models.head).

Models whose cache is not mlx-lm's plain KVCache (sliding windows, state-space layers) fall back
to whole rows, still batched across questions and still scoring only the continuation positions.
"""

from __future__ import annotations

from typing import Any, Sequence

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from yourai.models.head import HeadSplit, chunked_cross_entropy, split_head

MAX_BATCH_TOKENS = 4096  # new positions per forward (rows x padded width): large enough for efficient matmuls
MAX_BATCH_KV_POSITIONS = 2**17  # rows x (prefix + tail) per forward: bounds the keys/values gathered per layer
PAD_SLACK = 0.1  # a batch's padding stays within 10 % of its real positions
PAD_TOKEN_ID = 0  # any id: right padding sits after every scored position, so it is never attended


def shared_prefix_length(contexts: Sequence[Sequence[int]]) -> int:
    """Tokens common to every context, leaving each row ≥ 1 own context token (it predicts the answer)."""
    first, limit = contexts[0], min(len(context) for context in contexts) - 1
    length = 0
    while length < limit and all(context[length] == first[length] for context in contexts):
        length += 1
    return length


def plan_batches(row_lengths: Sequence[int], max_batch_tokens: int, max_rows: int | None = None) -> list[list[int]]:
    """Group row indices by length so each padded batch stays within `max_batch_tokens` (and `max_rows`).

    Rows are taken shortest first; a batch is also closed when padding it to the next row's length
    would add more than PAD_SLACK of its real tokens (a pad costs a full forward position; an extra
    forward costs almost nothing in comparison).
    """
    batches: list[list[int]] = []
    current: list[int] = []
    real = 0
    for index in sorted(range(len(row_lengths)), key=lambda i: row_lengths[i]):
        padded = (len(current) + 1) * row_lengths[index]
        full = padded > max_batch_tokens or len(current) == (max_rows or -1) \
            or padded > (1 + PAD_SLACK) * (real + row_lengths[index])
        if current and full:
            batches.append(current)
            current, real = [], 0
        current.append(index)
        real += row_lengths[index]
    return batches + [current] if current else batches


def prefill_prefix(model: Any, prefix_ids: Sequence[int]) -> list[tuple[mx.array, mx.array]] | None:
    """Run the shared prefix once; its per-layer (keys, values), or None if the cache is not a plain KVCache."""
    from mlx_lm.models.cache import KVCache, make_prompt_cache

    cache = make_prompt_cache(model)
    if not prefix_ids or not all(type(layer) is KVCache for layer in cache):
        return None
    model(mx.array([list(prefix_ids)]), cache=cache)
    prefix_kv = [(layer.keys[..., : layer.offset, :], layer.values[..., : layer.offset, :]) for layer in cache]
    mx.eval(prefix_kv)
    return prefix_kv


def _prefix_cache_class():
    from mlx_lm.models.cache import KVCache

    class PrefixCache(KVCache):
        """One forward's cache: attends [shared prefix | per-row middle | this forward], keeps only this forward's.

        A KVCache for everything the model asks of it (offset for RoPE, the causal mask); it never
        copies the prefix into a per-row store, so a batch of many rows costs one layer's join at a time.
        """

        def __init__(self, prefix: tuple[mx.array, mx.array], middle: tuple[mx.array, mx.array] | None) -> None:
            super().__init__()
            self.prefix, self.middle = prefix, middle
            self.offset = prefix[0].shape[2] + (middle[0].shape[2] if middle else 0)
            self.new: tuple[mx.array, mx.array] | None = None

        def update_and_fetch(self, keys: mx.array, values: mx.array) -> tuple[mx.array, mx.array]:
            self.new = (keys, values)
            return tuple(self._joined(part, new) for part, new in ((0, keys), (1, values)))

        def _joined(self, part: int, new: mx.array) -> mx.array:
            shared = self.prefix[part]
            pieces = [mx.broadcast_to(shared, (new.shape[0], *shared.shape[1:]))]
            pieces += [self.middle[part]] if self.middle else []
            return mx.concatenate(pieces + [new], axis=2)

    return PrefixCache


def _caches(prefix_kv: list, middle_kv: list | None, rows: np.ndarray | None) -> list:
    """A PrefixCache per layer; `rows` picks each batch row's middle (its context's tail)."""
    prefix_cache = _prefix_cache_class()
    if middle_kv is None:
        return [prefix_cache(layer, None) for layer in prefix_kv]
    index = mx.array(rows)
    return [prefix_cache(layer, (keys[index], values[index])) for layer, (keys, values) in zip(prefix_kv, middle_kv)]


def scored_log_probs(model: Any, split: HeadSplit | None, inputs: np.ndarray, cache: Any,
                     positions: tuple[list[int], list[int], list[int]]) -> np.ndarray:
    """log p(target | row, column) for the given (rows, columns, targets) only: the head skips every other position."""
    rows, columns, targets = (mx.array(np.asarray(values, dtype=np.int32)) for values in positions)
    if split is not None:
        picked = split.hidden(mx.array(inputs), cache=cache)[rows, columns]
        token_ce = chunked_cross_entropy(split, picked, targets, differentiable=False)
    else:
        picked = model(mx.array(inputs), cache=cache)[rows, columns].astype(mx.float32)
        token_ce = nn.losses.cross_entropy(picked, targets)
    return -np.array(token_ce, dtype=np.float64)


def _padded(rows: Sequence[Sequence[int]]) -> np.ndarray:
    inputs = np.full((len(rows), max(len(row) for row in rows)), PAD_TOKEN_ID, dtype=np.int32)
    for index, row in enumerate(rows):
        inputs[index, : len(row)] = row
    return inputs


def _continuation_positions(continuations: Sequence[Sequence[int]]) -> tuple[list[int], list[int], list[int]]:
    """Row r's position j predicts its token j + 1 (the first token is scored from the context's end)."""
    positions: tuple[list[int], list[int], list[int]] = ([], [], [])
    for row, continuation in enumerate(continuations):
        for column, target in enumerate(continuation[1:]):
            for values, value in zip(positions, (row, column, target)):
                values.append(value)
    return positions


def _context_end_log_probs(model: Any, split: HeadSplit | None, tails: list[list[int]],
                           caches: list) -> np.ndarray:
    """log-softmax [G, V] at the last position of each tail: every first continuation token is read off it."""
    if split is not None:
        hidden = split.hidden(mx.array(tails), cache=caches)[:, -1]
        logits = split.head(hidden).astype(mx.float32)
    else:
        logits = model(mx.array(tails), cache=caches)[:, -1].astype(mx.float32)
    return np.array(logits - mx.logsumexp(logits, axis=-1, keepdims=True), dtype=np.float64)


def _score_context_group(model: Any, split: HeadSplit | None, prefix_kv: list, tails: list[list[int]],
                         continuations: list[list[Sequence[int]]], max_batch_tokens: int) -> list[np.ndarray]:
    """lls of every continuation of a group of contexts whose tails have equal length (steps 2 and 3)."""
    caches = _caches(prefix_kv, None, None)
    end_log_probs = _context_end_log_probs(model, split, tails, caches)
    middle_kv = [cache.new for cache in caches]
    owners = [row for row, own in enumerate(continuations) for _ in own]
    flat = [continuation for own in continuations for continuation in own]
    lls = np.array([end_log_probs[row, continuation[0]] for row, continuation in zip(owners, flat)])
    longer = [index for index, continuation in enumerate(flat) if len(continuation) > 1]
    kv_positions = prefix_kv[0][0].shape[2] + len(tails[0])
    for batch in plan_batches([len(flat[i]) - 1 for i in longer], max_batch_tokens,
                              max(1, MAX_BATCH_KV_POSITIONS // kv_positions)):
        chosen = [longer[i] for i in batch]
        rows = [flat[i] for i in chosen]
        caches = _caches(prefix_kv, middle_kv, np.array([owners[i] for i in chosen]))
        positions = _continuation_positions(rows)
        np.add.at(lls, np.array(chosen)[positions[0]], scored_log_probs(model, split, _padded([r[:-1] for r in rows]),
                                                                        caches, positions))
    sizes = np.cumsum([len(own) for own in continuations])[:-1]
    return np.split(lls, sizes)


def score_full_rows(model: Any, split: HeadSplit | None, requests: Sequence[tuple[Sequence[int], Sequence[int]]],
                    max_batch_tokens: int, bar: Any) -> np.ndarray:
    """Fallback for caches that cannot be shared (sliding windows, SSMs): whole rows, batched across requests."""
    rows = [list(context) + list(continuation) for context, continuation in requests]
    lls = np.zeros(len(rows), dtype=np.float64)
    for batch in plan_batches([len(row) - 1 for row in rows], max_batch_tokens):
        positions: tuple[list[int], list[int], list[int]] = ([], [], [])
        for row_index, request_index in enumerate(batch):
            context, continuation = requests[request_index]
            for offset, target in enumerate(continuation):
                for values, value in zip(positions, (row_index, len(context) - 1 + offset, target)):
                    values.append(value)
        scored = scored_log_probs(model, split, _padded([rows[i][:-1] for i in batch]), None, positions)
        np.add.at(lls, np.array(batch)[positions[0]], scored)
        bar.update(len(batch))
    return lls


def score_requests(model: Any, requests: Sequence[tuple[Sequence[int], Sequence[int]]], *, share_prefix: bool = True,
                   max_batch_tokens: int | None = None, progress: bool = True, desc: str = "scoring") -> np.ndarray:
    """ll(continuation | context) for every (context_ids, continuation_ids) request (see the module docstring)."""
    from tqdm.auto import tqdm

    budget = max_batch_tokens or MAX_BATCH_TOKENS
    contexts = [tuple(context) for context, _ in requests]
    prefix_len = shared_prefix_length(contexts) if share_prefix else 0
    prefix_kv = prefill_prefix(model, contexts[0][:prefix_len]) if prefix_len else None
    split = split_head(model, differentiable=False)
    with tqdm(total=len(requests), desc=desc, disable=not progress, leave=False) as bar:
        if prefix_kv is None:
            return score_full_rows(model, split, requests, budget, bar)
        owned: dict[tuple[int, ...], list[int]] = {}
        for index, context in enumerate(contexts):
            owned.setdefault(context, []).append(index)
        by_tail: dict[int, list[tuple[int, ...]]] = {}
        for context in owned:
            by_tail.setdefault(len(context) - prefix_len, []).append(context)
        lls = np.zeros(len(requests), dtype=np.float64)
        for tail_len, group in sorted(by_tail.items()):
            step = max(1, budget // tail_len)
            for start in range(0, len(group), step):
                part = group[start : start + step]
                own = [[requests[i][1] for i in owned[context]] for context in part]
                for context, values in zip(part, _score_context_group(model, split, prefix_kv,
                                                                      [list(c[prefix_len:]) for c in part], own, budget)):
                    lls[owned[context]] = values
                bar.update(sum(len(owned[context]) for context in part))
    return lls
