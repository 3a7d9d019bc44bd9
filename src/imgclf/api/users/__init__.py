"""Users: sign-up, the current user, and (for admins) everyone."""
