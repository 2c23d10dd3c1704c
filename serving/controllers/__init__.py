"""One Litestar controller per concern of the API."""
