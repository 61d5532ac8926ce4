-- Every delivery verifies its signature against the clients and their
-- secrets; reading them all per delivery cost ~10 % of the server's CPU
-- under webhook load. The store keeps them in memory and checks this one
-- number instead. Triggers bump it on any change to either table, whoever
-- makes it (this process, the CLI in another, a hand-written UPDATE), so
-- a cached copy is never used after a change is committed.
CREATE TABLE client_catalog_version (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    version INTEGER NOT NULL
);
INSERT INTO client_catalog_version (id, version) VALUES (1, 0);

CREATE TRIGGER clients_inserted AFTER INSERT ON clients
BEGIN UPDATE client_catalog_version SET version = version + 1; END;
CREATE TRIGGER clients_updated AFTER UPDATE ON clients
BEGIN UPDATE client_catalog_version SET version = version + 1; END;
CREATE TRIGGER clients_deleted AFTER DELETE ON clients
BEGIN UPDATE client_catalog_version SET version = version + 1; END;
CREATE TRIGGER webhook_secrets_inserted AFTER INSERT ON webhook_secrets
BEGIN UPDATE client_catalog_version SET version = version + 1; END;
CREATE TRIGGER webhook_secrets_updated AFTER UPDATE ON webhook_secrets
BEGIN UPDATE client_catalog_version SET version = version + 1; END;
CREATE TRIGGER webhook_secrets_deleted AFTER DELETE ON webhook_secrets
BEGIN UPDATE client_catalog_version SET version = version + 1; END;
