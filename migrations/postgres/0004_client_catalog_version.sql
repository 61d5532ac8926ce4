-- The number the SQLite store checks before it uses its in-memory copy of
-- the clients and their secrets (see migrations/sqlite/0004). Kept here too
-- so that both backends hold the same tables: triggers bump it on any
-- change to either table.
CREATE TABLE client_catalog_version (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    version BIGINT NOT NULL
);
INSERT INTO client_catalog_version (id, version) VALUES (1, 0);

CREATE FUNCTION bump_client_catalog_version() RETURNS trigger AS $$
BEGIN
    UPDATE client_catalog_version SET version = version + 1;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER clients_changed AFTER INSERT OR UPDATE OR DELETE ON clients
    FOR EACH STATEMENT EXECUTE FUNCTION bump_client_catalog_version();
CREATE TRIGGER webhook_secrets_changed AFTER INSERT OR UPDATE OR DELETE ON webhook_secrets
    FOR EACH STATEMENT EXECUTE FUNCTION bump_client_catalog_version();
