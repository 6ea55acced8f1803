"""Captions from pictures, offline: DeepDanbooru (deepbooru.py, its tag rules in deepbooru_post.py)
and WD14 ONNX taggers (wd14.py)."""
