"""mmpt/metrics.py: MFU, peaks, the NL/code row similarity and what the log writes."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from mmpt import metrics


def test_mfu_formula_and_peaks():
    # 6 FLOPs per parameter per token: 1e6 params at 1e3 tok/s on two 1 TFLOP/s devices = 0.3%
    assert abs(metrics.mfu(1_000_000, 1_000.0, 1e12, 2) - 6e9 / 2e12) < 1e-15
    assert metrics.peak_flops(torch.device("cpu"), override_tflops=2.5) == 2.5e12
    assert 1e8 < metrics.measure_cpu_peak(size=256) < 1e14
    assert metrics.peak_memory_gib(torch.device("cpu")) > 0.01


@pytest.mark.parametrize(
    "name, tflops",
    [
        ("NVIDIA H100 80GB HBM3", 989),  # SXM
        ("NVIDIA H100 NVL", 835),  # not the SXM figure, although the name contains "H100"
        ("NVIDIA H100 PCIe", 756),
        ("NVIDIA H200", 989),
        ("NVIDIA H200 NVL", 835),
        ("NVIDIA A100-SXM4-80GB", 312),
    ],
)
def test_gpu_peak_by_device_name(monkeypatch, name, tflops):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
    assert metrics.peak_flops(torch.device("cuda", 0)) == tflops * 1e12


def test_code_row_similarity_matches_direct_cosine():
    torch.manual_seed(0)
    config = AutoConfig.for_model(
        "llama",
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        vocab_size=40,
    )
    model = AutoModelForCausalLM.from_config(config)
    w = model.get_input_embeddings().weight.detach()
    separated, base = [3, 7, 11], 34  # copies live at rows 34, 35, 36
    with torch.no_grad():
        model.get_input_embeddings().weight[34] = w[3]  # an untouched copy: cosine 1
        model.get_input_embeddings().weight[35] = -w[7]  # opposite: cosine -1
    got = metrics.code_row_similarity(model, separated, base)
    want = torch.stack([torch.dot(w[i], w[j]) / (w[i].norm() * w[j].norm()) for i, j in ((3, 34), (7, 35), (11, 36))])
    assert torch.allclose(got, want, atol=1e-6)
    assert abs(got[0] - 1) < 1e-6 and abs(got[1] + 1) < 1e-6
    rows = metrics.separated_rows(model, separated, base)
    assert rows.shape == (6, 16) and torch.equal(rows[3], w[34])


def test_log_writes_jsonl_tensorboard_and_projector(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    log = metrics.MetricsLog(tmp_path, enabled=True)
    log.log(1, {"loss": 2.5, "lr": 1e-3})
    log.log(2, {"loss": 2.0, "lr": 1e-3})
    log.similarity(2, torch.tensor([0.5, 1.0]), ["if", " for"])
    log.projector(2, torch.randn(4, 3), ["if", " for"])
    log.close()
    assert [json.loads(line)["loss"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [2.5, 2.0]
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert [e.value for e in events.Scalars("train/loss")] == [2.5, 2.0]
    assert events.Scalars("embeddings/nl_code_cosine_mean")[0].value == 0.75
    assert (tmp_path / "tensorboard" / "projector_config.pbtxt").is_file()
    quiet = metrics.MetricsLog(tmp_path / "other", enabled=False)  # ranks > 0 write nothing
    quiet.log(1, {"loss": 1.0})
    assert not (tmp_path / "other").exists()


def test_where_to_look_names_the_output_tensorboard_and_metrics(tmp_path):
    text = metrics.where_to_look(tmp_path / "run")
    assert text.count("\n") == 2 and all(line.startswith("mmpt train: ") for line in text.splitlines())
    assert f"tensorboard --logdir {tmp_path / 'run' / 'tensorboard'}" in text and str(tmp_path / "run" / "metrics.jsonl") in text
