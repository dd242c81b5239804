"""The one build step pyproject.toml cannot say: the suite's Hydra configs live in ``conf/``
at the repository root (where Hydra, the tests and every branch find them) and are copied
into the built package as ``lerac/suite/conf``, so a wheel (non-editable) install can run
``lerac-train``. ``lerac.suite.config.CONF_DIR`` finds that copy when no checkout is there.
An editable install reads ``conf/`` of the checkout and copies nothing."""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

CONF = Path(__file__).resolve().parent / "conf"


class BuildWithConf(build_py):
    def run(self) -> None:
        super().run()
        if not self.editable_mode:
            target = Path(self.build_lib) / "lerac" / "suite" / "conf"
            shutil.copytree(CONF, target, dirs_exist_ok=True)


setup(cmdclass={"build_py": BuildWithConf})
