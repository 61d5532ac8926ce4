-- Kept in step with migrations/sqlite/0005: a returning customer's sales
-- were found by walking every one of them (customer history, the customer's
-- later orphans, the sales of one subscription). The purchase time and id join
-- the customer and email indexes; a customer's orphans and a
-- subscription's sales get indexes that hold only such rows.
DROP INDEX IF EXISTS conversions_customer;
CREATE INDEX conversions_customer ON conversions (client_id, customer, purchased_at, id);
DROP INDEX IF EXISTS conversions_email;
CREATE INDEX conversions_email ON conversions (client_id, lower(email), purchased_at, id);
CREATE INDEX conversions_subscription ON conversions (client_id, subscription)
    WHERE subscription IS NOT NULL;
CREATE INDEX conversions_customer_orphans ON conversions (client_id, customer, purchased_at)
    WHERE link_id IS NULL AND merged_into IS NULL;
