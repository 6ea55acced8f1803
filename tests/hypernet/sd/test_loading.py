"""The entry points: what load_components hands back, whatever the file stores."""
import torch

from hypernet_studio.hypernet.sd.loading import load_components

from .ldm_files import write_tokenizer_files


def test_half_precision_files_load_as_fp32_unless_asked(tmp_path, sd1_file):
    from safetensors.torch import save_file

    _, state = sd1_file
    save_file({k: v.half() if v.is_floating_point() else v for k, v in state.items()}, str(tmp_path / "half.sft"))
    write_tokenizer_files(tmp_path)
    default = load_components(tmp_path / "half.sft")
    assert {p.dtype for m in (default.unet, default.text_encoder, default.vae) for p in m.parameters()} == \
        {torch.float32}
    half = load_components(tmp_path / "half.sft", dtype=torch.float16)
    assert next(half.unet.parameters()).dtype == torch.float16
    assert next(half.vae.parameters()).dtype == torch.float32  # SD VAEs overflow in fp16


def test_loading_a_checkpoint_logs_no_empty_float32_list_warning(sd1_file, caplog):
    """diffusers warns "modules ... should be kept in float32: []" on every cast, twice per file."""
    import logging

    with caplog.at_level(logging.WARNING):
        load_components(sd1_file[0])
    assert not [r for r in caplog.records if "kept in float32" in r.getMessage()], caplog.text
    filters = logging.getLogger("diffusers.models.modeling_utils").filters
    assert not [f for f in filters if "fp32" in getattr(f, "__name__", "")], "removed after the cast"
