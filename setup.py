"""Installs the packages model, data, train, scaling and evaluation, and cli, the command line they share.

jax is installed for the CPU by default; the extras pick accelerator builds:
  pip install -e .[gpu]   # CUDA 12 wheels
  pip install -e .[tpu]
"""
from setuptools import find_packages, setup

setup(
    name="scalinglm",
    version="0.1.0",
    description="JAX/Flax transformer language models for scaling-law research",
    python_requires=">=3.10",
    packages=find_packages(include=["model", "model.*", "data", "data.*", "train", "train.*",
                                    "scaling", "scaling.*", "evaluation", "evaluation.*", "cli"]),
    include_package_data=True,
    package_data={"scaling": ["reference_data/*.csv", "reference_data/README.md"]},
    # jax 0.7.1 brought jax.set_mesh (train/partitioning.activate).
    install_requires=[
        "jax>=0.7.1,<0.13",
        "flax>=0.10,<0.14",
        "optax>=0.2.3",
        "orbax-checkpoint>=0.10",
        "tensorflow-datasets>=4.9.7",
        # tfds imports it at load time but does not declare it.
        "importlib_resources>=6",
        "array_record>=0.5",
        "sentencepiece>=0.2",
        "gin-config>=0.5",
        "numpy>=1.26",
        "scipy>=1.11",
        # OpenBLAS's thread start-up costs ~6 ms per tiny solve: the fits run single-threaded.
        "threadpoolctl>=3.1",
        "tqdm>=4.66",
        "tensorboardX>=2.6",
    ],
    extras_require={
        "gpu": ["jax[cuda12]>=0.7.1,<0.13"],
        "tpu": ["jax[tpu]>=0.7.1,<0.13"],
        "torch": ["torch>=2.4"],
        "lm_eval": ["lm-eval>=0.4"],
        "notebooks": ["matplotlib>=3.8", "nbclient>=0.10", "nbformat>=5.10", "ipykernel>=6.29"],
        "dev": ["pytest>=8", "matplotlib>=3.8", "nbclient>=0.10", "nbformat>=5.10",
                "ipykernel>=6.29"],
    },
)
