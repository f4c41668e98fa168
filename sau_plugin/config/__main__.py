"""``python -m sau_plugin.config``: every setting as a Markdown table (the README embeds it)."""

import sys

from .table import settings_table

if __name__ == "__main__":
    sys.stdout.write(settings_table())
