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


def test_setup_cfg_is_the_one_source_of_versions_the_makefile_installs():
    """The Makefile pins nothing itself: what it installs with pip comes from setup.cfg (the test and docs extras,
    and the `[advlab:no-deps]` list of packages whose own pins conflict), so `pip install -e '.[test]'` plus that
    list is the same environment as `make install`."""
    makefile = (ROOT / "Makefile").read_text()
    pip_lines = [line for line in makefile.splitlines() if "pip install" in line]
    assert pip_lines and not [line for line in pip_lines if "==" in line], pip_lines
    setup = configparser.ConfigParser()
    setup.read(ROOT / "setup.cfg")
    no_deps = setup["advlab:no-deps"]["packages"].split()
    assert no_deps and all("==" in package for package in no_deps)  # each pinned, in one place
    test_extra = setup["options.extras_require"]["test"].split()
    assert any(p.startswith("torch==") for p in test_extra) and any(p.startswith("ruff==") for p in test_extra)
