"""Training throughput and peak RSS: `yourai train` vs `mlx_lm.lora` on the same model, data and shapes.

Each arm runs in its own fresh process (so peak RSS is that arm's alone), arms alternate, and we
report medians over repeats. Both arms train LoRA (same rank, scale, layers, learning rate, AdamW)
on the same text-only dataset with the same batch size and max sequence length; both processes
import yourai first, so both use the same BLAS. Tokens are counted as mlx-lm counts them (every
real token of every trained sequence), over the steady-state steps only (compilation excluded),
with validation time excluded in both.

Achieved FLOP/s uses the LoRA estimate 4 * N_matmul per token (forward 2N, input gradients 2N; the
frozen base needs no weight gradients; attention scores ignored) against an MLX float32 matmul
ceiling measured in the same run. Targets: >= 1.10x mlx-lm tokens/s, <= 1.0x its peak RSS.

With ``--aa`` a second, identical ``yourai plain`` arm runs too: its ratio to the first is the
noise floor of this machine (an A/A check), to judge the other ratios by.

    python benchmarks/train_throughput.py [--repeats 3] [--steps 30] [--batch 8] [--seq 256] [--aa]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yourai  # noqa: F401  (OpenBLAS before mlx)

SKIP_STEPS = 5  # compile and allocator warm-up, excluded from tokens/s
REPORT_EVERY = 5  # mlx-lm reports tokens/s per window of this many steps
TARGET_SPEED, TARGET_RSS = 1.10, 1.0
MATMUL_SIZE = 512
LORA = {"rank": 8, "scale": 20.0, "dropout": 0.0}
AA_ARM = "yourai plain A/A"

OURS = r'''
import json, resource, sys, statistics
import yourai
from yourai.config import load_config
from yourai.train import Trainer, TrainingCallback
a = json.loads(sys.argv[1])
class Rate(TrainingCallback):
    def __init__(self): self.rows = []
    def on_step_end(self, step, m): self.rows.append((m["tokens"] + m["micro_batch"], m["step_time_s"]))
cfg = load_config(None, {"train.steps": a["steps"], "train.batch_size": a["batch"], "train.max_seq_length": a["seq"],
    "train.learning_rate": 1e-5, "train.warmup_steps": 0, "train.min_lr_ratio": 1.0, "train.weight_decay": 0.0,
    "train.grad_clip": 0.0, "train.eval_every": 10**6, "train.val_batches": 1, "train.save_every": 10**6,
    "loss.objective": a["objective"], "train.lora.rank": 8, "train.lora.scale": 20.0})
rate = Rate()
Trainer(cfg, a["out"], data_dir=a["data"], callbacks=[rate], progress=False).fit()
steady = rate.rows[a["skip"]:]
print(json.dumps({"tokens_per_s": sum(t for t, _ in steady) / sum(s for _, s in steady),
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
'''

PEER = r'''
import json, resource, sys, types
import yourai
from mlx_lm import lora
from mlx_lm.tuner.callbacks import TrainingCallback
from yourai.models import ensure_default_model
a = json.loads(sys.argv[1])
class Rate(TrainingCallback):
    def __init__(self): self.rows = []
    def on_train_loss_report(self, info): self.rows.append((info["iteration"], info["tokens_per_second"]))
args = dict(lora.CONFIG_DEFAULTS)
args.update(model=str(ensure_default_model()), train=True, data=a["data"], fine_tune_type="lora", optimizer="adamw",
            optimizer_config={"adamw": {"weight_decay": 0.0}}, num_layers=-1, batch_size=a["batch"], iters=a["steps"],
            val_batches=1, learning_rate=1e-5, steps_per_report=a["every"], steps_per_eval=10**6, save_every=10**6,
            adapter_path=a["out"], max_seq_length=a["seq"], lora_parameters=a["lora"], seed=0, report_to=None,
            project_name=None, resume_adapter_file=None, grad_checkpoint=False, mask_prompt=False, test=False,
            config=None, grad_accumulation_steps=1, lr_schedule=None)
rate = Rate()
ns = types.SimpleNamespace(**args)
model, tokenizer = lora.load(ns.model)
train_set, valid_set, _ = lora.load_dataset(ns, tokenizer)
lora.train_model(ns, model, train_set, valid_set, rate)  # lora.run() drops a passed callback (0.32.2)
steady = [t for it, t in rate.rows if it > a["skip"]]
print(json.dumps({"tokens_per_s": sum(steady) / len(steady),
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
'''


def text_dataset(out: Path) -> Path:
    """The curated sample corpus, reduced to {"text"} records (what both trainers read alike)."""
    from yourai.config import load_config
    from yourai.data.curate import curate

    curated = out / "curated"
    curate(None, curated, load_config().curate)
    plain = out / "text"
    plain.mkdir()
    for split in ("train", "valid"):
        lines = (curated / f"{split}.jsonl").read_text().splitlines()
        (plain / f"{split}.jsonl").write_text("".join(json.dumps({"text": json.loads(l)["text"]}) + "\n" for l in lines))
    return plain


def run_arm(code: str, params: dict) -> dict:
    done = subprocess.run([sys.executable, "-c", code, json.dumps(params)], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-3000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def matmul_ceiling_flops(size: int = MATMUL_SIZE, repeats: int = 20) -> float:
    """Sustained float32 matmul FLOP/s on this machine through MLX (the roofline we compare against)."""
    import mlx.core as mx

    a, b = mx.random.normal((size, size)), mx.random.normal((size, size))
    mx.eval(a @ b)
    started = time.perf_counter()
    for _ in range(repeats):
        mx.eval(a @ b)
    return 2 * size**3 * repeats / (time.perf_counter() - started)


def matmul_params() -> int:
    """Weights every token multiplies through: all Linear layers plus the (tied) output projection."""
    from mlx.utils import tree_flatten

    from yourai.models import load_model

    model, _ = load_model()
    linear = sum(v.size for k, v in tree_flatten(model.parameters()) if k.endswith(".weight") and v.ndim == 2 and "embed" not in k)
    return linear + model.model.embed_tokens.weight.size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--aa", action="store_true", help="add a second 'yourai plain' arm (A/A noise check)")
    args = parser.parse_args()
    results: dict[str, list[dict]] = {"yourai plain": [], "yourai weighted": [], "mlx_lm.lora": []}
    if args.aa:
        results[AA_ARM] = []
    with tempfile.TemporaryDirectory() as tmp:
        data = text_dataset(Path(tmp))
        common = {"data": str(data), "steps": args.steps, "batch": args.batch, "seq": args.seq, "skip": SKIP_STEPS}
        for repeat in range(args.repeats):
            order = list(results) if repeat % 2 == 0 else list(reversed(results))  # alternate arm order
            for arm in order:
                out = str(Path(tmp) / f"{arm.replace(' ', '_')}-{repeat}")
                if arm == "mlx_lm.lora":
                    row = run_arm(PEER, {**common, "out": out, "every": REPORT_EVERY, "lora": LORA})
                else:
                    row = run_arm(OURS, {**common, "out": out, "objective": arm.split()[1]})  # A/A arm: "plain"
                results[arm].append(row)
                print(f"  repeat {repeat} {arm:16s} {row['tokens_per_s']:8.0f} tokens/s  peak RSS {row['peak_rss_mb']:6.0f} MB")
    ceiling = matmul_ceiling_flops()
    flops_per_token = 4 * matmul_params()
    medians = {arm: {k: statistics.median(r[k] for r in rows) for k in ("tokens_per_s", "peak_rss_mb")} for arm, rows in results.items()}
    peer = medians["mlx_lm.lora"]
    print(f"\nmatmul ceiling {ceiling / 1e9:.1f} GFLOP/s (float32 {MATMUL_SIZE}^3); LoRA estimate {flops_per_token / 1e6:.2f} MFLOP/token")
    for arm, m in medians.items():
        achieved = m["tokens_per_s"] * flops_per_token
        print(f"{arm:16s} median {m['tokens_per_s']:8.0f} tokens/s  {m['tokens_per_s'] / peer['tokens_per_s']:.2f}x speed"
              f"  peak RSS {m['peak_rss_mb']:6.0f} MB  {m['peak_rss_mb'] / peer['peak_rss_mb']:.2f}x RSS"
              f"  {achieved / 1e9:.2f} GFLOP/s = {achieved / ceiling:.1%} of ceiling")
    ours = medians["yourai plain"]
    print(f"\ntargets: speed >= {TARGET_SPEED:.2f}x -> {ours['tokens_per_s'] / peer['tokens_per_s']:.2f}x; "
          f"RSS <= {TARGET_RSS:.2f}x -> {ours['peak_rss_mb'] / peer['peak_rss_mb']:.2f}x")
    if AA_ARM in medians:
        twin = medians[AA_ARM]
        print(f"A/A (identical yourai arms): {twin['tokens_per_s'] / ours['tokens_per_s']:.2f}x tokens/s, "
              f"{twin['peak_rss_mb'] / ours['peak_rss_mb']:.2f}x RSS; per-repeat spread of each arm:")
        for arm, rows in results.items():
            rates = [r["tokens_per_s"] for r in rows]
            print(f"  {arm:16s} tokens/s min {min(rates):8.0f}  max {max(rates):8.0f}  ({max(rates) / min(rates) - 1:.0%})")


if __name__ == "__main__":
    main()
