-- The service's own schema; everything it stores lives here, apart from Supabase's tables.
CREATE SCHEMA IF NOT EXISTS ai_backend;
