"""API routers, one file per resource; routes stay thin (validation + a call into the service layer)."""
