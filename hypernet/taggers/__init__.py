"""hypernet/taggers."""
