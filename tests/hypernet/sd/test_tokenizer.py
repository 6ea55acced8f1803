"""The CLIP tokenizer from local files: the bundled vocabulary needs nothing placed by hand, files in
the tokenizer folders override it, and the vocabulary is numbered as CLIP numbers it."""
import gzip

import pytest

from hypernet_studio.hypernet.sd import tokenizer
from hypernet_studio.hypernet.sd.components import CheckpointError

BOS, EOS = 49406, 49407


def test_the_bundled_vocabulary_is_found_with_empty_models_folders(tmp_path):
    (tmp_path / "tokenizers").mkdir()
    clip = tokenizer.find_tokenizer("sd1", tmp_path / "model.safetensors", [tmp_path / "tokenizers"])
    assert len(clip) == 49408 and (clip.bos_token_id, clip.eos_token_id, clip.pad_token_id) == (BOS, EOS, EOS)
    # Ids of OpenAI CLIP's vocabulary: "a</w>" 320, "photo</w>" 1125, "of</w>" 539, "cat</w>" 2368.
    assert clip("a photo of a cat")["input_ids"] == [BOS, 320, 1125, 539, 320, 2368, EOS]
    # Punctuation is a word of its own; "(</w>" and ")</w>" are 263 and 264.
    assert clip("(cat)")["input_ids"] == [BOS, 263, 2368, 264, EOS]
    open_clip = tokenizer.find_tokenizer("sd2", None, [])
    assert open_clip.pad_token == "!" and open_clip.pad_token_id == 0, "OpenCLIP pads with id 0"


def test_byte_symbols_are_numbered_in_clips_order():
    table = tokenizer.bytes_to_unicode()
    symbols = list(table.values())
    assert len(symbols) == 256 == len(set(symbols))
    # Printable bytes come first in byte order ("!" is 0, "a" is 64), the rest follow from chr(256).
    assert symbols[0] == "!" and symbols.index("a") == 64 and table[0] == chr(256) and table[ord("a")] == "a"


def test_files_in_the_tokenizer_folders_override_the_bundled_vocabulary(tmp_path):
    merges = ["t h", "th e</w>", "c a", "ca t</w>"]
    with gzip.open(tmp_path / tokenizer.BPE_FILE_NAME, "wt", encoding="utf-8") as handle:
        handle.write("\n".join(["#version: 0.2"] + merges) + "\n")
    clip_tokenizer = tokenizer.find_tokenizer("sd1", None, [tmp_path])
    ids = clip_tokenizer("the cat", add_special_tokens=False)["input_ids"]
    # CLIP's layout: 256 bytes, 256 word-final bytes, then one token per merge, then the specials.
    assert ids == [512 + 1, 512 + 3]
    assert clip_tokenizer.bos_token_id == 512 + len(merges) and clip_tokenizer.eos_token_id == 512 + len(merges) + 1


def test_a_missing_bundled_vocabulary_says_to_reinstall(tmp_path, monkeypatch):
    monkeypatch.setattr(tokenizer, "BUNDLED_BPE_FILE", tmp_path / "gone" / tokenizer.BPE_FILE_NAME)
    with pytest.raises(CheckpointError, match="reinstall the pack"):
        tokenizer.find_tokenizer("sd1", None, [tmp_path])
