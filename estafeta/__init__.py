"""estafeta: a mail transfer agent in Python, after Postfix's design."""
__version__ = "0.1.0"
