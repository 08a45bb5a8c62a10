"""The ``idgen`` command line: the one place that assembles the client and the server."""
