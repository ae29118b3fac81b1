-- Every WebSocket connection looks up its user's recently interrupted runs
-- (`connection_established.interrupted_runs`): an index of those alone, so the lookup does not
-- walk every run the user ever had.
CREATE INDEX runs_interrupted ON runs (user_id, finished_at) WHERE status = 'interrupted';
