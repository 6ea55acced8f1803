"""Hypernetwork training with A1111 parity.

loop.py holds the one training loop, written against the small protocol in backend.py;
backend_diffusers.py and backend_comfy.py adapt our headless models and ComfyUI's objects to
it. data.py caches latents and text conditionings and orders batches in aspect buckets;
schedule.py parses A1111's learning-rate/clip schedule strings; templates.py and prompts.py
make the training prompts; checkpoint.py, csvlog.py and lossplot.py write what a run leaves
behind; session.py runs one Train Hypernet node call from node-level objects."""
