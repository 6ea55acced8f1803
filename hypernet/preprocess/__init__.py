"""Images -> dataset: read a folder robustly (image_folder.py), crop (crop.py with focal.py and
faces.py), flip (flip.py), write a dataset folder (saving.py); pipeline.py runs these on IMAGE/MASK
lists, and lists.py is the one shape a dataset has between steps."""
