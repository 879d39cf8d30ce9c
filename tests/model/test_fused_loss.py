"""The fused head + modality loss against `modality_loss` on the stock model's logits (the reference).

The last test runs it under a real 2-rank DeepSpeed ZeRO-3 launch against one plain process. There
the head weight is an empty shard outside its module's forward and backward, so the fused loss must
run inside the head's hooks (see mmpt/model/fused_loss.py). The driver builds each model partitioned
(transformers' HfDeepSpeedConfig), gives it split embeddings under ZeRO-3, runs one backward of the
fused loss per rank on that rank's own batch (rank 1's second model gets a batch that trains
nothing: the stand-in micro-batch of an epoch tail) and writes the full reduced gradients; the
reference is the mean over the ranks' batches of `modality_loss`'s gradients on the stock logits.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import mmpt.model.fused_loss as fused
from mmpt.data.separation import SeparationMap
from mmpt.distributed import free_port
from mmpt.modality import CODE
from mmpt.model.attention import packed_forward
from mmpt.model.fused_loss import fused_modality_loss, packed_loss
from mmpt.model.loss import modality_loss
from mmpt.model.split_embeddings import extend_model
from mmpt.model.tiny import tiny_model

BASE = 40
SMAP = SeparationMap("partial", BASE, [3, 7, 11, 20])


def packed_batch(b: int = 2, n: int = 24, seed: int = 0) -> dict[str, torch.Tensor]:
    """Two instances per row (10 + 14 tokens), random modalities, code labels remapped, some ignored."""
    g = torch.Generator().manual_seed(seed)
    position_ids = torch.cat([torch.arange(10), torch.arange(n - 10)]).repeat(b, 1)
    modality = torch.randint(0, 2, (b, n), generator=g)
    labels = torch.randint(0, BASE, (b, n), generator=g)
    labels = torch.where(modality == CODE, SMAP.to_code(labels), labels)
    labels[torch.rand(b, n, generator=g) < 0.2] = -100
    input_ids = torch.randint(0, BASE, (b, n), generator=g)
    return {"input_ids": input_ids, "position_ids": position_ids, "labels": labels, "modality": modality}


def split_model(arch: str, tied: bool):
    model = tiny_model(arch, "eager", vocab=BASE, tied=tied)
    rows = extend_model(model, SMAP)  # code-copy rows, padded to 64
    return model, *SMAP.vocab_masks(rows)


def grads(model) -> dict[str, torch.Tensor]:
    out = {name: p.grad.clone() for name, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    return out


@pytest.mark.parametrize("tied", [True, False], ids=["tied", "untied"])
@pytest.mark.parametrize("arch", ["gpt2", "gpt_neo", "llama", "codegen", "mmpt_pangu"])  # codegen: a head bias
def test_loss_and_every_gradient_match_the_reference(arch, tied, monkeypatch):
    # blocks of 10 rows / 7 vocabulary ids: many chunks, ragged last ones
    monkeypatch.setattr(fused, "BLOCK_BYTES", 4 * 10 * 64)
    monkeypatch.setattr(fused, "MIN_BLOCK", 7)
    model, nl, code = split_model(arch, tied)
    batch = packed_batch()
    ref = modality_loss(packed_forward(model, batch), batch["labels"], batch["modality"], nl, code)
    (2 * ref.code_sum + 3 * ref.nl_sum).backward()  # unequal weights: each modality's gradient on its own
    ref_grads = grads(model)
    got = packed_loss(model, batch, nl, code)
    (2 * got.code_sum + 3 * got.nl_sum).backward()
    got_grads = grads(model)
    assert (got.code_count.item(), got.nl_count.item()) == (ref.code_count.item(), ref.nl_count.item())
    torch.testing.assert_close(got.code_sum, ref.code_sum, atol=1e-5, rtol=1e-6)
    torch.testing.assert_close(got.nl_sum, ref.nl_sum, atol=1e-5, rtol=1e-6)
    assert got_grads.keys() == ref_grads.keys()
    for name, g in ref_grads.items():
        torch.testing.assert_close(got_grads[name], g, atol=1e-5, rtol=1e-5, msg=name)


def test_no_trained_position_still_reaches_every_parameter():
    # a stand-in micro-batch (epoch tail): ZeRO-3 needs a (zero) gradient for every parameter
    model, nl, code = split_model("llama", tied=False)
    batch = packed_batch()
    batch["labels"].fill_(-100)
    got = packed_loss(model, batch, nl, code)
    assert got.total_count.item() == 0 and got.total_sum.item() == 0
    got.total_sum.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().max() == 0, name


class LargestTensor(TorchDispatchMode):
    """Records the most elements of any tensor an operator returns."""

    def __init__(self):
        super().__init__()
        self.numel = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.numel = max(self.numel, t.numel())
        return out


def test_never_materialises_the_logits(monkeypatch):
    monkeypatch.setattr(fused, "BLOCK_BYTES", 4 * 16 * 512)  # 16 rows of 512 ids per block
    monkeypatch.setattr(fused, "MIN_BLOCK", 16)
    b, n, h, v = 2, 64, 8, 512
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(b, n, h, generator=g, requires_grad=True)
    weight = torch.randn(v, h, generator=g, requires_grad=True)
    smap = SeparationMap("partial", 400, list(range(0, 400, 9)))
    nl, code = smap.vocab_masks(v)
    modality = torch.randint(0, 2, (b, n), generator=g)
    labels = torch.randint(0, 400, (b, n), generator=g)
    labels = torch.where(modality == CODE, smap.to_code(labels), labels)
    with LargestTensor() as seen:
        got = fused_modality_loss(hidden, weight, None, labels, modality, nl, code)
        got.total_sum.backward()
    assert seen.numel <= 16 * v * 2  # a block (and its mask), far from B·N·V = 65,536
    with LargestTensor() as seen_ref:
        modality_loss(hidden @ weight.T, labels, modality, nl, code).total_sum.backward()
    assert seen_ref.numel >= b * n * v  # the test can tell: the reference does build them


def test_shape_errors_name_the_shapes():
    model, nl, code = split_model("llama", tied=True)
    hidden = torch.zeros(2, 5, 32)
    with pytest.raises(ValueError, match=r"vocabulary masks must be \(64,\)"):
        fused_modality_loss(
            hidden,
            model.lm_head.weight,
            None,
            torch.zeros(2, 5, dtype=torch.long),
            torch.zeros(2, 5, dtype=torch.long),
            nl[:10],
            code,
        )
    with pytest.raises(ValueError, match=r"labels \(2, 4\)"):
        fused_modality_loss(
            hidden, model.lm_head.weight, None, torch.zeros(2, 4, dtype=torch.long), torch.zeros(2, 4, dtype=torch.long), nl, code
        )


ROOT = Path(__file__).resolve().parents[2]
CONFIGS = [("llama", False), ("gpt2", True), ("gpt_neo", True), ("mmpt_pangu", True)]  # (arch, tied); split embeddings
WORLD = 2

DRIVER = textwrap.dedent(
    """
    import json, sys
    import deepspeed, torch
    from deepspeed.utils import safe_get_full_grad
    from transformers import AutoModelForCausalLM
    from transformers.integrations import HfDeepSpeedConfig
    from mmpt import distributed
    from mmpt.data.separation import SeparationMap
    from mmpt.model.fused_loss import packed_loss
    from mmpt.model.split_embeddings import extend_model

    spec = json.load(open(sys.argv[-1]))
    SMAP = SeparationMap(*spec["smap"])
    env = distributed.detect()
    distributed.init(env, timeout_s=300)
    ds = {"train_micro_batch_size_per_gpu": 2, "gradient_accumulation_steps": 1, "zero_allow_untested_optimizer": True,
          "zero_optimization": {"stage": 3, "stage3_param_persistence_threshold": 0}}
    for i, path in enumerate(spec["models"]):
        keep = HfDeepSpeedConfig(ds)  # from_pretrained builds inside deepspeed.zero.Init: born partitioned
        model = AutoModelForCausalLM.from_pretrained(path, attn_implementation="eager", dtype=torch.float32)
        rows = extend_model(model, SMAP, ds_config=ds)
        del keep
        head = model.get_output_embeddings().weight
        assert hasattr(head, "ds_id") and head.numel() == 0, "the head must be partitioned for this test to mean anything"
        engine, *_ = deepspeed.initialize(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.0), config=ds)
        engine.eval()  # no dropout: the reference must see the same function
        nl, code = SMAP.vocab_masks(rows)
        batch = torch.load(spec["batches"][i])[env.rank]
        s = packed_loss(engine, batch, nl, code)
        engine.backward(2 * s.code_sum + 3 * s.nl_sum)
        grads = {n: safe_get_full_grad(p).clone() for n, p in engine.module.named_parameters()}
        if env.rank == 0:
            torch.save({"grads": grads, "rows": rows}, spec["out"][i])
        engine.destroy()
    distributed.shutdown()
    """
)


def reference_grads(path: Path, batches: list[dict]) -> dict[str, torch.Tensor]:
    """Mean over the ranks' batches of the reference loss's gradients, in one plain process."""
    from transformers import AutoModelForCausalLM

    from mmpt.model.attention import packed_forward
    from mmpt.model.loss import modality_loss
    from mmpt.model.split_embeddings import extend_model

    model = AutoModelForCausalLM.from_pretrained(path, attn_implementation="eager", dtype=torch.float32).eval()
    nl, code = SMAP.vocab_masks(extend_model(model, SMAP))
    for batch in batches:
        s = modality_loss(packed_forward(model, batch), batch["labels"], batch["modality"], nl, code)
        if s.total_count:  # a batch that trains nothing adds zero (and has no graph here)
            (2 * s.code_sum + 3 * s.nl_sum).backward()
    return {n: p.grad / len(batches) for n, p in model.named_parameters()}


@pytest.mark.heavy
def test_two_rank_zero3_gradients_match_one_process(tmp_path):
    from mmpt.model.tiny import tiny_model

    spec = {"models": [], "out": [], "batches": [], "smap": ["partial", BASE, SMAP.separated]}
    for i, (arch, tied) in enumerate(CONFIGS):
        path = tmp_path / f"{arch}-{'tied' if tied else 'untied'}"
        tiny_model(arch, vocab=BASE, tied=tied).save_pretrained(path)
        spec["models"].append(str(path))
        spec["out"].append(str(path / "grads.pt"))
        batches = [packed_batch(seed=r) for r in range(WORLD)]
        if i == 1:
            batches[1]["labels"].fill_(-100)  # a stand-in batch on rank 1: must still join every gradient reduce
        torch.save(batches, path / "batches.pt")
        spec["batches"].append(str(path / "batches.pt"))
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    (tmp_path / "driver.py").write_text(DRIVER)
    env = dict(os.environ, DS_ACCELERATOR="cpu", OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    cmd = [
        sys.executable,
        "-m",
        "deepspeed.launcher.runner",
        "--num_gpus",
        str(WORLD),
        "--master_port",
        str(free_port()),
        str(tmp_path / "driver.py"),
        str(tmp_path / "spec.json"),
    ]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-5000:]
    for i, (arch, tied) in enumerate(CONFIGS):
        want = reference_grads(Path(spec["models"][i]), torch.load(spec["batches"][i]))
        got = torch.load(spec["out"][i])["grads"]
        assert got.keys() == want.keys(), (arch, sorted(set(got) ^ set(want)))
        for name, g in want.items():
            assert g.abs().max() > 0 or "bias" in name, (arch, name)  # the comparison is not of zeros
            torch.testing.assert_close(got[name], g, atol=1e-5, rtol=1e-5, msg=f"{arch} tied={tied}: {name}")
