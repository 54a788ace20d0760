"""meadkit: turn the MEAD emotional talking-face corpus into training data, and train its baseline."""

__version__ = "0.1.0"
