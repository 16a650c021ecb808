"""The queue's schema as readable SQL: its migrations, and the rule for counting a holder's death."""

# Each entry upgrades the schema by one version (PRAGMA user_version); append, never edit.
MIGRATIONS = (
    """
    CREATE TABLE jobs (
        id INTEGER PRIMARY KEY,
        study_name TEXT NOT NULL,
        budget INTEGER NOT NULL,
        horizon INTEGER NOT NULL,
        job_name TEXT NOT NULL,
        job_text TEXT NOT NULL,              -- the job file as it was at enqueue time
        data_path TEXT,                      -- NULL: the bundled data
        data_sha256 TEXT NOT NULL,
        storage TEXT,                        -- NULL: SQLite in the state directory
        n_trials INTEGER NOT NULL,
        max_epochs INTEGER,
        priority INTEGER NOT NULL DEFAULT 0,
        timeout_s REAL,
        state TEXT NOT NULL DEFAULT 'queued'
            CHECK (state IN ('queued','running','paused','interrupted','done','failed','cancelled')),
        control TEXT CHECK (control IN ('pause', 'cancel')),  -- asked of the daemon holding the job
        attempts INTEGER NOT NULL DEFAULT 0,
        owner TEXT,
        lease_until REAL,
        created REAL NOT NULL,
        started REAL,
        finished REAL,
        run_s REAL NOT NULL DEFAULT 0,       -- seconds held by a daemon, summed over attempts
        last_error TEXT,
        trials_finished INTEGER NOT NULL DEFAULT 0,  -- copied from the study after each trial
        best_value REAL,
        best_arch TEXT,
        current_trial INTEGER,
        current_epoch INTEGER,
        progress_at REAL
    );
    CREATE INDEX jobs_claim ON jobs (state, priority DESC, created);
    CREATE TABLE daemons (
        owner TEXT PRIMARY KEY,
        pid INTEGER NOT NULL,
        host TEXT NOT NULL,
        started REAL NOT NULL,
        heartbeat REAL NOT NULL,
        paused_reason TEXT,
        readings TEXT                        -- JSON of the latest machine readings
    );
    """,
    """
    ALTER TABLE jobs ADD COLUMN memory_limit_gib REAL;  -- --memory-limit, NULL for the machine's
    ALTER TABLE jobs ADD COLUMN dropped_archs TEXT;     -- JSON keys too big for the limit at enqueue
    ALTER TABLE daemons ADD COLUMN paused_since REAL;
    """,
    """
    ALTER TABLE jobs ADD COLUMN baseline_value REAL;    -- the constant predictor's val loss, beside best_value
    """,
    """
    ALTER TABLE jobs ADD COLUMN crashes INTEGER NOT NULL DEFAULT 0;  -- times its holder died holding it
    """,
    # estimate: JSON of study.estimate.Estimate, made at enqueue; then the running trial's step
    # within its epoch, its steps per epoch, its planned epochs and its measured seconds per step
    """
    ALTER TABLE jobs ADD COLUMN estimate TEXT;
    ALTER TABLE jobs ADD COLUMN current_step INTEGER;
    ALTER TABLE jobs ADD COLUMN epoch_steps INTEGER;
    ALTER TABLE jobs ADD COLUMN trial_epochs INTEGER;
    ALTER TABLE jobs ADD COLUMN step_s REAL
    """,
    # window_opens: when a daemon waiting for its run window starts trials; notices: what a
    # daemon said that `hpod status` must show after it has gone (a stop it found at start);
    # last_failure: the newest failed trial's number and reason, for `hpod status`; claimed and
    # advanced: when the job was last claimed and last ended an epoch or a trial (see DEATH)
    """
    ALTER TABLE daemons ADD COLUMN window_opens REAL;
    CREATE TABLE notices (id INTEGER PRIMARY KEY, time REAL NOT NULL, text TEXT NOT NULL);
    ALTER TABLE jobs ADD COLUMN last_failure TEXT;
    ALTER TABLE jobs ADD COLUMN claimed REAL;
    ALTER TABLE jobs ADD COLUMN advanced REAL
    """,
    # waiting: why a held job starts no trial for now (its storage is away), for `hpod status`
    """
    ALTER TABLE jobs ADD COLUMN waiting TEXT
    """,
    # after_job: a job this one waits for (enqueue --after, or the rung below of a budget ladder);
    # after_search 1: only for that job's search (a ladder rung), 0: for its end; no_ladder 1:
    # queued with --no-ladder (search.transfer off, whatever its job file says)
    """
    ALTER TABLE jobs ADD COLUMN after_job INTEGER;
    ALTER TABLE jobs ADD COLUMN after_search INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE jobs ADD COLUMN no_ladder INTEGER NOT NULL DEFAULT 0
    """,
    # seeds_finished: the best trial's seed runs finished, for the job's time left and `now`
    """
    ALTER TABLE jobs ADD COLUMN seeds_finished INTEGER NOT NULL DEFAULT 0
    """,
)
# A job waiting for another is claimed once that one has ended (or is gone), or, waiting only for
# its search, has finished the search's trials; `j` is the job considered.
READY = (
    "(j.after_job IS NULL OR NOT EXISTS (SELECT 1 FROM jobs AS d WHERE d.id = j.after_job "
    "AND d.state NOT IN ('done', 'failed', 'cancelled') AND NOT (j.after_search AND d.trials_finished >= d.n_trials)))"
)
# A holder's death counts toward search.max_crashes only on evidence that the job caused it: a
# trial of it was running, and no epoch or trial ended during that hold. A death soon after a
# claim (no trial started) counts nothing, and progress during the hold starts the count again.
DEATH_VALUE = "CASE WHEN advanced > claimed THEN 0 WHEN current_trial IS NULL THEN crashes ELSE crashes + 1 END"
DEATH = f"crashes = {DEATH_VALUE}"
