-- The rule policy every edge applies after scoring (the rules crate's TOML: rules, allow/block
-- lists, defaults). Append-only: the newest revision is in force; older ones are the history.
CREATE TABLE policies (
    revision    bigserial PRIMARY KEY,
    text        text NOT NULL,
    rules       integer NOT NULL,
    list_members integer NOT NULL,
    uploaded_by text NOT NULL,
    uploaded_at timestamptz NOT NULL DEFAULT now()
);
