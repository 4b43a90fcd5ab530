"""What the package says about itself agrees: the LICENSE file is the license setup.cfg declares (and ships with
the distribution), and CITATION.cff cites the version that setup.cfg and `advlab.__version__` carry."""
from __future__ import annotations

import configparser
from pathlib import Path

import yaml

import advlab

ROOT = Path(__file__).resolve().parents[1]


def test_the_license_file_the_citation_and_the_version_agree_with_setup_cfg():
    setup = configparser.ConfigParser()
    setup.read(ROOT / "setup.cfg")
    metadata = setup["metadata"]
    license_file = ROOT / metadata["license_files"].strip()
    assert license_file.read_text().splitlines()[0] == f"{metadata['license']} License"
    citation = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert citation["license"] == metadata["license"]
    assert str(citation["version"]) == metadata["version"] == advlab.__version__
    assert citation["cff-version"] == "1.2.0" and citation["title"].startswith("advlab")
