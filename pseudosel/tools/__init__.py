"""The command-line tools (``pseudosel compare``, ``pseudosel bench``), apart from the library."""
