-- Chunks of multi-frame sources are byte ranges of the source itself (no chunk file):
-- where they start, the decompressed bytes at their start that belong to the previous
-- chunk's last line, and the decompressed end of their own last line.
ALTER TABLE protheon.jobs
    ADD COLUMN source_offset bigint,
    ADD COLUMN head_skip     integer NOT NULL DEFAULT 0,
    ADD COLUMN tail          bytea   NOT NULL DEFAULT ''::bytea;
