"""wxnet.client."""
