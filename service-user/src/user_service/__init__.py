"""service-user: accounts, argon2id passwords, login throttling and Ed25519-signed access tokens."""
