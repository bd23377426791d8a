-- Least privilege, tightened after the catalog check (insights/db/grants.py, table in
-- ddl/README.md "Grants, checked") found 0014's blanket grants wider than the roles need:
--  * app_readwrite wrote the migration ledger (schema_migrations: it could mark a migration
--    applied or forge a checksum), the partition policy (it could shorten retention and have
--    the next `insights db maintain` drop months of data) and "wrote" the partition_catalog
--    view. The application reads them; the owner changes them.
--  * product_summary_view is a materialized view: "writing" it means nothing, reading it is
--    what the application does.
REVOKE INSERT, UPDATE ON schema_migrations, partition_policy, partition_catalog FROM app_readwrite;
REVOKE INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER
    ON product_summary_view FROM app_readwrite;
