"""Statement reviews and just-in-time access grants, decided by people through the admin API."""
