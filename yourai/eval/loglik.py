"""ll(continuation | context) for many requests, each token computed once: lm-eval's `loglikelihood`, batched.

Definition: ll = sum over the continuation's tokens of log p(token | context + the tokens before it).

Every TruthfulQA context is the same few-shot primer plus a short question, and each question has
~7 choices, so a direct reading (one forward per choice over primer + question + choice) computes
the primer ~5,900 times. Here:

1. the prefix common to all contexts (the primer) runs once; its per-layer keys/values are kept;
2. contexts go in waves of a few hundred; a wave's tails run on the shared prefix, batched and
   right-padded, and their keys/values are kept in a pool;
3. continuations of one context that begin alike ("No, …", "The …") run their common first tokens
   once, as a stem on [prefix | tail]; then every continuation runs its own tokens on
   [prefix | its context's tail | its stem]. Rows of many contexts share a batch, sorted by
   length and right-padded; each row gathers its own middle from the pool, with its own RoPE
   offset and a mask that hides the unused middle slots (yourai.eval.kv_cache). Causal masks
   keep every pad after every scored position, so no scored position attends a pad;
4. the head runs only on positions whose next token is scored, in chunks (yourai.models.head).

Models whose cache is not mlx-lm's plain KVCache (sliding windows, state-space layers) fall back
to whole rows, still batched across questions and still scoring only the continuation positions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from yourai.eval.kv_cache import KVPool, layer_caches
from yourai.models import cpu_math
from yourai.models.head import HeadSplit, chunked_cross_entropy, split_head

MAX_BATCH_TOKENS = 4096  # new positions per forward (rows x padded width): large enough for efficient matmuls
MAX_BATCH_KV_POSITIONS = 2**17  # rows x (prefix + middle) per forward: bounds the keys/values joined per layer
WAVE_CONTEXTS = 256  # contexts whose positions are kept for reuse at once (SmolLM2: ~50 MB of keys/values)
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


@dataclass(frozen=True)
class _Stem:
    """Continuations of one context that begin alike: their common first tokens run once, as one row."""

    owner: int  # the context's index in its wave
    tokens: tuple[int, ...]  # the shared first tokens; empty for a continuation that shares nothing
    members: tuple[int, ...]  # indices into the wave's continuations


def _stems(owners: list[int], flat: list[Sequence[int]]) -> list[_Stem]:
    """Each context's continuations grouped by first token; a group shares its longest common prefix, cut short
    of every member's last token (a last token is scored, never an input). TruthfulQA: a fifth fewer positions."""
    by_first: dict[tuple[int, int], list[int]] = {}
    for index, (owner, continuation) in enumerate(zip(owners, flat)):
        if len(continuation) > 1:
            by_first.setdefault((owner, continuation[0]), []).append(index)
    stems = []
    for (owner, _), members in by_first.items():
        rows = [flat[i] for i in members]
        shared, limit = 0, min(len(row) for row in rows) - 1 if len(rows) > 1 else 0
        while shared < limit and all(row[shared] == rows[0][shared] for row in rows):
            shared += 1
        stems.append(_Stem(owner, tuple(rows[0][:shared]), tuple(members)))
    return stems


def _add_scored(lls: np.ndarray, model: Any, split: HeadSplit | None, inputs: np.ndarray, caches: list,
                entries: list[tuple[int, int, int, Sequence[int]]]) -> None:
    """Score (row, column, target) entries and add each log-prob to every continuation listed with it."""
    if not entries:
        return
    scored = scored_log_probs(model, split, inputs, caches, tuple(list(v) for v in zip(*entries))[:3])
    for (_, _, _, owners), value in zip(entries, scored):
        lls[list(owners)] += value


class _Wave:
    """Contexts scored together: their tails, stems and continuations each run in a few large batches."""

    def __init__(self, model: Any, split: HeadSplit | None, prefix_kv: list, budget: int) -> None:
        self.model, self.split, self.prefix_kv, self.budget = model, split, prefix_kv, budget
        self.pool = KVPool(len(prefix_kv))

    def tails(self, tails: list[list[int]], flat: list[Sequence[int]], owners: list[int], lls: np.ndarray) -> list:
        """Run the tails on the prefix (right-padded, one RoPE offset); score every first token off each tail's end."""
        places: list = [None] * len(tails)
        for batch in plan_batches([len(tail) for tail in tails], self.budget):
            caches = layer_caches(self.prefix_kv)
            ends = _end_log_probs(self.model, self.split, _padded([tails[c] for c in batch]), caches,
                                  [len(tails[c]) - 1 for c in batch])
            row_of = {context: row for row, context in enumerate(batch)}
            for index, owner in enumerate(owners):
                if owner in row_of:
                    lls[index] += ends[row_of[owner], flat[index][0]]
            base, width = self.pool.add(caches)
            for row, context in enumerate(batch):
                places[context] = [base + row * width + t for t in range(len(tails[context]))]
        return places

    def run(self, rows: list[list[int]], middles: list[list[int]], targets: list[list[tuple[int, int, Sequence[int]]]],
            lls: np.ndarray, keep: bool) -> list:
        """Rows on [prefix | their middle positions]; targets per row: (column, token, continuations to credit).

        With `keep`, the rows' positions join the pool after the whole stage (so every batch gathers
        from one joined pool) and are returned per row.
        """
        places: list = [None] * len(rows)
        kv_rows = max(1, MAX_BATCH_KV_POSITIONS // (self.prefix_kv[0][0].shape[2] + max(map(len, middles))))
        kept = []
        for batch in plan_batches([len(row) for row in rows], self.budget, kv_rows):
            gathered, lengths = self.pool.gather([middles[i] for i in batch])
            caches = layer_caches(self.prefix_kv, gathered, lengths)
            entries = [(row, column, token, owners) for row, i in enumerate(batch) for column, token, owners in targets[i]]
            _add_scored(lls, self.model, self.split, _padded([rows[i] for i in batch]), caches, entries)
            kept += [(batch, caches)] if keep else []
        for batch, caches in kept:
            base, width = self.pool.add(caches)
            for row, i in enumerate(batch):
                places[i] = [base + row * width + t for t in range(len(rows[i]))]
        return places


def _end_log_probs(model: Any, split: HeadSplit | None, inputs: np.ndarray, caches: list,
                   ends: list[int]) -> np.ndarray:
    """log-softmax [rows, V] at each row's given position: every first continuation token is read off it."""
    rows, columns = mx.array(np.arange(len(ends))), mx.array(np.array(ends))
    if split is not None:
        logits = split.head(split.hidden(mx.array(inputs), cache=caches)[rows, columns]).astype(mx.float32)
    else:
        logits = model(mx.array(inputs), cache=caches)[rows, columns].astype(mx.float32)
    return np.array(cpu_math.log_softmax(logits), dtype=np.float64)


def _score_wave(model: Any, split: HeadSplit | None, prefix_kv: list, tails: list[list[int]],
                continuations: list[list[Sequence[int]]], budget: int) -> list[np.ndarray]:
    """lls of every continuation of a wave of contexts (steps 2 and 3 of the module docstring)."""
    owners = [context for context, own in enumerate(continuations) for _ in own]
    flat = [continuation for own in continuations for continuation in own]
    lls = np.zeros(len(flat))
    wave = _Wave(model, split, prefix_kv, budget)
    tail_places = wave.tails(tails, flat, owners, lls)
    stems = _stems(owners, flat)
    shared = [stem for stem in stems if stem.tokens]
    stem_targets = [[(column, stem.tokens[column + 1], stem.members) for column in range(len(stem.tokens) - 1)]
                    + [(len(stem.tokens) - 1, flat[m][len(stem.tokens)], (m,)) for m in stem.members] for stem in shared]
    stem_places = wave.run([list(stem.tokens) for stem in shared], [tail_places[stem.owner] for stem in shared],
                           stem_targets, lls, keep=True) if shared else []
    place_of = {id(stem): places for stem, places in zip(shared, stem_places)}
    leaves = [(stem, m) for stem in stems for m in stem.members if len(flat[m]) - 1 > len(stem.tokens)]
    if leaves:
        wave.run([list(flat[m][len(stem.tokens):-1]) for stem, m in leaves],
                 [tail_places[stem.owner] + place_of.get(id(stem), []) for stem, _ in leaves],
                 [[(column, flat[m][len(stem.tokens) + column + 1], (m,)) for column in range(len(flat[m]) - 1 - len(stem.tokens))]
                  for stem, m in leaves], lls, keep=False)
    return np.split(lls, np.cumsum([len(own) for own in continuations])[:-1])


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
        ordered = sorted(owned, key=len)  # similar tails share a wave: less padding
        lls = np.zeros(len(requests), dtype=np.float64)
        for start in range(0, len(ordered), WAVE_CONTEXTS):
            wave = ordered[start : start + WAVE_CONTEXTS]
            own = [[requests[i][1] for i in owned[context]] for context in wave]
            values = _score_wave(model, split, prefix_kv, [list(c[prefix_len:]) for c in wave], own, budget)
            for context, scores in zip(wave, values):
                lls[owned[context]] = scores
            bar.update(sum(len(owned[context]) for context in wave))
    return lls
