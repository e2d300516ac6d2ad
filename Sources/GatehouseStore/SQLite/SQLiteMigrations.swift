/// One schema version: plain SQL statements applied in order, in one transaction.
///
/// Statements are kept separate (not one script) because the driver prepares exactly one
/// statement per query and would silently ignore anything after the first `;`.
struct SQLiteMigration: Sendable {
    let version: Int
    let statements: [String]
}

/// The ordered schema history of the SQLite store. Append new versions at the end; never edit
/// a version that has shipped. Applied versions are recorded in `schema_migrations`.
enum SQLiteMigrations {
    /// Creates the bookkeeping table itself; run before reading the current version.
    static let bootstrap = """
        CREATE TABLE IF NOT EXISTS schema_migrations (
            version       INTEGER PRIMARY KEY NOT NULL,
            applied_at_ms INTEGER NOT NULL
        ) STRICT
        """

    static let all: [SQLiteMigration] = [
        SQLiteMigration(version: 1, statements: [
            """
            CREATE TABLE organizations (
                id            TEXT PRIMARY KEY NOT NULL,
                name          TEXT NOT NULL,
                created_at_ms INTEGER NOT NULL,
                wrapped_dek   BLOB NOT NULL
            ) STRICT
            """,
            """
            CREATE TABLE provider_keys (
                id            TEXT PRIMARY KEY NOT NULL,
                org_id        TEXT NOT NULL REFERENCES organizations(id),
                name          TEXT NOT NULL,
                provider      TEXT NOT NULL,
                base_url      TEXT,
                ciphertext    BLOB NOT NULL,
                last4         TEXT NOT NULL,
                created_at_ms INTEGER NOT NULL
            ) STRICT
            """,
            "CREATE INDEX provider_keys_org ON provider_keys(org_id)",
            // provider_key_id deliberately has no foreign key: deleting a provider key revokes
            // the proxy keys bound to it but keeps their rows, including the id they were bound
            // to, so the UI and the audit trail can still show it.
            """
            CREATE TABLE gate_keys (
                id              TEXT PRIMARY KEY NOT NULL,
                org_id          TEXT NOT NULL REFERENCES organizations(id),
                kind            TEXT NOT NULL CHECK (kind IN ('api', 'read', 'proxy')),
                name            TEXT NOT NULL,
                description     TEXT,
                hash            BLOB NOT NULL,
                provider_key_id TEXT,
                expires_at_ms   INTEGER,
                allowed_models  TEXT,
                allowed_ips     TEXT,
                rate_limits     TEXT,
                budget          TEXT,
                created_at_ms   INTEGER NOT NULL,
                revoked_at_ms   INTEGER
            ) STRICT
            """,
            "CREATE INDEX gate_keys_org_kind ON gate_keys(org_id, kind)",
            "CREATE INDEX gate_keys_provider_key ON gate_keys(provider_key_id)",
            // org_id has no foreign key: entries such as a failed login may name no (or an
            // unknown) organization, and the trail must never lose an entry over it.
            """
            CREATE TABLE audit_log (
                seq        INTEGER PRIMARY KEY NOT NULL,
                time_ms    INTEGER NOT NULL,
                org_id     TEXT NOT NULL,
                actor_kind TEXT NOT NULL,
                actor_id   TEXT NOT NULL,
                client_ip  TEXT NOT NULL,
                action     TEXT NOT NULL,
                target     TEXT NOT NULL,
                outcome    TEXT NOT NULL,
                details    TEXT NOT NULL,
                prev_hash  BLOB NOT NULL,
                hash       BLOB NOT NULL
            ) STRICT
            """,
            "CREATE INDEX audit_log_org_seq ON audit_log(org_id, seq)",
            // Defence in depth: no code path updates or deletes audit rows, and the database
            // refuses it too. (Someone with write access to the file can still drop the
            // triggers; the hash chain is what detects that.)
            """
            CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
            BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END
            """,
            """
            CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
            BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END
            """,
            // AUTOINCREMENT so a sequence number is never reused, even if old rows are pruned.
            """
            CREATE TABLE change_log (
                seq       INTEGER PRIMARY KEY AUTOINCREMENT,
                org_id    TEXT NOT NULL,
                entity    TEXT NOT NULL,
                entity_id TEXT NOT NULL,
                at_ms     INTEGER NOT NULL
            ) STRICT
            """,
            "CREATE INDEX change_log_org ON change_log(org_id)",
        ]),
        // The request log. Append-mostly and high-volume, so it records no audit entry and no
        // change_log row per request. Personal data (user id, properties, bodies) is only ever
        // stored sealed; user_hash is a keyed HMAC. proxy_key_id and provider_key_id have no
        // foreign key: log rows outlive the keys they name.
        SQLiteMigration(version: 2, statements: [
            """
            CREATE TABLE request_logs (
                id                     TEXT PRIMARY KEY NOT NULL,
                org_id                 TEXT NOT NULL REFERENCES organizations(id),
                proxy_key_id           TEXT NOT NULL,
                provider_key_id        TEXT NOT NULL,
                provider               TEXT NOT NULL,
                model                  TEXT,
                method                 TEXT NOT NULL,
                path                   TEXT NOT NULL,
                status                 INTEGER NOT NULL,
                streamed               INTEGER NOT NULL CHECK (streamed IN (0, 1)),
                user_hash              TEXT,
                user_sealed            BLOB,
                properties_sealed      BLOB,
                client_ip              TEXT NOT NULL,
                started_at_ms          INTEGER NOT NULL,
                latency_ms             REAL NOT NULL,
                time_to_first_token_ms REAL,
                overhead_ms            REAL NOT NULL,
                prompt_tokens          INTEGER,
                completion_tokens      INTEGER,
                cached_tokens          INTEGER,
                cost_micros            INTEGER,
                error                  TEXT,
                request_body_sealed    BLOB,
                response_body_sealed   BLOB
            ) STRICT
            """,
            // Newest-first listing and keyset paging over (started_at_ms, id).
            "CREATE INDEX request_logs_org_time ON request_logs(org_id, started_at_ms DESC, id DESC)",
            "CREATE INDEX request_logs_org_proxy_key ON request_logs(org_id, proxy_key_id, started_at_ms DESC)",
            "CREATE INDEX request_logs_org_user ON request_logs(org_id, user_hash, started_at_ms DESC)",
            "CREATE INDEX request_logs_org_model ON request_logs(org_id, model, started_at_ms DESC)",
        ]),
        // Users, login sessions and organization settings. E-mail addresses are unique across the
        // installation (login is by e-mail alone) and stored lower-cased by the caller.
        // A session's id is the hex SHA-256 of its token; the token itself is never stored.
        // Deleting a user deletes their sessions (the store also deletes them explicitly).
        SQLiteMigration(version: 3, statements: [
            """
            CREATE TABLE users (
                id            TEXT PRIMARY KEY NOT NULL,
                org_id        TEXT NOT NULL REFERENCES organizations(id),
                email         TEXT NOT NULL UNIQUE,
                role          TEXT NOT NULL CHECK (role IN ('owner', 'admin', 'member', 'viewer')),
                password_hash TEXT NOT NULL,
                created_at_ms INTEGER NOT NULL
            ) STRICT
            """,
            "CREATE INDEX users_org ON users(org_id)",
            """
            CREATE TABLE sessions (
                id              TEXT PRIMARY KEY NOT NULL,
                user_id         TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
                org_id          TEXT NOT NULL,
                created_at_ms   INTEGER NOT NULL,
                last_seen_at_ms INTEGER NOT NULL,
                expires_at_ms   INTEGER NOT NULL
            ) STRICT
            """,
            "CREATE INDEX sessions_user ON sessions(user_id)",
            // settings: the organization's OrgSettings as JSON (Codable); no row means defaults.
            """
            CREATE TABLE org_settings (
                org_id   TEXT PRIMARY KEY NOT NULL REFERENCES organizations(id),
                settings TEXT NOT NULL
            ) STRICT
            """,
        ]),
        SQLiteMigration(version: 4, statements: [
            // Signed audit checkpoints: (sequence, hash) signed with a key derived from the master key.
            """
            CREATE TABLE audit_checkpoints (
                seq                INTEGER PRIMARY KEY NOT NULL,
                hash               BLOB NOT NULL,
                time_ms            INTEGER NOT NULL,
                master_key_version INTEGER NOT NULL,
                signature          BLOB NOT NULL
            ) STRICT
            """,
            "CREATE INDEX audit_log_action ON audit_log(org_id, action, seq)",
        ]),
        // The per-user index holds only entries that name a user: the filter (`user_hash = ?`)
        // and the grouping (`user_hash IS NOT NULL`) never read the others, and most requests
        // name none, so each logged request updates one index fewer (~12 % of an insert's CPU).
        SQLiteMigration(version: 5, statements: [
            "DROP INDEX request_logs_org_user",
            """
            CREATE INDEX request_logs_org_user ON request_logs(org_id, user_hash, started_at_ms DESC)
                WHERE user_hash IS NOT NULL
            """,
        ]),
    ]

    /// The newest schema version this binary understands.
    static var latestVersion: Int { all.last?.version ?? 0 }
}
