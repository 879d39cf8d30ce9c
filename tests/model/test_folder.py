"""mmpt/model/folder.py: the one reader and writer of a model folder."""

from __future__ import annotations

import json

import pytest
import torch

from mmpt.data.instances import sentinel_ids
from mmpt.data.separation import MAP_FILE, SeparationMap
from mmpt.model.folder import META_FILE, CheckpointMeta, load_folder, load_model, read_folder, save_model
from mmpt.model.split_embeddings import extend_model
from mmpt.model.tiny import tiny_model, tiny_tokenizer

SEPARATED = [6, 7, 20, 63]


def test_checkpoint_round_trip_with_map(tmp_path):
    tok = tiny_tokenizer()
    smap = SeparationMap("partial", len(tok), SEPARATED)
    model = tiny_model("gpt2", vocab=len(tok), tied=False)
    extend_model(model, smap)
    save_model(model, smap, tmp_path, tokenizer=tok)
    assert (tmp_path / MAP_FILE).exists()
    loaded, tok2, smap2 = load_model(tmp_path)
    assert smap2.to_dict() == smap.to_dict() and len(tok2) == len(tok)
    ids = smap.to_code(torch.tensor([[1, 6, 7, 8]]))
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=ids).logits, model(input_ids=ids).logits)
    assert sentinel_ids(tok2) == sentinel_ids(tok)


def test_checkpoint_without_map_loads_as_none_and_a_short_model_is_refused(tmp_path):
    tok = tiny_tokenizer()
    save_model(tiny_model("gpt2", vocab=len(tok)), SeparationMap("none", len(tok)), tmp_path, tokenizer=tok)
    (tmp_path / MAP_FILE).unlink()
    _, _, smap = load_model(tmp_path)
    assert smap.separation == "none" and smap.vocab_size == len(tok)
    SeparationMap("partial", len(tok), SEPARATED).save(tmp_path)  # needs 68 rows, the model has 64
    with pytest.raises(ValueError, match="64 embedding rows"):
        load_model(tmp_path)


def test_checkpoint_meta_round_trip_and_errors(tmp_path):
    meta = CheckpointMeta("signature-first", "prefix-code-clm", "sdpa", "partial")
    meta.save(tmp_path)
    assert json.loads((tmp_path / META_FILE).read_text()) == {
        "layout": "signature-first",
        "objective": "prefix-code-clm",
        "attn_implementation": "sdpa",
        "separation": "partial",
        "code_format": "plain",
        "prompt_style": "mmpt",
    }
    assert CheckpointMeta.load(tmp_path) == meta and meta.prefix_lm and not CheckpointMeta().prefix_lm
    (tmp_path / META_FILE).write_text('{"objective": "code-clm", "future_key": 1}')  # older/newer writers
    assert CheckpointMeta.load(tmp_path) == CheckpointMeta(objective="code-clm")
    (tmp_path / META_FILE).write_text('{"code_format": "flat"}')
    assert CheckpointMeta.load(tmp_path).code_format == "flat"
    (tmp_path / META_FILE).write_text('{"prompt_style": "official"}')
    with pytest.raises(ValueError, match=r"mmpt.json: field 'prompt_style' must be one of \('mmpt', 'paper'\)"):
        CheckpointMeta.load(tmp_path)
    (tmp_path / META_FILE).write_text('{"separation": "most"}')
    with pytest.raises(ValueError, match=r"mmpt.json: field 'separation' must be one of"):
        CheckpointMeta.load(tmp_path)
    (tmp_path / META_FILE).write_text('{"layout": ')
    with pytest.raises(ValueError, match=r"mmpt.json:1: invalid JSON"):
        CheckpointMeta.load(tmp_path)
    (tmp_path / META_FILE).write_text("[]")
    with pytest.raises(ValueError, match=r"mmpt.json: expected a JSON object, got array"):
        CheckpointMeta.load(tmp_path)


@pytest.mark.heavy
def test_read_folder_needs_a_checkpoint_and_load_picks_the_attention(tmp_path):
    with pytest.raises(FileNotFoundError, match="no config.json"):
        read_folder(tmp_path)
    tok = tiny_tokenizer()
    smap = SeparationMap("none", len(tok))
    save_model(tiny_model("llama", vocab=len(tok)), smap, tmp_path / "a", tok, CheckpointMeta(objective="code-clm"))
    model, _, _, meta = load_folder(tmp_path / "a")
    assert meta.objective == "code-clm" and model.config._attn_implementation == "sdpa"  # verified for llama
    save_model(tiny_model("gpt_neo", vocab=len(tok)), smap, tmp_path / "b", tok)
    assert load_folder(tmp_path / "b")[0].config._attn_implementation == "eager"  # GPT-Neo has no sdpa
    save_model(None, smap, tmp_path / "c", tok, CheckpointMeta(attn_implementation="eager"), hf_config=model.config)
    assert (tmp_path / "c" / "config.json").is_file() and not (tmp_path / "c" / "model.safetensors").exists()
    assert read_folder(tmp_path / "c")[2].attn_implementation == "eager"
