"""Training, with A1111 parity (docs/training.md).

batches.py sizes the images into buckets and orders the batches; latents.py encodes images and
prompts once; run.py is the loop (a TrainingRun whose methods are its steps), configured by
config.py and using losses.py, optimizer.py and schedule.py; backend.py is the small protocol the
loop runs against, with backend_diffusers.py (headless models) and backend_comfy.py (ComfyUI's);
templates.py and prompts.py make the prompts; resume_files.py, csvlog.py and lossplot.py write what a
run leaves behind; session.py runs one training from the objects a graph passes around."""
