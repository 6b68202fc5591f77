"""kaudit: inventory and audit GPU device code (CUDA fatbins, cubins, PTX, AMD HSACO) in files and images."""

__version__ = "0.1.0"

__all__ = ["__version__"]
