"""Contracts every layer builds on: attacks, criteria, defenses, images, norms, randomness, the catalogs, configs and errors."""
