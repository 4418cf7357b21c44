"""Web framework integrations, served for real on loopback."""
