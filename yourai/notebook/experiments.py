"""Multi-run experiments behind notebook 04 (and the data a run needs when the user names none).

This layer sits above the stages: it may curate (stage 01) to feed training (stage 04), which
the training package itself never does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import mlx.core as mx

from yourai.config import Config, with_overrides
from yourai.data.batches import DataError
from yourai.stats import mean_ci95
from yourai.train import train
from yourai.train.checkpoints import latest_checkpoint, sha256_file


def _curate_default(config: Config, path: Path) -> None:
    from yourai.data.curate import curate

    curate(None, path, config.curate, workers=config.scoring.workers)


def resolve_data(config: Config, data_dir: str | Path | None, out_dir: str | Path) -> Path:
    """A curated dir (train.jsonl, optional valid.jsonl), or curate.sources curated once into <out>/data.

    Under `mlx.launch` rank 0 curates and the other ranks wait for it, then all read the same files.
    """
    if data_dir is not None:
        path = Path(data_dir)
        if not (path / "train.jsonl").is_file():
            raise DataError(f"{path / 'train.jsonl'}: not found (run `yourai curate ... --out {path}` first)")
        return path
    path = Path(out_dir) / "data"
    group = mx.distributed.init()
    if group.rank() == 0 and not (path / "train.jsonl").is_file():
        _curate_default(config, path)
    if group.size() > 1:
        mx.eval(mx.distributed.all_sum(mx.array(0.0), stream=mx.cpu))  # the others wait for rank 0
    return path


def adapters_identical(first: Path, second: Path) -> bool:
    """Bitwise equality of two runs' adapters.safetensors (same tensors, same bytes)."""
    return (Path(first) / "adapters.safetensors").read_bytes() == (Path(second) / "adapters.safetensors").read_bytes()


def can_resume(out_dir: str | Path) -> bool:
    """Whether a run directory holds a checkpoint to continue from (a stopped run left one)."""
    return latest_checkpoint(Path(out_dir) / "checkpoints") is not None


def experiment_arms(seeds: Sequence[int], objectives: Sequence[str], faithful_once: bool = True) -> list[tuple[int, str]]:
    """(seed, objective) pairs in training order. Faithful's extra term has zero gradient, so its adapters
    equal plain's bit for bit; with `faithful_once` it is trained for the first seed only, to show that once
    rather than spend a full training run per seed on a known answer (on a real model each run is minutes)."""
    return [(seed, objective) for i, seed in enumerate(seeds) for objective in objectives
            if not (faithful_once and objective == "faithful" and i > 0)]


def objective_experiment(config: Config, data_dir: Path, out_dir: Path, seeds: Sequence[int],
                         objectives: Sequence[str] = ("plain", "faithful", "weighted"), resume: bool = False,
                         faithful_once: bool = True) -> list[dict]:
    """Train every arm of `experiment_arms` on the same data; one row per run with its final validation.

    Each arm owns `out_dir/seed<N>-<objective>`. With `resume`, arms that were stopped (or finished)
    continue from their checkpoints (a finished one is read back, not retrained); without it (or with
    nothing to resume) an arm starts over.
    """
    rows = []
    for seed, objective in experiment_arms(seeds, objectives, faithful_once):
        run_dir = Path(out_dir) / f"seed{seed}-{objective}"
        arm = with_overrides(config, {"train.seed": seed, "loss.objective": objective}, "experiment arm")
        resuming = resume and can_resume(run_dir)
        result = train(arm, run_dir, data_dir=data_dir, resume=resuming, overwrite=not resuming, progress=False)
        final = result.evals[-1] if result.evals else {}
        rows.append({"seed": seed, "objective": objective, "train_loss": result.last.get("loss"),
                     "train_ce": result.last.get("ce"), **{k: final.get(k) for k in
                     ("val_loss", "val_loss_primary", "val_loss_middle", "val_loss_consensus", "val_gap")},
                     "tokens_per_s": result.tokens_per_s,
                     "adapters_sha256": sha256_file(result.adapters_dir / "adapters.safetensors"),
                     "adapters_dir": str(result.adapters_dir)})
    return rows


def experiment_summary(rows: Sequence[dict]) -> dict:
    """Gap (primary - consensus val loss) per objective, paired weighted - plain change, faithful identity."""
    by = {(r["seed"], r["objective"]): r for r in rows}
    seeds = sorted({r["seed"] for r in rows})
    summary: dict[str, Any] = {"seeds": seeds}
    for objective in sorted({r["objective"] for r in rows}):
        gaps = [by[(s, objective)]["val_gap"] for s in seeds if by.get((s, objective), {}).get("val_gap") is not None]
        if gaps:
            summary[f"gap_{objective}_mean"], summary[f"gap_{objective}_ci95"] = mean_ci95(gaps)
    paired = [by[(s, "weighted")]["val_gap"] - by[(s, "plain")]["val_gap"] for s in seeds
              if (s, "weighted") in by and (s, "plain") in by]
    if paired:
        summary["gap_change_weighted_minus_plain_mean"], summary["gap_change_weighted_minus_plain_ci95"] = mean_ci95(paired)
    pairs = [(by[(s, "plain")], by[(s, "faithful")]) for s in seeds if (s, "plain") in by and (s, "faithful") in by]
    if pairs:
        summary["faithful_bit_identical_to_plain"] = all(
            adapters_identical(Path(p["adapters_dir"]), Path(f["adapters_dir"])) for p, f in pairs)
    return summary
