-- A passed-through chunk is cut from frame headers, without decompressing: its line count is
-- learned from the worker that loads it, and its first line (and its rejects' line numbers)
-- once every chunk before it in the file has a count. Rejects keep their line within the job.
ALTER TABLE protheon.jobs
    ALTER COLUMN first_line DROP NOT NULL,
    ALTER COLUMN line_count DROP NOT NULL;
ALTER TABLE protheon.rejects
    ADD COLUMN line_in_job integer,
    ALTER COLUMN line_number DROP NOT NULL;
UPDATE protheon.rejects r SET line_in_job = r.line_number - j.first_line + 1
    FROM protheon.jobs j WHERE j.job_id = r.job_id;
ALTER TABLE protheon.rejects
    ALTER COLUMN line_in_job SET NOT NULL,
    ADD UNIQUE (job_id, line_in_job);
CREATE INDEX jobs_unnumbered ON protheon.jobs (file_id) WHERE first_line IS NULL;
CREATE INDEX rejects_unnumbered ON protheon.rejects (job_id) WHERE line_number IS NULL;
