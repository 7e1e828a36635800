"""HTTP basic auth: password hashes, htpasswd files, and one middleware guarding every route."""
