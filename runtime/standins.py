"""Stand-ins for ComfyUI core nodes (headless only): filled in by the foundation issue."""
NODE_CLASS_MAPPINGS: dict = {}
NODE_DISPLAY_NAME_MAPPINGS: dict = {}
