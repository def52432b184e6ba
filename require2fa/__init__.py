"""require2fa: the service behind an organization's Require Two-Factor Authentication switch."""
