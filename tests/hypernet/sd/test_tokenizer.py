"""The CLIP tokenizer from local files: where it is looked for, and CLIP's BPE vocabulary layout."""
import pytest

from hypernet_studio.hypernet.sd import tokenizer
from hypernet_studio.hypernet.sd.components import CheckpointError


def test_missing_tokenizer_error_says_where_to_put_files(tmp_path):
    with pytest.raises(CheckpointError, match="models/tokenizers/sd1"):
        tokenizer.find_tokenizer("sd1", tmp_path / "model.safetensors", [tmp_path / "tokenizers"])


def test_bpe_file_tokenizer_matches_clip_vocabulary_construction(tmp_path):
    import gzip

    merges = ["t h", "th e</w>", "c a", "ca t</w>"]
    with gzip.open(tmp_path / tokenizer.BPE_FILE_NAME, "wt", encoding="utf-8") as handle:
        handle.write("\n".join(["#version: 0.2"] + merges) + "\n")
    clip_tokenizer = tokenizer.find_tokenizer("sd1", None, [tmp_path])
    ids = clip_tokenizer("the cat", add_special_tokens=False)["input_ids"]
    # CLIP's layout: 256 bytes, 256 word-final bytes, then one token per merge, then the specials.
    assert ids == [512 + 1, 512 + 3]
    assert clip_tokenizer.bos_token_id == 512 + len(merges) and clip_tokenizer.eos_token_id == 512 + len(merges) + 1
