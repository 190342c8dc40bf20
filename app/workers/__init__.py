"""Background work that runs beside the API: webhook delivery (issue 15)."""
