"""Operating the platform: backups of its databases and artifacts, and their restore."""
