-- idgen segment table for SQLite (the zero-setup default; `idgen serve` without
-- --db creates it in idgen.db of the per-user data directory, or of $IDGEN_DATA_DIR). Kept in step with idgen_server/schema.py by
-- tests/test_schema.py.
CREATE TABLE IF NOT EXISTS idgen_segment (
    biz_type   VARCHAR(64) NOT NULL,
    max_id     BIGINT      NOT NULL,
    step       BIGINT      NOT NULL,
    delta      INTEGER     NOT NULL,
    remainder  INTEGER     NOT NULL,
    version    BIGINT      NOT NULL,
    registration VARCHAR(32) NOT NULL DEFAULT '',
    created_at DATETIME    NOT NULL DEFAULT CURRENT_TIMESTAMP,
    updated_at DATETIME    NOT NULL DEFAULT CURRENT_TIMESTAMP,
    PRIMARY KEY (biz_type)
);

-- Tokens (`idgen token create`): only a SHA-256 of each token is kept.
CREATE TABLE IF NOT EXISTS idgen_token (
    token_id    VARCHAR(16) NOT NULL,
    name        VARCHAR(64) NOT NULL,
    secret_hash VARCHAR(64) NOT NULL,
    biz_types   TEXT        NOT NULL,
    admin       INTEGER     NOT NULL DEFAULT 0,
    created_at  DATETIME    NOT NULL DEFAULT CURRENT_TIMESTAMP,
    revoked_at  DATETIME,
    PRIMARY KEY (token_id),
    UNIQUE (name)
);

-- Leases of the sequencer (idgen_client.lease): one process at a time holds each.
CREATE TABLE IF NOT EXISTS idgen_lease (
    biz_type   VARCHAR(64) NOT NULL,  -- the biz type of the seqs
    name       VARCHAR(64) NOT NULL,  -- the shard of groups it covers
    holder     VARCHAR(64) NOT NULL,  -- random id of its holder; '' once released
    epoch      BIGINT      NOT NULL,                       -- grows with every new holder
    ttl_ms     BIGINT      NOT NULL,                       -- kept this long after a renewal
    version    BIGINT      NOT NULL,                       -- optimistic lock
    updated_at DATETIME    NOT NULL DEFAULT CURRENT_TIMESTAMP,  -- for people only
    PRIMARY KEY (biz_type, name)
);
