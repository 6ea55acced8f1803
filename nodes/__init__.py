"""Thin V1 node classes. Each module exports NODE_CLASS_MAPPINGS / NODE_DISPLAY_NAME_MAPPINGS;
this package merges them. Node modules import only torch at module level (never diffusers,
transformers, cv2 or onnxruntime), so loading the pack stays cheap."""
from . import dataset, model, train

NODE_CLASS_MAPPINGS: dict = {}
NODE_DISPLAY_NAME_MAPPINGS: dict = {}
for _module in (dataset, model, train):
    NODE_CLASS_MAPPINGS.update(_module.NODE_CLASS_MAPPINGS)
    NODE_DISPLAY_NAME_MAPPINGS.update(_module.NODE_DISPLAY_NAME_MAPPINGS)
