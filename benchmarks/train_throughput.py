"""Training throughput and peak RSS: `yourai` vs `mlx_lm.lora` on the same base, data, shapes and LoRA settings.

Both arms train LoRA (rank 8, scale 20, dropout 0, every layer, AdamW at a constant 1e-5, no clipping)
on the same float32 base — the model as given, dequantized first if it is quantized, since MLX's
quantized matmul is not the CPU fast path, and cast to float32 (mlx-lm's dequantize leaves float16
weights, which cost a cast in every matmul) — and the same text-only dataset, batch and maximum
sequence length. Each run is a fresh process (so peak RSS is that arm's alone); arms alternate
over `--repeats` and we report medians. A second, identical `yourai plain` arm (A/A) is the noise
floor. Tokens are counted as mlx-lm counts them (every real token of every sequence; padding never
counts) over the steady-state steps only (compilation excluded).

Achieved FLOP/s uses the LoRA estimate 4 x N per token (forward 2N, input gradients 2N; N = every
matmul weight incl. the output head) plus the attention's products over a causal window of --seq
positions (scores and values forward, their four input-gradient products: 6 x layers x heads x
head width x (seq + 1) per token, half of PaLM's 12·L·H·Q·T, which counts the masked half too; a
backward's recomputed scores are not counted), against an fp32 1024² matmul
ceiling measured in this run: the best of one measurement before each arm and one after the last, since
a moment when another job shares the cores must not lower the roofline. Targets: >= 1.25x mlx-lm
tokens/s, <= 0.7x its peak RSS, >= 50 % of the ceiling. The quantized base is timed too (few steps,
small shapes) as users would run it on Metal; on the CPU it is not the fast path, and the script
says so.

On the CPU the yourai arms run what `yourai train` runs there — SwiGLU, RMSNorm, RoPE, whole-head
attention and the loss through yourai's fused kernels (yourai/models/native, built on first use; the arm
"yourai plain MLX ops" turns them off to measure what they add, and then runs causal attention in query
blocks, yourai/models/cpu_math.py and cpu_blocks.py), LoRA inputs recomputed in the backward (yourai/models/recompute.py);
the mlx_lm.lora arm runs mlx-lm's own model code, with mlx's exp. The header line says which.

    python benchmarks/train_throughput.py --model smollm2-135m-instruct [--repeats 3] [--steps 12]
    python benchmarks/train_throughput.py --model default --steps 30 --batch 8 --seq 256
"""

from __future__ import annotations

import yourai  # noqa: F401  (OpenBLAS before mlx)
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from yourai.models import cpu_math

TARGET_SPEED, TARGET_RSS, TARGET_CEILING = 1.25, 0.70, 0.50
LORA = {"rank": 8, "scale": 20.0, "dropout": 0.0}
ARMS = ("yourai plain", "yourai weighted", "mlx_lm.lora", "yourai plain A/A", "yourai plain MLX ops")
NO_KERNELS = "yourai plain MLX ops"  # YOURAI_NATIVE=0: what the fused CPU kernels (models/native) add

OURS = r'''
import json, resource, sys
import yourai
from yourai.config import load_config
from yourai.train import Trainer, TrainingCallback
a = json.loads(sys.argv[1])
class Rate(TrainingCallback):
    def __init__(self): self.rows = []
    def on_step_end(self, step, m): self.rows.append((m["tokens"] + m["micro_batch"], m["step_time_s"], m.get("padding_fraction")))
overrides = {"model.path": a["model"], "train.steps": a["steps"], "train.batch_size": a["batch"],
    "train.max_seq_length": a["seq"], "train.learning_rate": 1e-5, "train.warmup_steps": 0, "train.min_lr_ratio": 1.0,
    "train.weight_decay": 0.0, "train.grad_clip": 0.0, "train.eval_every": 10**6, "train.val_batches": 1,
    "train.save_every": 10**6, "loss.objective": a["objective"], "train.lora.rank": 8, "train.lora.scale": 20.0,
    "train.lora.dropout": 0.0, "train.lora.num_layers": -1, **a.get("extra", {})}
rate = Rate()
Trainer(load_config(None, overrides), a["out"], data_dir=a["data"], callbacks=[rate], progress=False).fit()
steady = rate.rows[a["skip"]:] or rate.rows[-1:]
pads = [p for _, _, p in steady if p is not None]
print(json.dumps({"tokens_per_s": sum(t for t, _, _ in steady) / sum(s for _, s, _ in steady),
                  "padding_fraction": sum(pads) / len(pads) if pads else None,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
'''

PEER = r'''
import json, resource, sys, types
import yourai
from mlx_lm import lora
from mlx_lm.tuner.callbacks import TrainingCallback
a = json.loads(sys.argv[1])
class Rate(TrainingCallback):
    def __init__(self): self.rows = []
    def on_train_loss_report(self, info): self.rows.append((info["iteration"], info["tokens_per_second"]))
args = dict(lora.CONFIG_DEFAULTS)
args.update(model=a["model"], train=True, data=a["data"], fine_tune_type="lora", optimizer="adamw",
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
steady = [t for it, t in rate.rows if it > a["skip"]] or [t for _, t in rate.rows[-1:]]
print(json.dumps({"tokens_per_s": sum(steady) / len(steady),
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
'''


def resolve(name: str) -> str:
    """A directory mlx_lm.load opens: 'default' and packaged names through yourai's loader, else as given."""
    from yourai.models import load as loader

    if hasattr(loader, "resolve_model"):  # packaged names (smollm2-135m-instruct) import on first use
        return loader.resolve_model(name)
    return str(loader.ensure_default_model()) if name in ("default", "") else name


def float_base(source: str, out: Path) -> tuple[str, bool, int, int]:
    """(float32 base both trainers load, whether the source was quantized, matmul weights per token,
    layers x query heads x head width: the attention's width summed over layers)."""
    from mlx.utils import tree_flatten
    from mlx_lm import load
    from mlx_lm.utils import save_config, save_model

    from yourai.models.dequantize import dequantize_model, is_quantized, needs_float32

    model, tokenizer, config = load(source, return_config=True)
    quantized, path = is_quantized(model), source
    if needs_float32(model):  # float32 for both arms (mlx-lm's own dequantize leaves float16 weights)
        dequantize_model(model)
        for key in ("quantization", "quantization_config"):
            config.pop(key, None)
        path = str(out / "float-base")
        save_model(path, model)
        save_config(config, Path(path) / "config.json")
        tokenizer.save_pretrained(path)
    weights = dict(tree_flatten(model.parameters()))
    matmul = sum(v.size for k, v in weights.items() if k.endswith(".weight") and v.ndim == 2 and "embed" not in k)
    tied = "lm_head.weight" not in weights
    heads = config["num_attention_heads"]
    attention = config["num_hidden_layers"] * heads * config.get("head_dim", config["hidden_size"] // heads)
    return path, quantized, matmul + (model.model.embed_tokens.weight.size if tied else 0), attention


def flops_per_token(matmul_weights: int, attention_width: int, seq: int) -> tuple[float, float]:
    """(the LoRA estimate 4N, the causal attention's products) per token: see the module docstring.

    A position i of a causal window attends to i + 1 keys, (seq + 1) / 2 on average; each of the six
    products (Q Kᵀ and P V forward; dP, dV, dQ, dK backward) costs 2 x width FLOPs per key.
    """
    return 4.0 * matmul_weights, 6.0 * 2 * attention_width * (seq + 1) / 2


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


def run_arm(code: str, params: dict, timeout_s: float | None = None, env: dict | None = None) -> dict | None:
    """One arm in a fresh process (with `env` added to this one's); None when it ran past `timeout_s`."""
    try:
        done = subprocess.run([sys.executable, "-c", code, json.dumps(params)], capture_output=True, text=True,
                              check=False, timeout=timeout_s, env={**os.environ, **(env or {})})
    except subprocess.TimeoutExpired:
        return None
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-3000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def matmul_ceiling_flops(size: int = 1024, repeats: int = 10) -> float:
    """Sustained fp32 matmul FLOP/s through MLX on this machine, now (the roofline we compare against)."""
    import time

    import mlx.core as mx

    a, b = mx.random.normal((size, size)), mx.random.normal((size, size))
    mx.eval(a @ b)
    started = time.perf_counter()
    for _ in range(repeats):
        mx.eval(a @ b)
    return 2 * size**3 * repeats / (time.perf_counter() - started)


def report(results: dict[str, list[dict]], flops: tuple[float, float], ceilings: list[float]) -> None:
    medians = {arm: {k: statistics.median(r[k] for r in rows) for k in ("tokens_per_s", "peak_rss_mb")}
               for arm, rows in results.items() if rows}
    peer, ours = medians["mlx_lm.lora"], medians["yourai plain"]
    ceiling = max(ceilings)  # the roofline is the best the machine did: a busy moment must not lower it
    flops_per_token = sum(flops)
    print(f"\nmatmul ceiling {ceiling / 1e9:.1f} GFLOP/s (fp32 1024², best of {len(ceilings)} measured before each arm: "
          f"{min(ceilings) / 1e9:.1f}–{ceiling / 1e9:.1f}); {flops_per_token / 1e6:.0f} MFLOP/token (LoRA estimate 4N "
          f"{flops[0] / 1e6:.0f}, causal attention products {flops[1] / 1e6:.0f})")
    for arm, m in medians.items():
        achieved = m["tokens_per_s"] * flops_per_token
        rates = [r["tokens_per_s"] for r in results[arm]]
        print(f"{arm:18s} {m['tokens_per_s']:8.1f} tokens/s {m['tokens_per_s'] / peer['tokens_per_s']:5.2f}x  "
              f"peak RSS {m['peak_rss_mb']:6.0f} MB {m['peak_rss_mb'] / peer['peak_rss_mb']:5.2f}x  "
              f"{achieved / ceiling:6.1%} of ceiling  (repeats {min(rates):.1f}–{max(rates):.1f})")
    pads = [r["padding_fraction"] for r in results["yourai plain"] if r.get("padding_fraction") is not None]
    if pads:
        print(f"yourai padding: {statistics.median(pads):.1%} of computed positions (tokens/s counts real tokens only)")
    print(f"\ntargets: speed >= {TARGET_SPEED:.2f}x -> {ours['tokens_per_s'] / peer['tokens_per_s']:.2f}x; "
          f"RSS <= {TARGET_RSS:.2f}x -> {ours['peak_rss_mb'] / peer['peak_rss_mb']:.2f}x; ceiling >= {TARGET_CEILING:.0%} "
          f"-> {ours['tokens_per_s'] * flops_per_token / ceiling:.1%} ({ours['tokens_per_s'] * flops[0] / ceiling:.1%} "
          "counting 4N only)")
    twin = medians["yourai plain A/A"]
    print(f"A/A (identical yourai arms): {twin['tokens_per_s'] / ours['tokens_per_s']:.2f}x tokens/s, "
          f"{twin['peak_rss_mb'] / ours['peak_rss_mb']:.2f}x RSS")
    bare = medians.get(NO_KERNELS)
    if bare:
        print(f"fused CPU kernels (yourai plain over {NO_KERNELS}): {ours['tokens_per_s'] / bare['tokens_per_s']:.2f}x tokens/s, "
              f"{ours['peak_rss_mb'] / bare['peak_rss_mb']:.2f}x RSS")


def quantized_arm(source: str, common: dict, args: argparse.Namespace, tmp: Path) -> None:
    """The quantized base as users run it on Metal: few steps, small shapes; on the CPU it is the slow path."""
    from yourai.config import Config
    from yourai.hardware import mlx_backend

    extra = {"model.dequantize": "never"} if hasattr(Config().model, "dequantize") else {}
    params = {**common, "model": source, "objective": "plain", "out": str(tmp / "quantized"), "extra": extra,
              "steps": args.quantized_steps, "skip": 1, "batch": args.quantized_batch, "seq": args.quantized_seq}
    row = run_arm(OURS, params, timeout_s=args.quantized_timeout)
    where = "Metal's path; on this CPU backend it is NOT the fast path" if mlx_backend() == "cpu" else "the path Metal users run"
    shape = f"batch {args.quantized_batch} x {args.quantized_seq}, {args.quantized_steps} steps"
    if row is None:
        print(f"\nquantized base ({shape}): did not finish in {args.quantized_timeout:.0f} s — {where}")
    else:
        print(f"\nquantized base ({shape}): {row['tokens_per_s']:.1f} tokens/s, peak RSS {row['peak_rss_mb']:.0f} MB — {where}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default", help="'default', a packaged name (smollm2-135m-instruct) or a model dir")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--skip", type=int, default=2, help="first steps left out of tokens/s (compilation)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--quantized-steps", type=int, default=3)
    parser.add_argument("--quantized-batch", type=int, default=1)
    parser.add_argument("--quantized-seq", type=int, default=64)
    parser.add_argument("--quantized-timeout", type=float, default=300.0)
    args = parser.parse_args()
    results: dict[str, list[dict]] = {arm: [] for arm in ARMS}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        source = resolve(args.model)
        base, was_quantized, matmul_weights, attention_width = float_base(source, tmp)
        data = text_dataset(tmp)
        common = {"model": base, "data": str(data), "steps": args.steps, "batch": args.batch, "seq": args.seq,
                  "skip": args.skip}
        print(f"base {base} ({'dequantized from ' + source if was_quantized else 'float as given'}); "
              f"batch {args.batch} x {args.seq}, {args.steps} steps ({args.skip} skipped), load average {os.getloadavg()[0]:.1f}")
        if cpu_math.on_cpu():
            from yourai.models import native

            kernels = native.status()
            print("CPU: the yourai arms run SwiGLU, RMSNorm, RoPE, attention and the loss through yourai's fused kernels "
                  f"({'in use' if kernels.module else kernels.reason}; models/native), elsewhere exponentials as powers "
                  f"of two, and recompute LoRA inputs (cpu_math.py, recompute.py); '{NO_KERNELS}' runs with YOURAI_NATIVE=0; "
                  "mlx_lm.lora uses mlx's exp and autodiff")
        ceilings = []
        for repeat in range(args.repeats):
            for arm in (ARMS if repeat % 2 == 0 else tuple(reversed(ARMS))):  # alternate arm order
                ceilings.append(matmul_ceiling_flops())  # this process is idle while an arm runs
                out = str(tmp / f"{arm.replace(' ', '_').replace('/', '')}-{repeat}")
                if arm == "mlx_lm.lora":
                    row = run_arm(PEER, {**common, "out": out, "every": 1, "lora": LORA})
                else:
                    row = run_arm(OURS, {**common, "out": out, "objective": arm.split()[1]},
                                  env={"YOURAI_NATIVE": "0"} if arm == NO_KERNELS else None)
                results[arm].append(row)
                print(f"  repeat {repeat} {arm:18s} {row['tokens_per_s']:8.1f} tokens/s  peak RSS {row['peak_rss_mb']:6.0f} MB",
                      flush=True)
        report(results, flops_per_token(matmul_weights, attention_width, args.seq), ceilings + [matmul_ceiling_flops()])
        if was_quantized:
            quantized_arm(source, common, args, tmp)
        else:
            print("\nquantized arm skipped: the base is not quantized (pass a quantized model to time it)")


if __name__ == "__main__":
    main()
