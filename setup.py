from setuptools import find_packages, setup

setup(
    name="hersr",
    version="0.1.0",
    description="HERSR: Hybrid Efficient Restoration & Super-Resolution, a BasicSR plugin",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["hersr_arch", "hersr_arch.*"]),
    package_data={"hersr_arch.bench": ["targets.json"]},
    python_requires=">=3.10",
    install_requires=[
        "torch",
        "torchvision",
        "basicsr==1.4.2",
        "opencv-python",
        "numpy",
        "lmdb",
        "pyyaml",
        "tqdm",
    ],
    extras_require={
        # The suite also exercises the optional integrations (export, spandrel).
        "test": ["pytest", "pytest-xdist", "ruff", "scikit-image", "spandrel", "safetensors", "onnx", "onnxruntime"],
        "data": ["scikit-image"],
        "export": ["onnx", "onnxruntime", "safetensors"],
        "spandrel": ["spandrel", "safetensors"],
    },
    entry_points={
        "console_scripts": [
            "basicsr=hersr_arch.cli.basicsr_cli:main",
            "hersr=hersr_arch.cli.hersr_cli:main",
        ]
    },
)
