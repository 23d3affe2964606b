"""steerlab: persona vectors and in-training defenses against emergent misalignment."""

__version__ = "0.1.0"
