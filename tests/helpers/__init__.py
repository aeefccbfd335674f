"""Shared helpers for the judgeopt test suite."""
