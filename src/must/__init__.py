"""must: Multi-Task Self-Training (MuST, Ghiasi et al., ICCV 2021) in PyTorch."""

__version__ = "0.1.0"
