"""model.dequantize: float weights where quantized matmuls are slow, the same adapters either way (QLoRA)."""

from __future__ import annotations

import json

import numpy as np
import pytest

import yourai  # noqa: F401  (OpenBLAS before mlx)
import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten

from gguf_cases import model_logprobs, reference_logprobs
from yourai.cli import main as yourai_main
from yourai.config import load_config
from yourai.models import load, load_model
from yourai.models.dequantize import dequantize_model, is_quantized, should_dequantize
from yourai.train import train

CHAT = [{"role": "user", "content": "Which instrument recorded the temperature?"}]
SMALL = ["train.batch_size=4", "train.max_seq_length=48", "train.warmup_steps=1", "train.val_batches=2",
         "train.lora.rank=4", "train.learning_rate=0.002"]


@pytest.fixture(scope="module")
def curated(tmp_path_factory):
    from yourai.data.curate import curate

    out = tmp_path_factory.mktemp("curated")
    curate(None, out, load_config().curate)
    return out


def _layers(model) -> set[type]:
    return {type(model.layers[0].self_attn.q_proj), type(model.model.embed_tokens)}


def test_auto_dequantizes_on_cpu_only():
    assert should_dequantize("auto", "cpu") and not should_dequantize("auto", "metal")
    assert not should_dequantize("auto", "cuda")
    assert should_dequantize("always", "metal") and not should_dequantize("never", "cpu")
    with pytest.raises(ValueError, match=r"model.dequantize must be one of \['auto', 'never', 'always'\]"):
        should_dequantize("sometimes", "cpu")


def test_dequantized_model_is_float32_and_computes_the_same_function(native_gguf, native_model_dir):
    model, tokenizer = load_model(str(native_model_dir), dequantize="never")
    assert is_quantized(model)
    ids = list(tokenizer.apply_chat_template(CHAT, add_generation_prompt=True))
    dequantize_model(model)
    assert not is_quantized(model)
    assert {v.dtype for _, v in tree_flatten(model.parameters())} == {mx.float32}
    assert np.abs(model_logprobs(model, ids) - reference_logprobs(native_gguf, ids)).max() < 1e-3


def test_load_model_applies_the_mode(native_model_dir, monkeypatch):
    assert _layers(load_model(str(native_model_dir), dequantize="never")[0]) == {nn.QuantizedLinear, nn.QuantizedEmbedding}
    assert _layers(load_model(str(native_model_dir), dequantize="always")[0]) == {nn.Linear, nn.Embedding}
    monkeypatch.setattr(load, "mlx_backend", lambda: "cpu")
    assert not is_quantized(load_model(str(native_model_dir), dequantize="auto")[0])
    monkeypatch.setattr(load, "mlx_backend", lambda: "metal")
    assert is_quantized(load_model(str(native_model_dir), dequantize="auto")[0])


def _train(model_dir, curated, out, mode: str, steps: int = 6):
    config = load_config(None, SMALL + [f"model.path={model_dir}", f"model.dequantize={mode}", f"train.steps={steps}",
                                        f"train.eval_every={steps}", f"train.save_every={steps}", "train.seed=3"])
    return train(config, out, data_dir=curated, progress=False)


@pytest.mark.slow
def test_qlora_and_dequantized_training_give_adapters_for_the_quantized_base(native_model_dir, curated, tmp_path):
    """Same seed, both bases: loss falls, and both adapters load onto the 4-bit base unchanged."""
    runs = {mode: _train(native_model_dir, curated, tmp_path / mode, mode) for mode in ("never", "always")}
    for result in runs.values():
        assert result.evals[-1]["val_loss"] < result.evals[0]["val_loss"]
    adapters = {mode: mx.load(str(r.adapters_dir / "adapters.safetensors")) for mode, r in runs.items()}
    assert {k: v.shape for k, v in adapters["never"].items()} == {k: v.shape for k, v in adapters["always"].items()}
    base, tokenizer = load_model(str(native_model_dir), dequantize="never")
    ids = list(tokenizer.apply_chat_template(CHAT, add_generation_prompt=True))
    base_logprobs = model_logprobs(base, ids)
    for mode, result in runs.items():
        quantized, _ = load_model(str(native_model_dir), str(result.adapters_dir), dequantize="never")
        assert isinstance(quantized.layers[0].self_attn.q_proj.linear, nn.QuantizedLinear)
        with_adapter = model_logprobs(quantized, ids)
        assert np.abs(with_adapter - base_logprobs).max() > 1e-3, mode  # the adapter is really applied
        trained_on, _ = load_model(str(native_model_dir), str(result.adapters_dir), dequantize=mode)
        assert np.abs(model_logprobs(trained_on, ids) - with_adapter).max() < 0.05, mode


# --- the setting through the paths users take


def _model_event(out) -> dict:
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return next(line for line in lines if line.get("event") == "model")


def test_train_command_honours_model_dequantize(native_model_dir, curated, tmp_path, capsys):
    for mode, quantized in (("never", True), ("always", False)):
        out = tmp_path / mode
        argv = ["train", "--out", str(out), "--model", str(native_model_dir), "--data", str(curated), "--steps", "1",
                "--no-progress", f"model.dequantize={mode}", *SMALL, "train.eval_every=1", "train.save_every=1"]
        assert yourai_main(argv) == 0, capsys.readouterr().err
        event = _model_event(out)
        assert (event["dequantize"], event["quantized"]) == (mode, quantized)
        assert event["loaded_from"] == str(native_model_dir)


def test_config_file_sets_model_dequantize(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model: {path: smollm2-135m-instruct, dequantize: never}\n")
    assert load_config(path).model.dequantize == "never"
    path.write_text("model: {dequantize: sometimes}\n")
    with pytest.raises(ValueError, match=r"model.dequantize: 'sometimes' is not one of"):
        load_config(path)


def test_eval_command_honours_dequantize(native_model_dir, tmp_path, capsys):
    from yourai.eval.tqa_data import SAMPLE_PATH

    for mode in ("never", "always"):
        out = tmp_path / f"{mode}.json"
        argv = ["eval", "--model", str(native_model_dir), "--data", str(SAMPLE_PATH), "--limit", "2",
                "--dequantize", mode, "--out", str(out), "--no-progress"]
        assert yourai_main(argv) == 0, capsys.readouterr().err
        assert json.loads(out.read_text())["settings"]["dequantize"] == mode


def test_generate_command_chat_and_dequantize(native_model_dir, monkeypatch, capsys):
    seen = []
    real_load = load.load_model
    monkeypatch.setattr("yourai.cli.models.load_model", lambda *a, **k: seen.append(k["dequantize"]) or real_load(*a, **k))
    argv = ["generate", "--model", str(native_model_dir), "--chat", "--prompt", "hello", "--max-tokens", "3", "--temp", "0"]
    assert yourai_main(argv + ["--dequantize", "never"]) == 0
    assert capsys.readouterr().out.startswith("user: hello\nassistant:")
    assert yourai_main(argv[:-4] + ["--max-tokens", "3"]) == 0
    assert seen == ["never", "auto"]
    with pytest.raises(SystemExit):
        yourai_main(argv + ["--dequantize", "sometimes"])


def test_a_half_precision_float_base_is_made_float32_as_a_quantized_one_is(native_model_dir, tmp_path, monkeypatch):
    """Most hub models are bfloat16 safetensors: on the CPU their matmuls are as slow as quantized ones."""
    import shutil

    from mlx.utils import tree_map

    model, _ = load_model(str(native_model_dir), dequantize="always")
    half = tmp_path / "half"
    shutil.copytree(native_model_dir, half)
    config = json.loads((half / "config.json").read_text())
    config.pop("quantization", None)
    config.pop("quantization_config", None)
    for stale in half.glob("*.safetensors"):
        stale.unlink()  # this test's own copy
    load.save_mlx_model(model.update(tree_map(lambda p: p.astype(mx.bfloat16), model.parameters())), config, half)
    assert {v.dtype for _, v in tree_flatten(load_model(str(half), dequantize="never")[0].parameters())} == {mx.bfloat16}
    assert {v.dtype for _, v in tree_flatten(load_model(str(half), dequantize="always")[0].parameters())} == {mx.float32}
    monkeypatch.setattr(load, "mlx_backend", lambda: "cpu")
    assert {v.dtype for _, v in tree_flatten(load_model(str(half), dequantize="auto")[0].parameters())} == {mx.float32}
    monkeypatch.setattr(load, "mlx_backend", lambda: "metal")
    assert {v.dtype for _, v in tree_flatten(load_model(str(half), dequantize="auto")[0].parameters())} == {mx.bfloat16}
