"""Package discovery for the root-level source folders (see pyproject.toml)."""

from setuptools import find_packages, setup

ROOT_FOLDERS = ("flows", "schemas", "operators", "sinks")

packages = ["driftline"] + [f"driftline.{p}" for p in find_packages("driftline")]
for folder in ROOT_FOLDERS:
    packages.append(f"driftline.{folder}")
    packages += [f"driftline.{folder}.{p}" for p in find_packages(folder)]

setup(packages=packages)
