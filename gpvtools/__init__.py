"""gpvtools: Generative Psychometrics for Values (GPV) as streaming command-line stages."""

__version__ = "0.1.0"
