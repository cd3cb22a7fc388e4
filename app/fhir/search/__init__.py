"""Search: index extraction at write time, criteria parsing, and SQL compilation."""
