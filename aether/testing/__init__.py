"""Test helpers for agents: a pytest `hub` fixture and `TaskHarness` (filled in below)."""
