//! A database of its own per test on the PostgreSQL at 127.0.0.1:5432 (`make test` starts it:
//! scripts/ensure-postgres.sh), with a login role that has only what a preset's README grants
//! say; both are dropped when the test ends.

use std::time::Duration;

use tokio_postgres::NoTls;

use super::on_own_runtime;

/// The server the tests use (a superuser over TCP, trust authentication).
pub const HOST: &str = "127.0.0.1";
/// Its port.
pub const PORT: u16 = 5432;
/// The superuser the tests set up with.
pub const ADMIN: &str = "postgres";

/// A connection string for `db` as `user`, for the libraries' own clients.
pub fn url(db: &str, user: &str) -> String {
    format!("postgres://{user}@{HOST}:{PORT}/{db}")
}

/// A superuser session on `db`.
pub async fn admin(db: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(
        &format!("host={HOST} port={PORT} user={ADMIN} dbname={db} connect_timeout=5"),
        NoTls,
    )
    .await
    .unwrap_or_else(|e| {
        panic!("PostgreSQL on {HOST}:{PORT} as {ADMIN} (make test starts it: scripts/ensure-postgres.sh): {e}")
    });
    tokio::spawn(connection);
    client
}

/// A database and a SELECT-only login role of a test's own, dropped (with every session on
/// them) when this is dropped.
pub struct TestDb {
    /// The database's name.
    pub name: String,
    /// The reader role's name (it logs in without a password: trust on 127.0.0.1).
    pub reader: String,
}

impl TestDb {
    /// Creates `qma_<test>_<pid>_<nanos>` and its reader role (no privilege yet).
    pub async fn create(test: &str) -> TestDb {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let name = format!("qma_{test}_{}_{nanos}", std::process::id());
        let reader = format!("{name}_reader");
        let c = admin("postgres").await;
        // CREATE DATABASE runs outside a transaction: a statement of its own.
        for sql in [
            format!("CREATE DATABASE {name}"),
            format!(
                "CREATE ROLE {reader} LOGIN; REVOKE ALL ON DATABASE {name} FROM PUBLIC; GRANT CONNECT ON DATABASE {name} TO {reader}"
            ),
        ] {
            c.batch_execute(&sql)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
        }
        TestDb { name, reader }
    }

    /// A superuser session on this database.
    pub async fn admin(&self) -> tokio_postgres::Client {
        admin(&self.name).await
    }

    /// Runs `sql` (several statements) as the superuser.
    pub async fn exec(&self, sql: &str) {
        self.admin()
            .await
            .batch_execute(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// Applies the SQL file `tests/fixtures/postgres/<file>` as the superuser, with `psql`.
    pub async fn apply_fixture(&self, file: &str) {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/postgres")
            .join(file);
        let out = tokio::time::timeout(
            Duration::from_secs(30),
            tokio::process::Command::new("psql")
                .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", HOST, "-U", ADMIN])
                .arg("-p")
                .arg(PORT.to_string())
                .arg("-d")
                .arg(&self.name)
                .arg("-f")
                .arg(&path)
                .output(),
        )
        .await
        .expect("psql within 30 s")
        .expect("psql runs (make test installs postgresql-client)");
        assert!(
            out.status.success(),
            "psql -f {}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A single number from `sql` as the superuser.
    pub async fn scalar(&self, sql: &str) -> i64 {
        let row = self
            .admin()
            .await
            .query_one(sql, &[])
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        row.get::<_, i64>(0)
    }

    /// The source block for this database as the reader role.
    pub fn source_yaml(&self) -> String {
        format!(
            "postgres: {{host: {HOST}, port: {PORT}, dbname: {}, username: {}, sslmode: disable}}",
            self.name, self.reader
        )
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let (name, reader) = (self.name.clone(), self.reader.clone());
        on_own_runtime(async move {
            let c = admin("postgres").await;
            for sql in [
                format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
                format!("DROP ROLE IF EXISTS {reader}"),
            ] {
                let _ = c.batch_execute(&sql).await;
            }
        });
    }
}
