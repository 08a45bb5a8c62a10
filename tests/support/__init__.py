"""Test support: real databases and their tables, real server processes, a TCP proxy that
cuts links, fakes, threads, and waiting with a deadline."""
