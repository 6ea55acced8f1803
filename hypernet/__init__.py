"""The pure library behind the nodes, in the order data flows through it:

- preprocess/  images -> dataset (load a folder, crop, flip, save), taggers/ for captions;
- train/       dataset -> latents -> a trained network (the TrainingRun and its parts);
- spec.py, network.py, file_format.py: the hypernetwork, its modules and its files;
- patch.py     where a hypernetwork is applied (the attention patch), training_patch.py in training,
               kv_pair.py the k/v modules that read one input run as a pair;
- sd/          the headless Stable Diffusion engine (checkpoints, tokenizer, sampling, tiny model);
- files.py, images.py, errors.py: safe paths and atomic writes, tensor <-> picture, InputError;
- safe_load.py reads weight files safely (weights_only or safetensors), input_values.py checks a
  node input's value (check_choice, single_value);
- image_grid.py a labelled grid of pictures (rows x columns, row and column labels);
- compare/     networks side by side: step files of a run, what it recorded, the grid's plan, the table.

It never imports ComfyUI, nodes/ or runtime/, and its errors never name a node. Importing the
package is cheap: submodules pull in diffusers/transformers only when used."""
