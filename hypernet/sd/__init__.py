"""The headless Stable Diffusion engine. Import the submodules directly; this package imports
nothing heavy.

Loading checkpoints offline:
- loading.py: the entry points (load_components, load_single_file, load_diffusers_folder), which
  detect, pick the family's loader, then move, cast and freeze;
- ldm_layout.py: the original single-file layout (key prefixes), reading a file's tensors, and the
  helpers every family's loader shares (building on meta, strict loading, CLIP text configs);
- model_family.py: a file's family (SD1, SD2, SDXL base; others refused) and prediction type;
- ldm_configs.py: diffusers UNet and VAE configs read off the tensor shapes;
- sd_checkpoint.py: SD1.x/SD2.x single files and diffusers folders;
- sdxl_checkpoint.py: SDXL base single files and diffusers folders;
- tokenizer.py: the CLIP tokenizer, from local files or the bundled vocabulary;
- tiny.py and tiny_sdxl.py: the built-in tiny models (random weights, built in code);
- components.py: what a loaded checkpoint is (SDComponents), the text conditioning it takes,
  CheckpointError and SD's DDPM noise table.

Running them as ComfyUI does:
- headless.py: the MODEL and VAE objects, and headless_objects (MODEL, CLIP, VAE for a checkpoint);
- headless_clip.py: the CLIP object (77-token chunks, emphasis, clip layer);
- sdxl_clip.py: SDXL's CLIP object, with both text encoders;
- attention.py: attention that honours ComfyUI's attn1/attn2 patches;
- prompt_weights.py: ComfyUI's `(text:1.2)` emphasis syntax;
- sdxl.py: SDXL's pooled and size conditioning;
- sampling.py: the samplers and schedulers of ComfyUI's KSampler.

diffusers' model classes are imported from `diffusers.models`, not `diffusers`: the same classes,
but type checkers read the top-level names as the torch-less placeholders of its lazy __init__.
"""
