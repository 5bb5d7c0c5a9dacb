"""wxnet: an open implementation of the WeChat-style network system."""

__version__ = "0.1.0"
