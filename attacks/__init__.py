"""Built-in attack plugins, one file per family."""
