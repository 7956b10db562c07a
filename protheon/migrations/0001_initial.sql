-- Protheon schema v1: the loaded dataset (schema pgcr) and the load ledger (schema protheon).
--
-- Dataset tables carry no foreign keys: a job writes an instance and its children in one
-- transaction, and per-row FK checks would cost a large share of COPY's speed at billions of rows.
-- Destiny hashes are uint32, so they are stored as bigint; ids are 64-bit decimal strings in JSON.

CREATE SCHEMA IF NOT EXISTS pgcr;
CREATE SCHEMA IF NOT EXISTS protheon;

CREATE TABLE pgcr.instances (
    instance_id             bigint      PRIMARY KEY,
    period                  timestamptz NOT NULL,
    ended_at                timestamptz,          -- period + longest activityDurationSeconds
    reference_id            bigint,
    director_activity_hash  bigint,
    mode                    smallint,
    modes                   smallint[],
    is_private              boolean,
    membership_type         smallint,
    starting_phase_index    integer,
    started_from_beginning  boolean,
    player_count            smallint    NOT NULL,  -- distinct membership ids
    entry_count             smallint    NOT NULL,
    completed               boolean     NOT NULL,  -- some character completed
    flawless                boolean     NOT NULL,  -- no entry died
    job_id                  bigint      NOT NULL   -- provenance: protheon.jobs.job_id
);
-- period grows with instance_id and with load order: a BRIN index is tiny and cheap to maintain.
CREATE INDEX instances_period_brin ON pgcr.instances USING brin (period);

CREATE TABLE pgcr.entries (
    instance_id                 bigint   NOT NULL,
    character_id                bigint   NOT NULL,
    membership_id               bigint   NOT NULL,
    membership_type             smallint,
    character_class             text,
    class_hash                  bigint,
    race_hash                   bigint,
    gender_hash                 bigint,
    character_level             integer,
    light_level                 integer,
    emblem_hash                 bigint,
    standing                    integer,
    score                       integer,
    assists                     integer,
    completed                   boolean,
    deaths                      integer,
    kills                       integer,
    opponents_defeated          integer,
    efficiency                  real,
    kills_deaths_ratio          real,
    kills_deaths_assists        real,
    activity_duration_seconds   integer,
    completion_reason           integer,
    fireteam_id                 bigint,
    start_seconds               integer,
    time_played_seconds         integer,
    player_count                integer,
    team_score                  integer,
    precision_kills             integer,
    weapon_kills_grenade        integer,
    weapon_kills_melee          integer,
    weapon_kills_super          integer,
    weapon_kills_ability        integer,
    PRIMARY KEY (instance_id, character_id)
);
-- "All activities of a player" is the query everyone runs first.
CREATE INDEX entries_membership_id ON pgcr.entries (membership_id);

CREATE TABLE pgcr.weapons (
    instance_id       bigint  NOT NULL,
    character_id      bigint  NOT NULL,
    weapon_id         bigint  NOT NULL,   -- referenceId (item hash)
    kills             integer,
    precision_kills   integer,
    precision_ratio   real,
    PRIMARY KEY (instance_id, character_id, weapon_id)
);

CREATE TABLE pgcr.players (
    membership_id             bigint      PRIMARY KEY,
    membership_type           smallint,
    display_name              text,
    global_display_name       text,
    global_display_name_code  integer,
    icon_path                 text,
    cross_save_override       smallint,
    last_instance_id          bigint      NOT NULL,  -- names are those seen in this instance
    last_seen                 timestamptz NOT NULL
);

CREATE TABLE protheon.files (
    file_id         integer     GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name            text        NOT NULL UNIQUE,      -- relative to the input folder
    size_bytes      bigint      NOT NULL,
    mtime           timestamptz NOT NULL,
    status          text        NOT NULL DEFAULT 'splitting'
                    CHECK (status IN ('splitting', 'split', 'done', 'failed')),
    lines_split     bigint      NOT NULL DEFAULT 0,   -- progress, for resuming a split
    chunks_split    integer     NOT NULL DEFAULT 0,
    lines_total     bigint,                           -- known once split
    chunks_total    integer,
    error           text,
    discovered_at   timestamptz NOT NULL DEFAULT now(),
    split_at        timestamptz,
    done_at         timestamptz
);

CREATE TABLE protheon.jobs (
    job_id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    file_id         integer     NOT NULL REFERENCES protheon.files ON DELETE CASCADE,
    seq             integer     NOT NULL,             -- chunk number within the file, from 0
    first_line      bigint      NOT NULL,             -- 1-based line number in the file
    line_count      integer     NOT NULL,
    byte_size       bigint      NOT NULL,             -- compressed chunk bytes
    raw_size        bigint      NOT NULL,             -- decompressed chunk bytes
    status          text        NOT NULL DEFAULT 'ready'
                    CHECK (status IN ('ready', 'published', 'running', 'done', 'failed')),
    attempts        integer     NOT NULL DEFAULT 0,
    worker          text,
    error           text,
    pgcrs           integer,                          -- new instances written
    duplicates      integer,                          -- valid lines whose instance already existed
    entries         integer,
    weapons         integer,
    players         integer,
    rejects         integer,
    created_at      timestamptz NOT NULL DEFAULT now(),
    published_at    timestamptz,
    started_at      timestamptz,
    finished_at     timestamptz,
    UNIQUE (file_id, seq)
);
-- Open jobs are few and queried often (status, chunk serving, reconciliation).
CREATE INDEX jobs_open ON protheon.jobs (status) WHERE status <> 'done';
CREATE INDEX jobs_finished_at ON protheon.jobs (finished_at) WHERE finished_at IS NOT NULL;

CREATE TABLE protheon.rejects (
    reject_id       bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    file_id         integer     NOT NULL REFERENCES protheon.files ON DELETE CASCADE,
    job_id          bigint      NOT NULL REFERENCES protheon.jobs ON DELETE CASCADE,
    line_number     bigint      NOT NULL,             -- 1-based, in the source file
    error           text        NOT NULL,
    line_bytes      integer     NOT NULL,             -- length of the whole raw line
    raw_line        text        NOT NULL,             -- cut to the first few KiB
    created_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (file_id, line_number)
);
CREATE INDEX rejects_job_id ON protheon.rejects (job_id);
