"""`python -m hypernet_studio.runtime` = the `hypernet-studio` CLI."""
import sys

from .cli import main

sys.exit(main())
