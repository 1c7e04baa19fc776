-- Who changed something is now the name of the token that did it (store/src/auth.rs), not a
-- caller-chosen string; what a caller says about itself (`X-Actor`, a body's `actor`) is kept
-- beside it as a note. Rows written before keep their caller-chosen name and no note.
ALTER TABLE model_files ADD COLUMN upload_note text;
ALTER TABLE model_channel_changes ADD COLUMN note text;
ALTER TABLE policies ADD COLUMN note text;

-- Who made a model or a policy (contract::signing): the publisher's ed25519 signature, kept as
-- sent and handed to the edges, which verify it against the keys they trust. The store does
-- not judge it (it trusts no keys); NULL = unsigned.
ALTER TABLE model_files ADD COLUMN signature text;
ALTER TABLE policies ADD COLUMN signature text;
