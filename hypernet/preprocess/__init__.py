"""Images -> dataset: read a folder robustly (image_folder.py), crop (crop.py with focal.py and
faces.py), flip (flip.py), write a dataset folder (saving.py), a big folder chunk by chunk
(chunks.py); pipeline.py runs these on IMAGE/MASK lists, lists.py is the one shape a dataset has
between steps, options.py holds their choices and workers.py runs the per-picture work (decoding,
cropping) on every core.
Captions: captions.py combines an existing caption with a generated one; tag_syntax.py reads a caption as tags, which
tag_stats.py counts, tag_rules.py edits by rules and tag_filter.py selects by expression."""
