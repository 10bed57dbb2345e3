"""Security material for a live federation: the SuperLink's TLS certificates and the SuperNodes' key pairs."""
