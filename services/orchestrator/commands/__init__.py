"""Commands: what the REST API and the console change, each in one transaction of its own."""
