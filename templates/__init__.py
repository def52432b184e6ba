"""The emails' templates (`emails/`), shipped as this package's data so that `require2fa.emails`
finds them through the import system wherever the project is installed. No code."""
