"""Fixtures for the node tests."""
from .fake_comfyui import comfyui  # noqa: F401 - a fixture: ComfyUI faked, ComfyHost installed
