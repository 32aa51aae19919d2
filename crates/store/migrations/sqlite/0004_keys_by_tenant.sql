-- Listing a tenant's keys is a range scan of this index (customer, then name), so its cost
-- depends on that tenant's keys only, never on other tenants' keys whose names share a prefix.
-- It replaces the index on customer alone, of which it is an extension.
DROP INDEX keys_customer;
CREATE INDEX keys_customer_name ON keys (customer, name);
