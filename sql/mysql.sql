-- idgen segment table for MySQL / MariaDB. Kept in step with
-- idgen_server/schema.py by tests/test_schema.py; `idgen init-db` does the same.
-- One row per biz type per database. Segments are (max_id, max_id + step];
-- this database hands out only IDs with id % delta = remainder.
CREATE TABLE IF NOT EXISTS idgen_segment (
    biz_type   VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,  -- the ID space,
                                     -- [A-Za-z0-9_.:-]{1,64}, case-sensitive
    max_id     BIGINT      NOT NULL,                       -- highest ID allocated so far
    step       BIGINT      NOT NULL,                       -- numbers claimed per allocation
    delta      INTEGER     NOT NULL,                       -- number of databases serving it
    remainder  INTEGER     NOT NULL,                       -- this database's residue class
    version    BIGINT      NOT NULL,                       -- optimistic lock
    registration VARCHAR(32) CHARACTER SET ascii COLLATE ascii_bin NOT NULL DEFAULT '',  -- shared by the
                                     -- rows of one registration (idgen add-biz)
    created_at DATETIME    NOT NULL DEFAULT CURRENT_TIMESTAMP,
    updated_at DATETIME    NOT NULL DEFAULT CURRENT_TIMESTAMP,
    PRIMARY KEY (biz_type)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;

-- Register a biz type served by 2 databases: run on DB 0 with remainder 0 and
-- on DB 1 with remainder 1, the same registration on both (any 32 hex digits that
-- no other registration uses); or use `idgen add-biz order --db URL0 --db URL1`.
-- INSERT INTO idgen_segment (biz_type, max_id, step, delta, remainder, version, registration)
--     VALUES ('order', 0, 10000, 2, 0, 0, '0f1e2d3c4b5a69788796a5b4c3d2e1f0');

-- Tokens (`idgen token create`): only a SHA-256 of each token is kept.
CREATE TABLE IF NOT EXISTS idgen_token (
    token_id    VARCHAR(16) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,  -- public half of the token
    name        VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,  -- unique, for people
    secret_hash VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,  -- hex SHA-256 of the token
    biz_types   TEXT        NOT NULL,                      -- comma-separated, or '*'
    admin       INTEGER     NOT NULL DEFAULT 0,            -- 1: also the admin scope
    created_at  DATETIME    NOT NULL DEFAULT CURRENT_TIMESTAMP,
    revoked_at  DATETIME    NULL,                          -- set by `idgen token revoke`
    PRIMARY KEY (token_id),
    UNIQUE (name)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;

-- Leases of the sequencer (idgen_client.lease): one process at a time holds each.
CREATE TABLE IF NOT EXISTS idgen_lease (
    biz_type   VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,  -- the biz type of the seqs
    name       VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,  -- the shard of groups it covers
    holder     VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,  -- random id of its holder; '' once released
    epoch      BIGINT      NOT NULL,                       -- grows with every new holder
    ttl_ms     BIGINT      NOT NULL,                       -- kept this long after a renewal
    version    BIGINT      NOT NULL,                       -- optimistic lock
    updated_at DATETIME    NOT NULL DEFAULT CURRENT_TIMESTAMP,  -- for people only
    PRIMARY KEY (biz_type, name)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;
