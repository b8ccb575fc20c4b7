-- The alerting group's incident store, beside booking's database (each has
-- its own migrations table). Runs once, on the volume's first start.
CREATE DATABASE alerting;
