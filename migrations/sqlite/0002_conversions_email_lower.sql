-- Customer history looks conversions up by lower(email): without an index on
-- that expression every sale of a new customer scanned all of its client's
-- conversions (the cost grew with history).
CREATE INDEX conversions_email_lower ON conversions (client_id, lower(email));
