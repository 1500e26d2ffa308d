"""nascore-dna: DNA, blockwisely supervised NAS with knowledge distillation (Li et al., CVPR 2020)."""

__version__ = "0.1.0"
