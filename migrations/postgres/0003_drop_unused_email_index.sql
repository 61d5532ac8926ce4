-- Kept in step with migrations/sqlite/0003: on PostgreSQL conversions_email
-- is already on lower(email) and is the index email lookups use, so nothing
-- changes here.
SELECT 1;
