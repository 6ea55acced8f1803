"""Choice lists shared by the library and the node definitions.

Kept free of heavy imports (no Pillow, numpy or OpenCV) because node INPUT_TYPES read them
on every ComfyUI page load."""
from __future__ import annotations

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")
CROP_METHODS = ("focal", "center", "split", "auto_sized", "fill", "stretch")
AUTO_SIZE_OBJECTIVES = ("maximize_area", "minimize_error")
FACE_DETECTORS = ("auto", "haar", "yunet", "none")
FLIP_DIRECTIONS = ("horizontal", "vertical", "both")
FLIP_MODES = ("append", "replace")
CAPTION_ACTIONS = ("ignore", "copy", "prepend", "append")
SAVE_NAMINGS = ("index-stem", "stem", "index")
DEEPBOORU_FILE_NAME = "model-resnet_custom_v3.pt"
