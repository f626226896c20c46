"""Test helpers shipped with the package: backend conformance suites and synthetic scenes."""
