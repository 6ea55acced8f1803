"""Thin V1 node classes, one module per subject (dataset, training_set, tags, model, train, compare), over the
library in hypernet/. Every ComfyUI touchpoint goes through host.py's HOST. Node modules import only torch
at module level (never diffusers, transformers, cv2 or onnxruntime), so loading the pack stays
cheap; this package merges their NODE_CLASS_MAPPINGS / NODE_DISPLAY_NAME_MAPPINGS."""
from . import compare, dataset, model, tags, train, training_set

NODE_CLASS_MAPPINGS: dict = {}
NODE_DISPLAY_NAME_MAPPINGS: dict = {}
for _module in (dataset, training_set, tags, model, train, compare):
    NODE_CLASS_MAPPINGS.update(_module.NODE_CLASS_MAPPINGS)
    NODE_DISPLAY_NAME_MAPPINGS.update(_module.NODE_DISPLAY_NAME_MAPPINGS)
