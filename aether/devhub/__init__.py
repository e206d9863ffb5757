"""The development Hub (`aether hub`): a real, embedded Aether Hub for local work and tests.

The SDK core never imports this package.
"""
