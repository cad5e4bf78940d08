"""Packaging for retail-backbone.

The design card's top-level folders (``io/``, ``pipelines/``, ...) become subpackages of one import
namespace, ``retail_backbone``, through ``package_dir``: ``io/`` installs as
``retail_backbone.io`` and never shadows the standard library's ``io``. Dataflow and Flink workers
install the same package with
``--setup_file ./setup.py``.
"""

from pathlib import Path

from setuptools import find_namespace_packages, setup

ROOT = Path(__file__).parent
SUBPACKAGES = ["io", "pipelines", "transforms", "schemas", "templates", "stack", "generator"]


def _packages() -> tuple[list[str], dict[str, str]]:
    packages = ["retail_backbone"]
    package_dir = {"retail_backbone": "retail_backbone"}
    for folder in SUBPACKAGES:
        name = f"retail_backbone.{folder}"
        package_dir[name] = folder
        packages.append(name)
        # Namespace discovery also lists data-only folders (schemas/<subject>/, stack/java/),
        # which setuptools wants declared as packages for their files to be installed.
        subs = find_namespace_packages(where=folder, exclude=["*__pycache__*"])
        packages += [f"{name}.{sub}" for sub in subs]
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
        "": ["*.avsc", "*.toml", "*.json", "*.java", "*.go", "*.yaml", "Dockerfile"],
    },
    include_package_data=True,
    install_requires=_requirements(),
    entry_points={"console_scripts": ["backbone = retail_backbone.cli:main"]},
)
