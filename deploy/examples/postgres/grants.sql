-- The role deploy/examples/postgres/adapter-config.yaml logs in as: it may connect and SELECT
-- what the presets and the described table read, nothing else (no INSERT, UPDATE, DELETE, no
-- function, no lock beyond a SELECT's). LISTEN needs no grant. Run as the tables' owner.
CREATE ROLE queue_metrics_reader LOGIN PASSWORD 'change me';
GRANT CONNECT ON DATABASE app TO queue_metrics_reader;
-- GoodJob (README "PostgreSQL job queues" lists every preset's grants).
GRANT USAGE ON SCHEMA public TO queue_metrics_reader;
GRANT SELECT ON public.good_jobs TO queue_metrics_reader;
-- pg-boss: the partitioned parent is enough.
GRANT USAGE ON SCHEMA pgboss TO queue_metrics_reader;
GRANT SELECT ON pgboss.job, pgboss.version TO queue_metrics_reader;
-- The described table and the query's table.
GRANT SELECT ON public.import_jobs, public.exports TO queue_metrics_reader;
