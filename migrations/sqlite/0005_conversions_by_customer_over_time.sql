-- A returning customer's sales were found by walking every one of them: the
-- customer and email indexes ended at the customer, so the newest earlier
-- sale (customer history), the orphans from a given time on (a sale with a
-- link fixes later orphans of its customer) and the sales of one
-- subscription (trial handling, SPEC 2.9) each read all of the customer's
-- rows. The cost of a sale grew with its customer's history. With the
-- purchase time and id in the index (the order history wants, ties
-- included), history reads from 'before' down and stops at the first; a
-- customer's orphans and a subscription's sales have indexes of their own
-- that hold only such rows.
DROP INDEX conversions_customer;
CREATE INDEX conversions_customer ON conversions (client_id, customer, purchased_at, id);
DROP INDEX conversions_email_lower;
CREATE INDEX conversions_email_lower ON conversions (client_id, lower(email), purchased_at, id);
CREATE INDEX conversions_subscription ON conversions (client_id, subscription)
    WHERE subscription IS NOT NULL;
CREATE INDEX conversions_customer_orphans ON conversions (client_id, customer, purchased_at)
    WHERE link_id IS NULL AND merged_into IS NULL;
