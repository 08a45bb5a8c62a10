-- idgen segment table for PostgreSQL. Kept in step with
-- idgen_server/schema.py by tests/test_schema.py; `idgen init-db` does the same.
-- One row per biz type per database. Segments are (max_id, max_id + step];
-- this database hands out only IDs with id % delta = remainder.
CREATE TABLE IF NOT EXISTS idgen_segment (
    biz_type   VARCHAR(64) NOT NULL,                       -- the ID space, [A-Za-z0-9_.:-]{1,64}
    max_id     BIGINT      NOT NULL,                       -- highest ID allocated so far
    step       BIGINT      NOT NULL,                       -- numbers claimed per allocation
    delta      INTEGER     NOT NULL,                       -- number of databases serving it
    remainder  INTEGER     NOT NULL,                       -- this database's residue class
    version    BIGINT      NOT NULL,                       -- optimistic lock
    registration VARCHAR(32) NOT NULL DEFAULT '',          -- shared by the rows of one registration
    created_at TIMESTAMP WITHOUT TIME ZONE NOT NULL DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMP WITHOUT TIME ZONE NOT NULL DEFAULT CURRENT_TIMESTAMP,
    PRIMARY KEY (biz_type)
);

-- Tokens (`idgen token create`): only a SHA-256 of each token is kept.
CREATE TABLE IF NOT EXISTS idgen_token (
    token_id    VARCHAR(16) NOT NULL,                      -- public half of the token
    name        VARCHAR(64) NOT NULL,                      -- unique, for people
    secret_hash VARCHAR(64) NOT NULL,                      -- hex SHA-256 of the token
    biz_types   TEXT        NOT NULL,                      -- comma-separated, or '*'
    admin       INTEGER     NOT NULL DEFAULT 0,            -- 1: also the admin scope
    created_at  TIMESTAMP WITHOUT TIME ZONE NOT NULL DEFAULT CURRENT_TIMESTAMP,
    revoked_at  TIMESTAMP WITHOUT TIME ZONE NULL,          -- set by `idgen token revoke`
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
    updated_at TIMESTAMP WITHOUT TIME ZONE NOT NULL DEFAULT CURRENT_TIMESTAMP,  -- for people only
    PRIMARY KEY (biz_type, name)
);
