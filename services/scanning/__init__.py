"""Image scanning: every pushed image inventoried from its layers, matched against an offline advisory
database, its SBOM and vulnerability report attached to it as OCI referrers, and (with the registry's
quarantine policy) held back until it passes."""
