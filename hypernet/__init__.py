"""The pure library: hypernetwork math, files, attention patch, training, data, preprocessing,
taggers and offline model loading. It never imports ComfyUI, and importing the package itself
is cheap (submodules pull in diffusers/transformers only when used)."""
