"""hypernet/train."""
