"""Reads: the queries behind the REST API and the console, each returning its output schema."""
