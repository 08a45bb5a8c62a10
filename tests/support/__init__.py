"""Test support: real databases, real server processes, a TCP proxy that cuts links."""
