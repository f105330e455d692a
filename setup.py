"""insightface-align: Stacked Dense U-Nets with Dual Transformers (BMVC 2018) in MXNet.

Dependencies are pinned in requirements/*.txt and installed by the Makefile; the
extras below name the MXNet build for users installing by hand.
"""
from setuptools import find_packages, setup

setup(
    name="insightface-align",
    version="0.1.0",
    description="Stacked dense U-Nets with dual transformers for 2D/3D face alignment (MXNet)",
    python_requires=">=3.11,<3.12",
    packages=find_packages(include=["insightface_align", "insightface_align.*", "symbols", "symbols.*"]),
    # The compiled operators' sources travel with the package; `python -m symbols.ext` builds them.
    package_data={"symbols.ext": ["*.cc", "*.h"],
                  "insightface_align.models": ["bundled-2d/*.params", "bundled-2d/*.json"]},
    extras_require={
        "cpu": ["mxnet==1.9.1"],
        "gpu": ["mxnet-cu112==1.9.1"],
    },
    entry_points={
        "console_scripts": [
            "ifa-model-stats=insightface_align.cli.model_stats:main",
        ],
    },
)
