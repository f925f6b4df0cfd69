"""Installs the project's top-level folders under one namespace: edge/ -> egate.edge, drivers/ ->
egate.drivers, engines/ -> egate.engines, tools/ -> egate.tools, config/ -> egate.config and systemd/ ->
egate.systemd (data only).

Nothing generic lands at the top of site-packages (a package called `tools` would collide). The package
list is computed from the tree, so a new feature folder is installed without editing this file.
Metadata and dependencies are in pyproject.toml.
"""

from setuptools import find_packages, setup

FOLDERS = ("edge", "drivers", "engines", "tools", "config", "systemd")

packages = []
package_dir = {}
for folder in FOLDERS:
    package_dir[f"egate.{folder}"] = folder
    packages.append(f"egate.{folder}")
    for sub in find_packages(where=folder):
        packages.append(f"egate.{folder}.{sub}")

setup(packages=packages, package_dir=package_dir)
