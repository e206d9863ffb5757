"""The SDK's version (sent to the Hub as RegisterRequest.sdk_version)."""

__version__ = "0.1.0"
