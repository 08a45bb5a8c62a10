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
