"""hypernet/models."""
