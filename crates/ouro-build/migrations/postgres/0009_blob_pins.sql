-- Blob pins: another part of Ouro (a release, ...) keeps a blob of the artifact store alive, so
-- artifact expiry and GC never delete it even when no build artifact or cache references it.
-- `owner` names the kind of holder (`release`), `owner_id` its id.
CREATE TABLE build_blob_pins (
    owner TEXT NOT NULL,
    owner_id BIGINT NOT NULL,
    sha256 TEXT NOT NULL,
    PRIMARY KEY (owner, owner_id, sha256)
);
CREATE INDEX build_blob_pins_sha ON build_blob_pins(sha256);
