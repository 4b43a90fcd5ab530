"""Contracts every layer builds on: attacks, criteria, defenses, images, threat models, randomness,
the catalogs, configs and errors."""
