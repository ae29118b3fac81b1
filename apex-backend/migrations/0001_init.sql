-- apex-backend schema. Runs inside the configured schema (search_path).

CREATE TABLE users (
    id            uuid PRIMARY KEY,
    email         text NOT NULL,
    name          text NOT NULL,
    password_hash text NOT NULL,
    is_demo       boolean NOT NULL DEFAULT false,
    created_at    timestamptz NOT NULL DEFAULT now()
);
-- Login looks users up by email, case-insensitively.
CREATE UNIQUE INDEX users_email_lower ON users (lower(email));

-- A user's AI API usage log, in file order.
CREATE TABLE usage_records (
    user_id uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    line    integer NOT NULL,
    record  jsonb NOT NULL,
    PRIMARY KEY (user_id, line)
);

CREATE TABLE threads (
    id         uuid PRIMARY KEY,
    user_id    uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE messages (
    id         uuid PRIMARY KEY,
    thread_id  uuid NOT NULL REFERENCES threads (id) ON DELETE CASCADE,
    user_id    uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    run_id     uuid,
    role       text NOT NULL CHECK (role IN ('user', 'assistant')),
    content    text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
-- A thread's messages in order.
CREATE INDEX messages_thread ON messages (thread_id, created_at);

CREATE TABLE runs (
    id           uuid PRIMARY KEY,
    user_id      uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    thread_id    uuid NOT NULL REFERENCES threads (id) ON DELETE CASCADE,
    server_id    text NOT NULL,
    status       text NOT NULL CHECK (status IN ('running', 'completed', 'failed', 'interrupted')),
    result       jsonb,
    started_at   timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL DEFAULT now(),
    finished_at  timestamptz
);
-- The sweeper looks for running runs whose owner stopped beating.
CREATE INDEX runs_running ON runs (heartbeat_at) WHERE status = 'running';
-- Recent runs of a user (interrupted-run notice at connect).
CREATE INDEX runs_user ON runs (user_id, started_at);

-- The per-user event log: every stream event, durable.
CREATE TABLE events (
    user_id    uuid NOT NULL,
    seq        bigint NOT NULL,
    run_id     uuid NOT NULL,
    type       text NOT NULL,
    body       jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, seq)
);
CREATE INDEX events_run ON events (run_id, seq);
