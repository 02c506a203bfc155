"""Input and output: the only modules that open or write files."""
