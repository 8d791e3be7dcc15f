"""Who a caller is: API keys (keys), OIDC tokens (oidc, fetch), the authenticator that admits
identities (authn)."""
