"""insightface-align: Stacked Dense U-Nets with Dual Transformers (BMVC 2018) in MXNet.

`make install` installs the exact pins of requirements/*.txt; the ranges below are what
`pip install .` needs. MXNet comes through an extra so the CPU and CUDA builds can be
chosen: `pip install .[cpu]` or `pip install .[gpu]`.
"""
from setuptools import find_packages, setup

setup(
    name="insightface-align",
    version="0.1.0",
    description="Stacked dense U-Nets with dual transformers for 2D/3D face alignment (MXNet)",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    # The method's home: the InsightFace repository that holds the paper's release.
    url="https://github.com/deepinsight/insightface",
    license="MIT",
    classifiers=["License :: OSI Approved :: MIT License", "Programming Language :: Python :: 3.11",
                 "Operating System :: POSIX :: Linux", "Topic :: Scientific/Engineering :: Image Recognition"],
    python_requires=">=3.11,<3.12",
    packages=find_packages(include=["insightface_align", "insightface_align.*"]),
    # Recipes, the bundled model and the compiled operators' sources travel with the
    # package; the operator library is built on first use (insightface-align build-ops).
    package_data={
        "insightface_align": ["recipes/*.yaml"],
        "insightface_align.symbols.ext": ["*.cc", "*.h"],
        "insightface_align.models": ["bundled-2d/*.params", "bundled-2d/*.json"],
    },
    install_requires=[
        "numpy>=1.21,<1.24",  # MXNet 1.9 is built against the numpy 1.x ABI
        "opencv-python-headless>=4.5",
        "scikit-image>=0.19",
        "scipy>=1.8",
        "simplejpeg>=1.9",
        "PyYAML>=5.4",
        "tqdm>=4.60",
        "matplotlib>=3.5",
        "h5py>=3.0",
        "moderngl>=5.8",
        "dlib-bin>=19.24",
        "onednn-cpu-gomp==2022.0.2",
        "onednn-devel-cpu-gomp==2022.0.2",
    ],
    extras_require={
        "cpu": ["mxnet==1.9.1"],
        "gpu": ["mxnet-cu112==1.9.1"],
        "onnx": ["onnx==1.14.1", "onnxruntime>=1.14"],
    },
    entry_points={"console_scripts": ["insightface-align=insightface_align.cli:main"]},
)
