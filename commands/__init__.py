"""The operator and developer shell: the `require2fa` commands, the clock, the embedded dev stack,
the demo, the seed and the test runner. The domain (`require2fa`) never imports from here."""
