"""The headless Stable Diffusion engine: loading checkpoints offline (checkpoints.py, tokenizer.py,
SDXL's in sdxl_checkpoint.py, the built-in tiny models in tiny.py and tiny_sdxl.py), ComfyUI-like
MODEL/CLIP/VAE objects (headless.py; SDXL's two text encoders in sdxl_clip.py) whose attention
honours ComfyUI's patches (attention.py), prompt emphasis (prompt_weights.py), SDXL's pooled and
size conditioning (sdxl.py) and ComfyUI's samplers (sampling.py). Import the submodules directly;
this package imports nothing heavy."""
