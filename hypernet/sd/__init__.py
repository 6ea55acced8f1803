"""Headless Stable Diffusion models: loading (single files, diffusers folders, the built-in
tiny model) and ComfyUI-like MODEL/CLIP/VAE objects. Import the submodules directly;
this package imports nothing heavy."""
