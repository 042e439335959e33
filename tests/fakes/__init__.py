"""Local servers that behave like third-party services, for tests."""
