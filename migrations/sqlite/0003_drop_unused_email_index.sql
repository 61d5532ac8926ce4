-- Every email lookup compares lower(email) and uses conversions_email_lower
-- (0002); conversions_email (client_id, email) only cost a B-tree write on
-- each saved conversion.
DROP INDEX IF EXISTS conversions_email;
