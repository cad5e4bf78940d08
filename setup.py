"""Packaging for retail-backbone.

The design card's top-level folders (``io/``, ``pipelines/``, ...) become subpackages of one import
namespace, ``retail_backbone``, through ``package_dir``: ``io/`` installs as
``retail_backbone.io`` and never shadows the standard library's ``io``. Dataflow and Flink workers
install the same package with
``--setup_file ./setup.py``.
"""

from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).parent
SUBPACKAGES = ["io", "pipelines", "transforms", "schemas", "templates", "stack", "generator"]


def _packages() -> tuple[list[str], dict[str, str]]:
    packages = ["retail_backbone"]
    package_dir = {"retail_backbone": "retail_backbone"}
    for folder in SUBPACKAGES:
        name = f"retail_backbone.{folder}"
        package_dir[name] = folder
        packages.append(name)
        packages += [f"{name}.{sub}" for sub in find_packages(where=folder)]
    return packages, package_dir


def _requirements() -> list[str]:
    lines = (ROOT / "requirements.txt").read_text().splitlines()
    reqs = [ln.split("#")[0].strip() for ln in lines]
    # Test and lint tooling is pinned in requirements.txt too but workers do not need it.
    dev_only = ("pytest", "ruff", "hypothesis")
    return [r for r in reqs if r and not r.startswith(("-", *dev_only))]


packages, package_dir = _packages()

setup(
    name="retail-backbone",
    version="0.1.0",
    description="A retailer's real-time and batch data backbone as Apache Beam pipelines",
    python_requires=">=3.11,<3.12",
    packages=packages,
    package_dir=package_dir,
    package_data={
        "retail_backbone.schemas": ["**/*.avsc", "*.toml", "*.json"],
        "retail_backbone.templates": ["**/*.json", "**/*.yaml", "**/Dockerfile"],
        "retail_backbone.stack": ["java/*.java", "go/*/*.go"],
    },
    include_package_data=True,
    install_requires=_requirements(),
    entry_points={"console_scripts": ["backbone = retail_backbone.cli:main"]},
)
