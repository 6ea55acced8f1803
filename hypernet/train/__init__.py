"""Training, with A1111 parity (docs/training.md). Every module, in the order a run meets them:

session.py          training runs from the objects a graph passes around (backend, network, data)
sweep.py            a spec sweep: one run per spec, each named NAME-<spec> (sweep_names)
run_files.py        where a run writes, so that a re-run never silently replaces an earlier result
config.py           what a run is told (TrainConfig), gives back (TrainResult), its hooks, its failure
batches.py          images sized into buckets (TrainingExample) and the order of the batches (BatchPlan)
picture_files.py    a prepared folder as a TrainingSet, read from headers, decoded picture by picture
epochs.py           what `steps` means for the set: pictures, images per step, epochs (EpochFigures)
templates.py        the prompt template sets; prompts.py fills them with captions (tag shuffle/dropout)
run.py              the loop: a TrainingRun whose methods are its steps
prepared_run.py     what a run builds before its first step (PreparedRun) and prepare_run(); what a
                    sweep's runs share (SweepEncodings: the pictures and prompts encoded once)
run_summary.py      run_summary.json: a run's spec, size, steps, losses and speed, for comparing runs
latents.py          images encoded into latents and prompts into conditionings, once
encoding_cache.py   the persistent cache of latents and conditionings on disk, across runs and processes
shared_encoding.py  several processes (torchrun) encode each their share of the pictures and exchange
conditioning.py     what the loop hands a backend's predict() (the context, SDXL's pooled output)
backend.py          the small protocol the loop runs against, and the noise schedule;
                    backend_diffusers.py (headless models) and backend_comfy.py (ComfyUI's)
distributed.py      several processes (torchrun): shares, the one all-reduce per step, SingleProcess
random_draws.py     seeds derived from (seed, purpose, step, ...) and the noise/timestep draws
host_copies.py      CPU caches and draws onto the device each micro-batch, without a host sync
losses.py           the objective: q-sampling, the loss types, min-SNR weights
optimizer.py        the torch optimizer and its options
learning_rate.py    the learning rate: A1111 schedule strings (also clipping's), torch/diffusers schedulers
validation_loss.py  the held-out split and the validation loss
previews.py         preview grids (prompts x seeds) during training
resume_files.py     the .pt and .pt.optim a run saves and resumes from
logs.py             what a run logs as it goes: csvlog.py (the loss CSV) and TensorBoard
lossplot.py         the loss curve as a picture"""
