-- What an API key may do beyond its tenant (docs/api.md, "API keys"):
--   admin         sees every tenant in /api/v1/queue (others see their own tenant only)
--   max_priority  the most urgent priority its uploads may ask for (more → 403
--                 PriorityNotAllowed); existing keys get `normal`
ALTER TABLE api_keys
    ADD COLUMN admin boolean NOT NULL DEFAULT false,
    ADD COLUMN max_priority text NOT NULL DEFAULT 'normal'
        CHECK (max_priority IN ('high', 'normal', 'low'));
