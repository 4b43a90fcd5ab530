"""Built-in defense plugins: preprocessors placed in front of the model."""
