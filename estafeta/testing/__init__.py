"""estafeta."""
