"""xl2nn: compile spreadsheet models to PyTorch, verify them, train them."""
__version__ = "0.1.0"
