-- StageSub tenant schema, version 1. One database per tenant (orchestra).
-- Run as the tenant role, so it owns every object (and the stats view).

-- +goose Up
CREATE TABLE tenant_meta (
    id         boolean PRIMARY KEY DEFAULT true CHECK (id), -- at most one row
    slug       text NOT NULL CHECK (slug <> ''),
    name       text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE users (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    email         text NOT NULL CHECK (length(email) BETWEEN 3 AND 254),
    name          text NOT NULL DEFAULT '',
    password_hash text NOT NULL,
    role          text NOT NULL DEFAULT 'staff' CHECK (role IN ('admin', 'staff', 'viewer')),
    active        boolean NOT NULL DEFAULT true,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX users_email_key ON users (lower(email));

-- Browser sessions. The cookie holds a random token; only its SHA-256 is stored.
CREATE TABLE sessions (
    token_hash bytea PRIMARY KEY,
    user_id    bigint NOT NULL REFERENCES users ON DELETE CASCADE,
    csrf_token text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL
);
CREATE INDEX sessions_user_idx ON sessions (user_id);
CREATE INDEX sessions_expires_idx ON sessions (expires_at);

-- API bearer tokens per staff user. Only the SHA-256 of a token is stored.
CREATE TABLE api_tokens (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    token_hash   bytea NOT NULL UNIQUE,
    user_id      bigint NOT NULL REFERENCES users ON DELETE CASCADE,
    name         text NOT NULL DEFAULT '',
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz
);

CREATE TABLE musicians (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name       text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    instrument text NOT NULL CHECK (length(instrument) BETWEEN 1 AND 100),
    email      text NOT NULL DEFAULT '',
    phone      text NOT NULL DEFAULT '',
    notes      text NOT NULL DEFAULT '',
    active     boolean NOT NULL DEFAULT true,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX musicians_name_idx ON musicians (lower(name));
CREATE INDEX musicians_instrument_idx ON musicians (lower(instrument));

CREATE TABLE projects (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    starts_on   date NOT NULL,
    ends_on     date NOT NULL,
    venue       text NOT NULL DEFAULT '',
    description text NOT NULL DEFAULT '',
    status      text NOT NULL DEFAULT 'planned' CHECK (status IN ('planned', 'confirmed', 'completed', 'cancelled')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CHECK (ends_on >= starts_on)
);
CREATE INDEX projects_starts_idx ON projects (starts_on);

-- Substitute requests: ask a musician to play a position in a project. The
-- musician answers through a link holding answer_token (random, >= 128 bits).
CREATE TABLE requests (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    project_id   bigint NOT NULL REFERENCES projects ON DELETE CASCADE,
    musician_id  bigint NOT NULL REFERENCES musicians,
    position     text NOT NULL CHECK (length(position) BETWEEN 1 AND 100),
    message      text NOT NULL DEFAULT '',
    status       text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'accepted', 'declined', 'cancelled')),
    answer_token text NOT NULL UNIQUE CHECK (length(answer_token) >= 22),
    created_by   bigint REFERENCES users ON DELETE SET NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    answered_at  timestamptz,
    updated_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX requests_project_idx ON requests (project_id);
CREATE INDEX requests_musician_idx ON requests (musician_id);
-- At most one open (pending or accepted) request per musician and project.
CREATE UNIQUE INDEX requests_open_key ON requests (project_id, musician_id) WHERE status IN ('pending', 'accepted');

-- Who did what when: the superadmin's "customer activity".
CREATE TABLE activity_log (
    id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at      timestamptz NOT NULL DEFAULT now(),
    user_id bigint REFERENCES users ON DELETE SET NULL,
    actor   text NOT NULL DEFAULT '',
    action  text NOT NULL,
    subject text NOT NULL DEFAULT ''
);
CREATE INDEX activity_log_at_idx ON activity_log (at DESC);

-- Read-only stats for the admin's stats role (GRANT SELECT on this view
-- only). A plain view reads its tables with its owner's rights, so the
-- stats role needs no rights on the tables.
CREATE VIEW stagesub_stats_v AS
SELECT
    (SELECT count(*) FROM musicians WHERE active)             AS musicians,
    (SELECT count(*) FROM projects)                           AS projects,
    (SELECT count(*) FROM requests WHERE status = 'pending')  AS open_requests,
    (SELECT max(at) FROM activity_log)                        AS last_activity,
    (SELECT coalesce(max(version_id), 0) FROM goose_db_version WHERE is_applied) AS schema_version;

-- +goose Down
DROP VIEW stagesub_stats_v;
DROP TABLE activity_log, requests, projects, musicians, api_tokens, sessions, users, tenant_meta;
