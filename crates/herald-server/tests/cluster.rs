//! Cluster mode (`[cluster]`). Routing between nodes is not built yet (README "Cluster
//! mode"), so what a user sees today is a node that refuses to start with `[cluster]` set,
//! naming the table and saying why — rather than one that runs and silently stores
//! messages offline for users online on another node. Runs without PostgreSQL or Redis:
//! the refusal comes before either is contacted.

use herald_server::Config;

#[tokio::test]
async fn a_node_with_cluster_configured_refuses_to_start() {
    let cfg = Config::parse(
        "[store]\nbackend = \"postgres\"\nurl = \"postgres://herald@127.0.0.1:1/none\"\n\
         [cluster]\nredis = \"redis://127.0.0.1:1\"\nnode = \"n1\"\n",
        "t.toml",
    )
    .unwrap();
    let err = match herald_server::start(cfg).await {
        Ok(_) => panic!("a node with [cluster] started"),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains("[cluster]"), "{err}");
    assert!(err.contains("not implemented yet"), "{err}");
}

#[test]
fn cluster_on_sqlite_is_refused_when_the_file_is_read() {
    let err = Config::parse("[cluster]\nredis = \"redis://127.0.0.1:6379\"\n", "t.toml")
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("backend = \"postgres\""), "{err}");
}
