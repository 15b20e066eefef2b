"""Release: reproducible archives, their verification, wheels, the CI matrix."""
