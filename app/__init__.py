"""CRM lead-management backend."""
