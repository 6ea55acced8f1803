"""hypernet/preprocess."""
