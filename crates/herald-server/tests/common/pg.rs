//! A PostgreSQL database per test, on the server `HERALD_TEST_POSTGRES_URL` names (`.ci/run`
//! starts a throwaway one), for the tests of the PostgreSQL backend and of cluster mode.

use postgres::NoTls;

/// Runs a call of the synchronous client on a thread of its own: it blocks on a runtime of
/// its own, which tokio forbids on the test's runtime threads.
pub fn off_runtime<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| s.spawn(f).join().unwrap())
}

/// A database created for one test, dropped with the guard.
pub struct Database {
    admin_url: String,
    name: String,
    /// The test database's URL.
    pub url: String,
}

impl Drop for Database {
    fn drop(&mut self) {
        off_runtime(|| {
            if let Ok(mut c) = postgres::Client::connect(&self.admin_url, NoTls) {
                let _ = c.batch_execute(&format!(
                    "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                    self.name
                ));
            }
        })
    }
}

/// A fresh database on the test server, or `None` (with a notice) without one. The URL's
/// database part is replaced, so the variable must be `postgres://…/DBNAME` form.
pub fn database(test: &str) -> Option<Database> {
    let Ok(admin_url) = std::env::var("HERALD_TEST_POSTGRES_URL") else {
        eprintln!("{test}: skipped, HERALD_TEST_POSTGRES_URL is not set");
        return None;
    };
    let name = format!("herald_{test}_{}", std::process::id());
    off_runtime(|| {
        let mut c = postgres::Client::connect(&admin_url, NoTls).expect("connect");
        c.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .unwrap();
        c.batch_execute(&format!("CREATE DATABASE {name}")).unwrap();
    });
    let (base, query) = match admin_url.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (admin_url.as_str(), String::new()),
    };
    let prefix = base.rsplit_once('/').map_or(base, |(p, _)| p);
    let url = format!("{prefix}/{name}{query}");
    Some(Database {
        admin_url,
        name,
        url,
    })
}
