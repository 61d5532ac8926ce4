-- Same file name as the SQLite migration; PostgreSQL has had this index since
-- 0001 (conversions_email is on lower(email) there).
CREATE INDEX IF NOT EXISTS conversions_email ON conversions (client_id, lower(email));
