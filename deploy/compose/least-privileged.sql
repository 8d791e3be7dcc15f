-- The login the gateway uses: it may read and change the demo's rows, and nothing else.
\set app_password `cat /run/secrets/target_app_password`
CREATE ROLE hoopgw_app LOGIN PASSWORD :'app_password';
GRANT SELECT, INSERT, UPDATE, DELETE ON customers TO hoopgw_app;
