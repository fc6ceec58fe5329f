"""Fakes of external services, shared by the test folders."""
