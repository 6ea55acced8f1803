"""The headless Stable Diffusion engine: loading checkpoints offline (checkpoints.py, tokenizer.py,
the built-in tiny model in tiny.py), ComfyUI-like MODEL/CLIP/VAE objects (headless.py) whose
attention honours ComfyUI's patches (attention.py), prompt emphasis (prompt_weights.py) and
ComfyUI's samplers (sampling.py). Import the submodules directly; this package imports nothing
heavy."""
