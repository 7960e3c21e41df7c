"""pg2kit: training data and a PyTorch trainer for pose-guided person image generation (PG2)."""

__version__ = "0.1.0"
