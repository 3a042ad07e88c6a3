"""Helpers the tests (and benchmarks) share: fixtures data that is not part of the service."""
