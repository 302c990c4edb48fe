"""molpy: Mac-on-Linux's block driver and session layer on a Unicorn PowerPC core."""

__version__ = "0.1.0"
